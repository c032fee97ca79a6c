//! `accel operations list|show|wait ID`: long-running work started with
//! `--no-wait` (today: `accel convert`), run by a detached `accel` process
//! that records its progress and outcome in the registry and its output in
//! `$ACCEL_HOME/operations/<id>.log`.

use super::convert::{convert_and_register, ConvertArgs};
use crate::context::GlobalArgs;
use crate::output::print_json;
use accel_convert::Progress;
use accel_registry::{OperationRecord, OperationStatus, Registry};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Operation subcommands.
#[derive(Debug, Subcommand)]
pub enum OperationsCommand {
    /// List operations, newest first.
    List(ListArgs),
    /// Show one operation.
    Show(ShowArgs),
    /// Wait for an operation to finish; exit status 1 if it failed.
    Wait(WaitArgs),
    /// Run a recorded operation in this process (what `--no-wait` starts).
    #[command(hide = true)]
    Run(RunArgs),
}

/// `accel operations list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `accel operations show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The operation id.
    pub id: String,
    /// Also print the operation's output (its log).
    #[arg(long)]
    pub show_output: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `accel operations wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The operation id.
    pub id: String,
    /// Stream the operation's output while waiting.
    #[arg(long)]
    pub show_output: bool,
    /// Give up after this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// JSON output (the final record).
    #[arg(long)]
    pub json: bool,
}

/// `accel operations run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The operation id.
    pub id: String,
}

/// Dispatches an operations subcommand.
pub fn run(global: &GlobalArgs, command: OperationsCommand) -> anyhow::Result<()> {
    match command {
        OperationsCommand::List(a) => list(global, a),
        OperationsCommand::Show(a) => show(global, a),
        OperationsCommand::Wait(a) => wait(global, a),
        OperationsCommand::Run(a) => run_recorded(global, a),
    }
}

fn log_path(global: &GlobalArgs, id: &str) -> anyhow::Result<PathBuf> {
    Ok(global.home()?.join("operations").join(format!("{id}.log")))
}

/// Records a conversion, starts a detached `accel operations run ID` for it
/// and prints the id.
pub fn start_convert(global: &GlobalArgs, a: &ConvertArgs) -> anyhow::Result<()> {
    let registry = global.registry()?;
    // Fail fast on what can be checked here.
    registry.get_model(&a.model.parse()?)?;
    let args = serde_json::to_value(a)?;
    let op = registry.create_operation("convert", &args, std::process::id())?;
    let log = log_path(global, &op.id)?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let exe = std::env::current_exe().context("locating the accel executable")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("operations")
        .arg("run")
        .arg(&op.id)
        .env("ACCEL_HOME", global.home()?)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C in this terminal does not stop it.
        .process_group(0);
    if let Some(dylib) = &global.ort_dylib {
        command.env("ORT_DYLIB_PATH", dylib);
    }
    let child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = registry.finish_operation(&op.id, Err(format!("could not start: {e}")));
            bail!("could not start the conversion: {e}");
        }
    };
    registry.set_operation_pid(&op.id, child.id())?;
    if a.json {
        print_json(&serde_json::json!({ "operation": op.id }))
    } else {
        println!("{}", op.id);
        Ok(())
    }
}

/// Progress written to the operation's record (at most every 200 ms).
struct Recorded<'a> {
    registry: &'a Registry,
    id: &'a str,
    stage: Mutex<(String, Instant)>,
}

impl Progress for Recorded<'_> {
    fn stage(&self, name: &str) {
        eprintln!("{name}");
        let mut s = self.stage.lock().unwrap_or_else(|p| p.into_inner());
        *s = (name.to_string(), Instant::now());
        let _ = self.registry.set_operation_progress(self.id, name);
    }
    fn step(&self, done: usize, total: usize) {
        let mut s = self.stage.lock().unwrap_or_else(|p| p.into_inner());
        if s.1.elapsed() >= Duration::from_millis(200) || done == total {
            s.1 = Instant::now();
            let _ = self
                .registry
                .set_operation_progress(self.id, &format!("{} {done}/{total}", s.0));
        }
    }
}

fn run_recorded(global: &GlobalArgs, a: RunArgs) -> anyhow::Result<()> {
    let registry = global.registry()?;
    let op = registry.operation(&a.id)?;
    registry.set_operation_pid(&op.id, std::process::id())?;
    let outcome = (|| {
        if op.kind != "convert" {
            bail!("unknown operation kind {:?}", op.kind);
        }
        let args: ConvertArgs =
            serde_json::from_value(op.args.clone()).context("reading the recorded arguments")?;
        let progress = Recorded {
            registry: &registry,
            id: &op.id,
            stage: Mutex::new((String::new(), Instant::now())),
        };
        let outcome = convert_and_register(global, &args, &progress)?;
        eprint!("{}", outcome.report.render());
        eprintln!("registered {}", outcome.model);
        Ok(serde_json::to_value(&outcome)?)
    })();
    match outcome {
        Ok(result) => {
            registry.finish_operation(&op.id, Ok(result))?;
            Ok(())
        }
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            registry.finish_operation(&op.id, Err(msg.join(": ")))?;
            Err(e)
        }
    }
}

fn summary(op: &OperationRecord) -> String {
    match op.status {
        OperationStatus::Running => op.progress.clone().unwrap_or_default(),
        OperationStatus::Succeeded => op
            .result
            .as_ref()
            .and_then(|r| r.get("model"))
            .and_then(|m| m.as_str())
            .map(|m| format!("registered {m}"))
            .unwrap_or_default(),
        OperationStatus::Failed => op.error.clone().unwrap_or_default(),
    }
}

fn list(global: &GlobalArgs, a: ListArgs) -> anyhow::Result<()> {
    let ops = global.registry()?.operations()?;
    if a.json {
        return print_json(&ops);
    }
    println!(
        "{:<22} {:<8} {:<10} {:<20} DETAIL",
        "ID", "KIND", "STATUS", "STARTED"
    );
    for op in &ops {
        println!(
            "{:<22} {:<8} {:<10} {:<20} {}",
            op.id,
            op.kind,
            op.status.as_str(),
            op.started,
            summary(op)
        );
    }
    Ok(())
}

fn print_op(op: &OperationRecord) {
    println!("operation: {}", op.id);
    println!("kind:      {}", op.kind);
    println!("status:    {}", op.status.as_str());
    println!("started:   {}", op.started);
    if let Some(f) = &op.finished {
        println!("finished:  {f}");
    }
    let detail = summary(op);
    if !detail.is_empty() {
        println!("detail:    {detail}");
    }
}

fn show(global: &GlobalArgs, a: ShowArgs) -> anyhow::Result<()> {
    let op = global.registry()?.operation(&a.id)?;
    if a.json {
        print_json(&op)?;
    } else {
        print_op(&op);
    }
    if a.show_output {
        let log = log_path(global, &op.id)?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        eprint!("{text}");
    }
    Ok(())
}

fn wait(global: &GlobalArgs, a: WaitArgs) -> anyhow::Result<()> {
    let registry = global.registry()?;
    let log = log_path(global, &a.id)?;
    let start = Instant::now();
    let mut shown = 0usize;
    loop {
        let op = registry.operation(&a.id)?;
        if a.show_output {
            if let Ok(text) = std::fs::read(&log) {
                if text.len() > shown {
                    eprint!("{}", String::from_utf8_lossy(&text[shown..]));
                    shown = text.len();
                }
            }
        }
        if op.status != OperationStatus::Running {
            if a.json {
                print_json(&op)?;
            } else {
                print_op(&op);
            }
            if op.status == OperationStatus::Failed {
                bail!(
                    "operation {} failed: {}",
                    op.id,
                    op.error.as_deref().unwrap_or("no reason recorded")
                );
            }
            return Ok(());
        }
        if a.timeout > 0 && start.elapsed() >= Duration::from_secs(a.timeout) {
            bail!("operation {} still running after {} s", op.id, a.timeout);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

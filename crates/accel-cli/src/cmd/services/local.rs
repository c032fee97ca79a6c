//! Local ("edge") deployments: an image's model served by `accel serve` on
//! this machine, kept running by a detached supervisor.
//!
//! ```text
//! accel services deploy NAME --image I   record (starting) → bundle → ports →
//!                                        [key] → spawn `accel services supervise NAME`
//!   accel services supervise NAME        (own process group, output to supervisor.log)
//!     └─ accel serve --bundle DIR ...    restarted with backoff when it dies;
//!                                        events → record: starting, running,
//!                                        restarting, stopping, stopped
//! accel services delete NAME             SIGTERM the supervisor (it stops the
//!                                        server), check the ports, remove the
//!                                        record and the directory
//! ```
//!
//! The record's `pid` is the supervisor's; its `config` holds the model, the
//! bind address, both ports (fixed for the deployment's life), whether keys
//! are required, the engine, and what the supervisor last saw: the server's
//! pid, the restart count and how the last server ended. A record whose
//! supervisor is gone reads as `failed` (or `stopped`, if it stopped).

use super::{DeployArgs, ListArgs, LogsArgs, WaitArgs};
use crate::bundle::write_bundle;
use crate::context::GlobalArgs;
use crate::output::print_json;
use accel_core::name::{validate_name, NameRef};
use accel_deploy::local::process::{self, Signal};
use accel_deploy::local::supervisor::utc_now;
use accel_deploy::local::{
    DeploymentDir, Event, Observer, ServerSpec, StopHandle, Supervisor, SupervisorOptions,
};
use accel_registry::{
    DeploymentRecord, DeploymentUpdate, KeySlot, NewDeployment, Registry, RegistryError,
};
use accel_runtime::engine::EngineChoice;
use accel_server::auth::ApiKey;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `delete` waits for a supervisor to stop its server and exit
/// (the supervisor gives the server 15 s to drain) before killing both.
const SUPERVISOR_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `delete` waits for a port to be released.
const PORT_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// The serve variables that would change what the server does behind the
/// supervisor's flags; removed from the server's environment.
const SCRUBBED_ENV: &[&str] = &[
    "ACCEL_MODELS",
    "ACCEL_BUNDLES",
    "ACCEL_SERVICES",
    "ACCEL_SERVE_CONFIG",
    "ACCEL_API_KEYS",
    "ACCEL_AUTH",
    "ACCEL_TLS_CERT",
    "ACCEL_TLS_KEY",
    "ACCEL_HOST",
    "ACCEL_GRPC_PORT",
    "ACCEL_HTTP_PORT",
    "ACCEL_ENGINE",
];

/// The `config` of a local deployment record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalConfig {
    /// The model served, `name:version` (the image's model).
    pub model: String,
    /// The address the server binds.
    pub host: String,
    /// Its gRPC port.
    pub grpc_port: u16,
    /// Its HTTP port.
    pub http_port: u16,
    /// Whether requests need a key (stored hashed in the registry).
    pub auth: bool,
    /// The engine the server uses.
    pub engine: String,
    /// The running server's pid, while one runs.
    #[serde(default)]
    pub server_pid: Option<u32>,
    /// How many times the server was restarted.
    #[serde(default)]
    pub restarts: u32,
    /// How the last server ended (or why it could not start).
    #[serde(default)]
    pub last_exit: Option<String>,
}

impl LocalConfig {
    fn of(record: &DeploymentRecord) -> anyhow::Result<LocalConfig> {
        serde_json::from_value(record.config.clone()).with_context(|| {
            format!(
                "deployment {:?} has an unreadable local config",
                record.name
            )
        })
    }

    /// The host clients connect to: the bound address, or loopback for a
    /// wildcard bind.
    fn client_host(&self) -> &str {
        match self.host.as_str() {
            "0.0.0.0" | "::" | "[::]" => "127.0.0.1",
            h => h,
        }
    }

    fn scoring_uri(&self) -> String {
        format!("grpc://{}:{}", self.client_host(), self.grpc_port)
    }

    fn http_uri(&self) -> String {
        format!("http://{}:{}", self.client_host(), self.http_port)
    }
}

/// Whether `pid` is the supervisor of deployment `name` (alive, and its
/// command line says so where `/proc` tells it: a reused pid is not).
fn supervisor_alive(pid: u32, name: &str) -> bool {
    process::alive(pid)
        && process::cmdline(pid).is_none_or(|argv| {
            argv.iter().any(|a| a == "supervise") && argv.iter().any(|a| a == name)
        })
}

/// Whether `pid` is the server of deployment `name`.
fn server_alive(pid: u32, name: &str) -> bool {
    process::alive(pid)
        && process::cmdline(pid)
            .is_none_or(|argv| argv.iter().any(|a| a == "serve") && argv.iter().any(|a| a == name))
}

/// The state to show: the recorded one while the supervisor lives; once it
/// is gone, `stopped` if it stopped and `failed` otherwise. A record not yet
/// given a supervisor (a deploy in progress) keeps `starting`.
fn effective_state(record: &DeploymentRecord) -> String {
    match record.pid {
        Some(pid) if supervisor_alive(pid, &record.name) => record.state.clone(),
        None if record.state == "starting" => record.state.clone(),
        _ if record.state == "stopped" => "stopped".into(),
        _ => "failed".into(),
    }
}

/// `show --json` (and each `list --json` element): the record, its state as
/// read, and what the supervisor last reported.
fn view(home: &Path, record: &DeploymentRecord) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or(Value::Null);
    let state = effective_state(record);
    let alive = record
        .pid
        .is_some_and(|p| supervisor_alive(p, &record.name));
    if let Value::Object(m) = &mut v {
        m.insert("recorded_state".into(), json!(record.state));
        m.insert("state".into(), json!(state));
        m.insert("supervisor_alive".into(), json!(alive));
        if let Ok(cfg) = LocalConfig::of(record) {
            let server = cfg
                .server_pid
                .filter(|p| alive && server_alive(*p, &record.name));
            m.insert("server_pid".into(), json!(server));
            m.insert("restarts".into(), json!(cfg.restarts));
            m.insert("last_exit".into(), json!(cfg.last_exit));
            m.insert("model".into(), json!(cfg.model));
            m.insert("http_uri".into(), json!(cfg.http_uri()));
            if record.scoring_uri.is_none() {
                m.insert("planned_scoring_uri".into(), json!(cfg.scoring_uri()));
            }
        }
        let dir = DeploymentDir::new(home, &record.name);
        m.insert("dir".into(), json!(dir.root()));
        m.insert("server_log".into(), json!(dir.server_log()));
    }
    v
}

/// The model `name:version` a deployment's image packages.
fn model_of(registry: &Registry, record: &DeploymentRecord) -> String {
    record
        .image
        .parse::<NameRef>()
        .ok()
        .and_then(|r| registry.get_image(&r).ok())
        .map_or_else(|| "?".into(), |i| i.model)
}

/// Ports of the other local deployments (fixed for their lives, even while
/// their servers restart).
fn ports_in_use(registry: &Registry, except: &str) -> anyhow::Result<Vec<(u16, String)>> {
    let mut out = Vec::new();
    for d in registry.list_deployments()? {
        if d.target == "local" && d.name != except {
            if let Ok(cfg) = LocalConfig::of(&d) {
                out.push((cfg.grpc_port, d.name.clone()));
                out.push((cfg.http_port, d.name.clone()));
            }
        }
    }
    Ok(out)
}

/// The gRPC and HTTP ports: the given ones (checked), else free ones.
fn choose_ports(registry: &Registry, a: &DeployArgs) -> anyhow::Result<(u16, u16)> {
    let taken = ports_in_use(registry, &a.name)?;
    let check = |port: u16, what: &str| -> anyhow::Result<()> {
        if let Some((_, by)) = taken.iter().find(|(p, _)| *p == port) {
            bail!("{what} port {port} is used by deployment {by:?}");
        }
        if !process::port_free(&a.host, port) {
            bail!("{what} port {port} on {} is in use", a.host);
        }
        Ok(())
    };
    let given = |p: Option<u16>| p.filter(|p| *p != 0);
    for _ in 0..20 {
        let free = process::free_ports(2).context("cannot find free ports")?;
        let grpc = given(a.port).unwrap_or(free[0]);
        let http = given(a.http_port).unwrap_or(free[1]);
        if grpc == http {
            if given(a.port).is_some() && given(a.http_port).is_some() {
                bail!("--port and --http-port must differ");
            }
            continue;
        }
        let clash = |p: u16| taken.iter().any(|(t, _)| *t == p);
        if (given(a.port).is_none() && clash(grpc)) || (given(a.http_port).is_none() && clash(http))
        {
            continue;
        }
        check(grpc, "gRPC")?;
        check(http, "HTTP")?;
        return Ok((grpc, http));
    }
    bail!("cannot find free ports on {}", a.host)
}

/// Removes what a failed deploy had made.
struct Undo<'a> {
    registry: &'a Registry,
    name: &'a str,
    dir: &'a DeploymentDir,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.registry.delete_deployment(self.name);
            let _ = std::fs::remove_dir_all(self.dir.root());
        }
    }
}

/// `accel services deploy NAME --target local`.
pub fn deploy(global: &GlobalArgs, a: &DeployArgs) -> anyhow::Result<()> {
    validate_name(&a.name)?;
    let Some(image) = &a.image else {
        bail!("--target local needs --image NAME[:VERSION]");
    };
    let image_ref: NameRef = image.parse()?;
    a.engine.parse::<EngineChoice>()?;
    let registry = global.registry()?;
    let home = global.home()?;
    let image = registry.get_image(&image_ref)?;
    if image.state != "succeeded" {
        bail!(
            "image \"{}\" is {}: only a succeeded image can be deployed",
            image.reference(),
            image.state
        );
    }
    // The image's model layer holds this same bundle (the image builder
    // writes it with `write_bundle` from the same record): serving it from
    // the registry's record gives the bytes the image would run.
    let model = registry.get_model(&image.model.parse()?)?;

    let mut replaced = Vec::new();
    if let Some(device) = &a.device {
        if let Some(holder) = registry.deployment_on_device(device)? {
            if holder.name != a.name {
                let held = model_of(&registry, &holder);
                if !a.replace {
                    bail!(
                        "device {device} is used by deployment {} serving model {held}: pass --replace to take it over, or another --device",
                        holder.name
                    );
                }
                let went = remove(&registry, &home, &holder)?;
                replaced.push(format!(
                    "replaced deployment {} (model {held}) on device {device}: {}",
                    holder.name,
                    went.join("; ")
                ));
            }
        }
    }
    match registry.get_deployment(&a.name) {
        Ok(existing) => {
            if !a.replace {
                bail!(
                    "deployment {} already exists (image {}, state {}): delete it first, or pass --replace",
                    a.name,
                    existing.image,
                    effective_state(&existing)
                );
            }
            if existing.target != "local" {
                bail!(
                    "deployment {} runs on {}: delete it with `accel services delete {}` first",
                    a.name,
                    existing.target,
                    a.name
                );
            }
            let went = remove(&registry, &home, &existing)?;
            replaced.push(format!(
                "replaced deployment {} (image {}): {}",
                a.name,
                existing.image,
                went.join("; ")
            ));
        }
        Err(RegistryError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }

    let (grpc_port, http_port) = choose_ports(&registry, a)?;
    let config = LocalConfig {
        model: model.reference(),
        host: a.host.clone(),
        grpc_port,
        http_port,
        auth: a.auth,
        engine: a.engine.clone(),
        server_pid: None,
        restarts: 0,
        last_exit: None,
    };
    registry.create_deployment(&NewDeployment {
        name: a.name.clone(),
        target: "local".into(),
        image: NameRef {
            name: image.name.clone(),
            version: Some(image.version),
        },
        device: a.device.clone(),
        port: Some(grpc_port),
        config: serde_json::to_value(&config)?,
    })?;
    let dir = DeploymentDir::new(&home, &a.name);
    let mut undo = Undo {
        registry: &registry,
        name: &a.name,
        dir: &dir,
        armed: true,
    };
    if dir.root().exists() {
        std::fs::remove_dir_all(dir.root())
            .with_context(|| format!("cannot remove the stale {}", dir.root().display()))?;
    }
    std::fs::create_dir_all(dir.root())
        .with_context(|| format!("cannot create {}", dir.root().display()))?;
    write_bundle(&registry, &model, &dir.bundle())?;
    let key = if a.auth {
        let key = ApiKey::generate()?;
        registry.set_service_key(&a.name, KeySlot::Primary, &key.hash().to_hex())?;
        Some(key)
    } else {
        None
    };
    let pid = spawn_supervisor(global, &home, &a.name, &dir)?;
    registry.update_deployment(
        &a.name,
        &DeploymentUpdate {
            pid: Some(Some(pid)),
            ..Default::default()
        },
    )?;
    undo.armed = false;

    for line in &replaced {
        eprintln!("{line}");
    }
    if a.json {
        let mut v = json!({
            "service": a.name,
            "scoring_uri": config.scoring_uri(),
            "http_uri": config.http_uri(),
            "state": "starting",
        });
        if let Some(k) = &key {
            v["key"] = json!(k.expose());
        }
        print_json(&v)
    } else {
        println!("{}", a.name);
        println!("scoring_uri: {}", config.scoring_uri());
        println!("http_uri: {}", config.http_uri());
        if let Some(k) = &key {
            println!("key: {}", k.expose());
        }
        Ok(())
    }
}

/// Starts `accel services supervise NAME`, detached: its own process
/// group, stdin null, output appended to `supervisor.log`.
fn spawn_supervisor(
    global: &GlobalArgs,
    home: &Path,
    name: &str,
    dir: &DeploymentDir,
) -> anyhow::Result<u32> {
    let exe = std::env::current_exe().context("cannot find the accel executable")?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.supervisor_log())
        .with_context(|| format!("cannot open {}", dir.supervisor_log().display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(["services", "supervise", name])
        .env("ACCEL_HOME", home)
        .env("ACCEL_PYTHON", &global.python)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .process_group(0);
    if let Some(dylib) = &global.ort_dylib {
        cmd.env("ORT_DYLIB_PATH", dylib);
    }
    let child = cmd.spawn().context("cannot start the supervisor")?;
    Ok(child.id())
}

/// Stops a local deployment's processes: SIGTERM to its supervisor (which
/// stops the server), SIGKILL to its process group if it does not exit in
/// time; then any server left without a supervisor. Returns what went.
fn stop(record: &DeploymentRecord) -> Vec<String> {
    let mut went = Vec::new();
    let name = &record.name;
    if let Some(pid) = record.pid.filter(|p| supervisor_alive(*p, name)) {
        let _ = process::signal(pid, Signal::Term);
        if process::wait_gone(pid, SUPERVISOR_STOP_TIMEOUT) {
            went.push(format!("stopped supervisor pid {pid} and its server"));
        } else {
            // The supervisor leads its own process group: its server too.
            let _ = process::signal_group(pid, Signal::Kill);
            process::wait_gone(pid, Duration::from_secs(5));
            went.push(format!(
                "killed supervisor pid {pid} and its server (still running {} s after SIGTERM)",
                SUPERVISOR_STOP_TIMEOUT.as_secs()
            ));
        }
    }
    let server = LocalConfig::of(record).ok().and_then(|c| c.server_pid);
    if let Some(pid) = server.filter(|p| server_alive(*p, name)) {
        let _ = process::signal(pid, Signal::Term);
        if !process::wait_gone(pid, Duration::from_secs(15)) {
            let _ = process::signal(pid, Signal::Kill);
            process::wait_gone(pid, Duration::from_secs(5));
        }
        went.push(format!("stopped unsupervised server pid {pid}"));
    }
    went
}

/// Stops a local deployment, checks its ports are released, and removes
/// its directory, then its record. The record goes last: a delete killed
/// (or failing) midway leaves the record, so that `accel services delete`
/// can be run again, never a directory that no record accounts for.
/// Returns what went.
fn remove(
    registry: &Registry,
    home: &Path,
    record: &DeploymentRecord,
) -> anyhow::Result<Vec<String>> {
    let mut went = stop(record);
    went.extend(ports_released(record));
    went.extend(remove_dir(home, &record.name)?);
    registry.delete_deployment(&record.name)?;
    went.push(format!("removed deployment record {}", record.name));
    Ok(went)
}

/// Stops a local deployment and removes its directory, leaving its record
/// (for a forced delete of its image or model, which removes it). Returns
/// what went.
pub fn stop_and_clean(home: &Path, record: &DeploymentRecord) -> anyhow::Result<Vec<String>> {
    let mut went = stop(record);
    went.extend(ports_released(record));
    went.extend(remove_dir(home, &record.name)?);
    Ok(went)
}

/// Whether the ports of a stopped deployment were released.
fn ports_released(record: &DeploymentRecord) -> Vec<String> {
    let mut went = Vec::new();
    if let Ok(cfg) = LocalConfig::of(record) {
        for (what, port) in [("gRPC", cfg.grpc_port), ("HTTP", cfg.http_port)] {
            if process::wait_port_free(&cfg.host, port, PORT_RELEASE_TIMEOUT) {
                went.push(format!("{what} port {port} is free"));
            } else {
                went.push(format!("warning: {what} port {port} is still in use"));
            }
        }
    }
    went
}

/// Removes a deployment's directory, if there is one.
fn remove_dir(home: &Path, name: &str) -> anyhow::Result<Option<String>> {
    let dir = DeploymentDir::new(home, name);
    if !dir.root().exists() {
        return Ok(None);
    }
    std::fs::remove_dir_all(dir.root())
        .with_context(|| format!("cannot remove {}", dir.root().display()))?;
    Ok(Some(format!("removed {}", dir.root().display())))
}

/// `accel services delete NAME`.
pub fn delete(global: &GlobalArgs, record: &DeploymentRecord, json: bool) -> anyhow::Result<()> {
    let registry = global.registry()?;
    let went = remove(&registry, &global.home()?, record)?;
    if json {
        print_json(&json!({"service": record.name, "removed": went}))
    } else {
        for line in &went {
            println!("{line}");
        }
        Ok(())
    }
}

/// `accel services list`.
pub fn list(global: &GlobalArgs, a: &ListArgs) -> anyhow::Result<()> {
    let registry = global.registry()?;
    let home = global.home()?;
    let records = registry.list_deployments()?;
    if a.json {
        let rows: Vec<Value> = records
            .iter()
            .map(|r| {
                if r.target == "local" {
                    view(&home, r)
                } else {
                    serde_json::to_value(r).unwrap_or(Value::Null)
                }
            })
            .collect();
        return print_json(&rows);
    }
    if records.is_empty() {
        return Ok(());
    }
    println!(
        "{:<20} {:<10} {:<20} {:<11} {:<10} SCORING URI",
        "NAME", "TARGET", "IMAGE", "STATE", "DEVICE"
    );
    for r in &records {
        let state = if r.target == "local" {
            effective_state(r)
        } else {
            r.state.clone()
        };
        println!(
            "{:<20} {:<10} {:<20} {:<11} {:<10} {}",
            r.name,
            r.target,
            r.image,
            state,
            r.device.as_deref().unwrap_or("-"),
            r.scoring_uri.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// `accel services show NAME`.
pub fn show(global: &GlobalArgs, record: &DeploymentRecord, json: bool) -> anyhow::Result<()> {
    let v = view(&global.home()?, record);
    if json {
        return print_json(&v);
    }
    let field = |k: &str| match &v[k] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for k in [
        "name",
        "target",
        "image",
        "model",
        "state",
        "recorded_state",
        "device",
        "scoring_uri",
        "http_uri",
        "pid",
        "supervisor_alive",
        "server_pid",
        "restarts",
        "last_exit",
        "dir",
        "created",
        "updated",
    ] {
        let label = if k == "pid" { "supervisor_pid" } else { k };
        println!("{label:<17} {}", field(k));
    }
    Ok(())
}

/// The last `n` lines of a file (empty when it cannot be read).
fn tail_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

/// `accel services wait NAME`.
pub fn wait(global: &GlobalArgs, record: &DeploymentRecord, a: &WaitArgs) -> anyhow::Result<()> {
    let registry = global.registry()?;
    let home = global.home()?;
    let timeout = Duration::try_from_secs_f64(a.timeout.max(0.0)).unwrap_or(Duration::MAX);
    let started = Instant::now();
    let mut record = record.clone();
    let state = loop {
        let state = effective_state(&record);
        if state == "running" {
            if a.json {
                return print_json(&view(&home, &record));
            }
            println!(
                "{} is running at {}",
                record.name,
                record.scoring_uri.as_deref().unwrap_or("?")
            );
            return Ok(());
        }
        if state == "failed" || state == "stopped" || started.elapsed() >= timeout {
            break state;
        }
        std::thread::sleep(Duration::from_millis(200));
        record = registry.get_deployment(&record.name)?;
    };
    let log = DeploymentDir::new(&home, &record.name).server_log();
    let tail = tail_lines(&log, 20);
    if !tail.is_empty() {
        eprintln!("--- the end of {} ---\n{tail}\n---", log.display());
    }
    let last = LocalConfig::of(&record)
        .ok()
        .and_then(|c| c.last_exit)
        .map(|e| format!(" (last server: {e})"))
        .unwrap_or_default();
    if state == "failed" || state == "stopped" {
        bail!("deployment {} is {state}{last}", record.name);
    }
    bail!(
        "deployment {} is not running after {:.0} s: state {state}{last}",
        record.name,
        timeout.as_secs_f64()
    )
}

/// `accel services logs NAME`.
pub fn logs(global: &GlobalArgs, record: &DeploymentRecord, a: &LogsArgs) -> anyhow::Result<()> {
    let dir = DeploymentDir::new(&global.home()?, &record.name);
    let path = if a.supervisor {
        dir.supervisor_log()
    } else {
        dir.server_log()
    };
    let mut out = std::io::stdout().lock();
    let mut pos: u64 = 0;
    match a.tail {
        Some(n) => {
            let t = tail_lines(&path, n);
            if !t.is_empty() {
                writeln!(out, "{t}")?;
            }
            pos = std::fs::metadata(&path).map_or(0, |m| m.len());
        }
        None => pos += copy_from(&path, 0, &mut out)?,
    }
    out.flush()?;
    if !a.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if !dir.root().exists() {
            return Ok(());
        }
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        if len < pos {
            // Rotated (or truncated): start over on the new file.
            pos = 0;
        }
        if len > pos {
            pos += copy_from(&path, pos, &mut out)?;
            out.flush()?;
        }
    }
}

/// Copies `path` from byte `pos` to `out`; returns the bytes copied (0 when
/// the file does not exist).
fn copy_from(path: &Path, pos: u64, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    f.seek(SeekFrom::Start(pos))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    out.write_all(&buf)?;
    Ok(buf.len() as u64)
}

/// Turns supervisor events into record updates (and lines in
/// `supervisor.log`). A record that is gone (deleted behind the supervisor's
/// back) stops the supervisor.
struct RecordObserver {
    registry: Registry,
    name: String,
    config: LocalConfig,
    stop: StopHandle,
}

impl RecordObserver {
    fn update(&mut self, state: Option<&str>, uri: Option<Option<String>>) {
        let update = DeploymentUpdate {
            state: state.map(str::to_string),
            scoring_uri: uri,
            config: serde_json::to_value(&self.config).ok(),
            ..Default::default()
        };
        match self.registry.update_deployment(&self.name, &update) {
            Ok(_) => {}
            Err(RegistryError::NotFound(_)) => {
                eprintln!("the deployment record is gone: stopping");
                self.stop.stop();
            }
            Err(e) => eprintln!("cannot update the deployment record: {e}"),
        }
    }
}

impl Observer for RecordObserver {
    fn on_event(&mut self, event: &Event) {
        eprintln!("[{}] {event}", utc_now());
        match event {
            Event::Spawned { pid, restarts } => {
                self.config.server_pid = Some(*pid);
                self.config.restarts = *restarts;
                let state = if *restarts == 0 {
                    "starting"
                } else {
                    "restarting"
                };
                self.update(Some(state), None);
            }
            Event::SpawnFailed { error, .. } => {
                self.config.server_pid = None;
                self.config.last_exit = Some(error.clone());
                self.update(Some("restarting"), Some(None));
            }
            Event::Ready { .. } => {
                let uri = self.config.scoring_uri();
                self.update(Some("running"), Some(Some(uri)));
            }
            Event::Exited { status, ran, .. } => {
                self.config.server_pid = None;
                self.config.last_exit = Some(format!("{status} after {:.1} s", ran.as_secs_f64()));
                self.update(Some("restarting"), Some(None));
            }
            Event::Backoff { .. } => {}
            Event::Stopping { .. } => self.update(Some("stopping"), None),
            Event::Stopped { .. } => {
                self.config.server_pid = None;
                self.update(Some("stopped"), Some(None));
            }
        }
    }
}

/// `accel services supervise NAME` (hidden): runs the deployment's server
/// until SIGTERM/SIGINT, restarting it when it dies.
pub fn supervise(global: &GlobalArgs, name: &str) -> anyhow::Result<()> {
    let registry = global.registry()?;
    let home = global.home()?;
    let record = registry.get_deployment(name)?;
    if record.target != "local" {
        bail!("deployment {name:?} is not a local one");
    }
    let config = LocalConfig::of(&record)?;
    let dir = DeploymentDir::new(&home, name);
    registry.update_deployment(
        name,
        &DeploymentUpdate {
            pid: Some(Some(std::process::id())),
            ..Default::default()
        },
    )?;
    let exe = std::env::current_exe().context("cannot find the accel executable")?;
    let mut args: Vec<std::ffi::OsString> = vec!["serve".into(), "--bundle".into()];
    args.push(dir.bundle().into_os_string());
    for (flag, value) in [
        ("--service", name.to_string()),
        ("--host", config.host.clone()),
        ("--grpc-port", config.grpc_port.to_string()),
        ("--http-port", config.http_port.to_string()),
        ("--engine", config.engine.clone()),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    if config.auth {
        // The server checks keys against the hashes in the registry: no key
        // is ever on a command line or in an environment.
        args.push("--auth".into());
    }
    let spec = ServerSpec {
        program: exe,
        args,
        env: vec![("ACCEL_HOME".into(), home.clone().into_os_string())],
        env_remove: SCRUBBED_ENV.iter().map(Into::into).collect(),
        log: dir.server_log(),
        ready_prefix: Some("ready ".into()),
    };
    let supervisor = Supervisor::new(
        spec,
        SupervisorOptions {
            handle_signals: true,
            ..SupervisorOptions::default()
        },
    );
    let mut observer = RecordObserver {
        registry,
        name: name.to_string(),
        config,
        stop: supervisor.stop_handle(),
    };
    eprintln!(
        "[{}] supervising {name} (pid {})",
        utc_now(),
        std::process::id()
    );
    let summary = supervisor.run(&mut observer)?;
    eprintln!(
        "[{}] exiting after {} restarts{}",
        utc_now(),
        summary.restarts,
        if summary.killed {
            " (server killed)"
        } else {
            ""
        }
    );
    Ok(())
}

//! `accel engines` (list what is found) and `accel engines install onnxruntime`.

use crate::context::GlobalArgs;
use crate::output::print_json;
use accel_runtime::engine::onnxruntime::{self, discover, OrtBackend, PINNED_VERSION};
use accel_runtime::engine::Backend;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::io::Read;
use std::path::Path;
use std::process::Command;

/// `accel engines [install ...]`.
#[derive(Debug, Args)]
pub struct EnginesArgs {
    #[command(subcommand)]
    pub action: Option<EnginesAction>,
    /// JSON output (listing).
    #[arg(long)]
    pub json: bool,
}

/// Engine actions.
#[derive(Debug, Subcommand)]
pub enum EnginesAction {
    /// Provision an engine's shared library into $ACCEL_HOME/engines.
    Install(InstallArgs),
}

/// `accel engines install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The engine (only `onnxruntime` needs installing; tract is built in).
    pub engine: String,
    /// The version to install.
    #[arg(long, default_value = PINNED_VERSION)]
    pub version: String,
}

#[derive(Debug, serde::Serialize)]
struct EngineRow {
    engine: &'static str,
    available: bool,
    version: Option<String>,
    library: Option<String>,
    source: Option<&'static str>,
    execution_providers: Vec<String>,
    note: Option<String>,
}

/// Lists or installs engines.
pub fn run(global: &GlobalArgs, a: EnginesArgs) -> anyhow::Result<()> {
    if let Some(EnginesAction::Install(i)) = a.action {
        return install(global, &i);
    }
    let search = global.search_paths()?;
    let ort_row = match OrtBackend::init(&search) {
        Ok(b) => EngineRow {
            engine: "onnxruntime",
            available: true,
            version: Some(b.version()),
            library: Some(b.library().path.display().to_string()),
            source: Some(b.library().source),
            execution_providers: onnxruntime::available_providers(),
            note: None,
        },
        Err(e) => EngineRow {
            engine: "onnxruntime",
            available: false,
            version: None,
            library: None,
            source: None,
            execution_providers: vec![],
            note: Some(e.to_string()),
        },
    };
    let rows = vec![
        ort_row,
        EngineRow {
            engine: "tract",
            available: true,
            version: Some(accel_runtime::engine::tract::TractBackend::new().version()),
            library: None,
            source: Some("built-in"),
            execution_providers: vec!["cpu".into()],
            note: None,
        },
    ];
    if a.json {
        return print_json(&rows);
    }
    for r in &rows {
        if r.available {
            println!(
                "{:<12} {:<8} {} [{}]{}",
                r.engine,
                r.version.as_deref().unwrap_or("?"),
                r.source.unwrap_or(""),
                r.execution_providers.join(", "),
                r.library
                    .as_deref()
                    .map(|l| format!(" {l}"))
                    .unwrap_or_default()
            );
        } else {
            println!(
                "{:<12} not found: {}",
                r.engine,
                r.note.as_deref().unwrap_or("")
            );
        }
    }
    let others = discover(&search);
    if others.len() > 1 {
        println!(
            "(other ONNX Runtime libraries found, lower priority: {})",
            others[1..]
                .iter()
                .map(|f| f.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn install(global: &GlobalArgs, a: &InstallArgs) -> anyhow::Result<()> {
    match a.engine.as_str() {
        "onnxruntime" => {}
        "tract" => {
            println!("tract is built into accel; nothing to install");
            return Ok(());
        }
        other => bail!("unknown engine {other:?} (installable: onnxruntime)"),
    }
    if !a.version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        bail!("version {:?} is not of the form 1.31.1", a.version);
    }
    let dest = global.home()?.join("engines");
    std::fs::create_dir_all(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let tmp = tempfile::tempdir_in(&dest).context("cannot create a temporary directory")?;
    eprintln!(
        "downloading onnxruntime=={} with {} -m pip ...",
        a.version, global.python
    );
    let status = Command::new(&global.python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "-d",
        ])
        .arg(tmp.path())
        .arg(format!("onnxruntime=={}", a.version))
        .status();
    match status {
        Err(e) => bail!(
            "cannot run {} ({e}); install Python 3 with pip, or set ORT_DYLIB_PATH to an existing libonnxruntime",
            global.python
        ),
        Ok(s) if !s.success() => bail!(
            "`{} -m pip download onnxruntime=={}` failed ({s}); is pip installed and PyPI reachable?",
            global.python,
            a.version
        ),
        Ok(_) => {}
    }
    let wheel = std::fs::read_dir(tmp.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    let installed = extract_libraries(&wheel, &dest)?;
    for p in &installed {
        println!("installed {}", p.display());
    }
    Ok(())
}

/// Copies `onnxruntime/capi/lib*.so*` out of the wheel into `dest`, each
/// through a temporary file and a rename so a half-written library is never seen.
fn extract_libraries(wheel: &Path, dest: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let file = std::fs::File::open(wheel)?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a wheel", wheel.display()))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let name = entry.name().to_string();
        let Some(file_name) = name.strip_prefix("onnxruntime/capi/") else {
            continue;
        };
        let is_lib = file_name.starts_with("libonnxruntime")
            && file_name.contains(".so")
            && !file_name.contains('/');
        if !is_lib {
            continue;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dest)?;
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.as_file().sync_all()?;
        let target = dest.join(file_name);
        tmp.persist(&target)?;
        out.push(target);
    }
    if out.is_empty() {
        bail!(
            "the wheel {} holds no libonnxruntime shared library",
            wheel.display()
        );
    }
    Ok(out)
}

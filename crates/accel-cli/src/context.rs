//! Global options and what they resolve to: the Accel home, the registry,
//! and where to look for engines.

use accel_registry::Registry;
use accel_runtime::engine::onnxruntime::SearchPaths;
use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;

/// Options every subcommand accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where the registry, blobs and engines live (default: ~/.accel).
    #[arg(long, env = "ACCEL_HOME", global = true)]
    pub home: Option<PathBuf>,
    /// An explicit ONNX Runtime shared library.
    #[arg(long = "ort-dylib", env = "ORT_DYLIB_PATH", global = true)]
    pub ort_dylib: Option<PathBuf>,
    /// The Python interpreter whose onnxruntime package may provide the engine.
    #[arg(long, env = "ACCEL_PYTHON", default_value = "python3", global = true)]
    pub python: String,
    /// Log progress to stderr.
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

impl GlobalArgs {
    /// The Accel home directory.
    pub fn home(&self) -> anyhow::Result<PathBuf> {
        if let Some(h) = &self.home {
            return Ok(h.clone());
        }
        let home = std::env::var_os("HOME").context("neither ACCEL_HOME nor HOME is set")?;
        Ok(PathBuf::from(home).join(".accel"))
    }

    /// Opens (creating if needed) the registry under the home directory.
    pub fn registry(&self) -> anyhow::Result<Registry> {
        let home = self.home()?;
        Registry::open(&home)
            .with_context(|| format!("cannot open the registry in {}", home.display()))
    }

    /// Where to look for ONNX Runtime.
    pub fn search_paths(&self) -> anyhow::Result<SearchPaths> {
        Ok(SearchPaths {
            dylib_path: self.ort_dylib.clone(),
            engines_dir: Some(self.home()?.join("engines")),
            python: Some(self.python.clone()),
        })
    }
}

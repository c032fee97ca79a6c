//! The backend trait and the engines behind it.
//!
//! A [`Backend`] compiles model bytes into a [`Plan`]: an immutable,
//! `Send + Sync` object that runs inference synchronously. Async code lives
//! at the edges (the server), never here.

pub mod onnxruntime;
pub mod tract;

use crate::error::RuntimeError;
use accel_core::{DType, Tensor};
use std::fmt;
use std::str::FromStr;

/// Name, element type and shape of a model input or output. `None` in the
/// shape marks a dynamic dimension.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TensorInfo {
    /// The model's tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions; `None` where dynamic.
    pub shape: Vec<Option<usize>>,
}

/// How a plan is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Intra-op threads; `0` means every core.
    pub threads: usize,
    /// Whether idle intra-op threads spin before sleeping (`None`: the
    /// engine's default, spinning in ONNX Runtime). Spinning shaves the
    /// wake-up off each run; not spinning leaves the cores to image
    /// decoding when the engine is busy.
    pub spin: Option<bool>,
    /// Where an engine may keep the model it optimized, to load it again
    /// without optimizing (cold start); `None`: optimize at every load.
    pub cache: Option<OptimizedCache>,
    /// The bytes are a model this engine optimized already (an
    /// `accel-plan` made by `accel convert`): load it as it is, without
    /// optimizing and without the cache.
    pub prepared: bool,
}

/// A cache of engine-optimized models: `dir/<model sha256>-<engine
/// version>-<cpu features>.<ext>`, written once (temp file + rename), read
/// at later loads of the same model on the same engine and CPU. Derived data:
/// deleting it only costs the next load its optimization time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptimizedCache {
    /// The cache directory (created on first write).
    pub dir: std::path::PathBuf,
    /// The sha256 of the model bytes being loaded, as the registry knows it.
    pub model_sha256: String,
}

impl OptimizedCache {
    /// Whether `model_sha256` is 64 lower-case hex digits, so that the file
    /// names made from it stay in `dir`. An engine caches nothing for a
    /// cache that is not (a hash read from a hostile bundle, `../../x`,
    /// would otherwise be a path out of the cache directory).
    pub fn is_valid(&self) -> bool {
        self.model_sha256.len() == 64
            && self
                .model_sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// The cache file for this model on `engine` (its version string).
    /// Check [`is_valid`](Self::is_valid) first.
    pub fn path(&self, engine: &str, ext: &str) -> std::path::PathBuf {
        self.dir.join(format!(
            "{}-{engine}-{}.{ext}",
            self.model_sha256,
            cpu_tag()
        ))
    }
}

/// The CPU features an optimized (layout-transformed) model may rely on,
/// e.g. `x86_64_avx2_fma_avx512f_vnni`.
pub fn cpu_tag() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut tag = String::from("x86_64");
        for (on, name) in [
            (std::arch::is_x86_feature_detected!("avx2"), "avx2"),
            (std::arch::is_x86_feature_detected!("fma"), "fma"),
            (std::arch::is_x86_feature_detected!("avx512f"), "avx512f"),
            (std::arch::is_x86_feature_detected!("avx512vnni"), "vnni"),
        ] {
            if on {
                tag.push('_');
                tag.push_str(name);
            }
        }
        tag
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

impl LoadOptions {
    /// The thread count to use, resolving `0` to the number of cores.
    pub fn resolved_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// A compiled model, ready to run. Immutable and shareable across threads.
pub trait Plan: Send + Sync {
    /// The engine that built it.
    fn engine(&self) -> EngineKind;
    /// The model's inputs.
    fn inputs(&self) -> &[TensorInfo];
    /// The model's outputs.
    fn outputs(&self) -> &[TensorInfo];
    /// Runs the model on `inputs` (in the order of [`Plan::inputs`]) and
    /// returns every output in the order of [`Plan::outputs`].
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError>;
}

/// An engine: something that compiles model bytes into a [`Plan`].
pub trait Backend: Send + Sync {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;
    /// A human-readable version string.
    fn version(&self) -> String;
    /// Compiles an ONNX model.
    fn load(&self, model: &[u8], options: &LoadOptions) -> Result<Box<dyn Plan>, RuntimeError>;
}

/// The concrete engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// ONNX Runtime, loaded at run time (the fast path).
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
    /// tract, pure Rust, always available.
    Tract,
}

impl EngineKind {
    /// The stable name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::OnnxRuntime => "onnxruntime",
            EngineKind::Tract => "tract",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the user asked for: a specific engine, or the best available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// ONNX Runtime when its library is found, else tract.
    #[default]
    Auto,
    /// This engine, or an error.
    Only(EngineKind),
}

impl FromStr for EngineChoice {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(EngineChoice::Auto),
            "onnxruntime" | "ort" => Ok(EngineChoice::Only(EngineKind::OnnxRuntime)),
            "tract" => Ok(EngineChoice::Only(EngineKind::Tract)),
            other => Err(RuntimeError::InvalidInput(format!(
                "unknown engine {other:?} (expected auto, onnxruntime or tract)"
            ))),
        }
    }
}

/// Picks a backend for `choice`. `Auto` prefers ONNX Runtime and falls back
/// to tract when ONNX Runtime's library cannot be found or loaded; the
/// returned note says why, for the user.
pub fn select_backend(
    choice: EngineChoice,
    search: &onnxruntime::SearchPaths,
) -> Result<(Box<dyn Backend>, Option<String>), RuntimeError> {
    match choice {
        EngineChoice::Only(EngineKind::Tract) => Ok((Box::new(tract::TractBackend::new()), None)),
        EngineChoice::Only(EngineKind::OnnxRuntime) => {
            Ok((Box::new(onnxruntime::OrtBackend::init(search)?), None))
        }
        EngineChoice::Auto => match onnxruntime::OrtBackend::init(search) {
            Ok(b) => Ok((Box::new(b), None)),
            Err(e) => Ok((
                Box::new(tract::TractBackend::new()),
                Some(format!("using tract: {e}")),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sha256_makes_a_cache_file_name() {
        let cache = |sha: &str| OptimizedCache {
            dir: "/cache".into(),
            model_sha256: sha.into(),
        };
        let good = cache(&"0a".repeat(32));
        assert!(good.is_valid());
        assert_eq!(
            good.path("ort1", "onnx").parent().unwrap(),
            std::path::Path::new("/cache")
        );
        for bad in ["", "../../escape", "/abs", &"A".repeat(64), &"0".repeat(63)] {
            assert!(!cache(bad).is_valid(), "{bad:?}");
        }
    }
}

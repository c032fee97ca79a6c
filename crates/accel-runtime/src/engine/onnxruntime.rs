//! ONNX Runtime through the `ort` crate, with the shared library loaded at
//! run time (no build-time download).
//!
//! Discovery order: `ORT_DYLIB_PATH`, then `$ACCEL_HOME/engines/`, then the
//! `onnxruntime` Python package of the `python3` on `PATH`. The library can be
//! loaded once per process; the first successful load wins.

use super::{Backend, EngineKind, LoadOptions, Plan, TensorInfo};
use crate::error::RuntimeError;
use accel_core::{DType, Tensor, TensorData};
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::{TensorElementType, TensorRef, ValueType};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The ONNX Runtime release this build's C API matches (`ort` 2.0.0-rc.15).
pub const PINNED_VERSION: &str = "1.31.1";

/// Where to look for the ONNX Runtime shared library.
#[derive(Debug, Clone, Default)]
pub struct SearchPaths {
    /// An explicit library path (the `ORT_DYLIB_PATH` variable).
    pub dylib_path: Option<PathBuf>,
    /// `$ACCEL_HOME/engines`.
    pub engines_dir: Option<PathBuf>,
    /// The Python interpreter whose `onnxruntime` package to use, if any.
    pub python: Option<String>,
}

/// A library found by discovery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundLibrary {
    /// Path of the shared library.
    pub path: PathBuf,
    /// Where it was found: `ORT_DYLIB_PATH`, `accel-home` or `python`.
    pub source: &'static str,
}

fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so")
                    || n == "onnxruntime.dll"
                    || n.starts_with("libonnxruntime.") && n.ends_with(".dylib")
            })
        })
        .collect();
    // Prefer the most specific name (libonnxruntime.so.1.31.1 over .so).
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

fn python_package_dir(python: &str) -> Option<PathBuf> {
    let out = Command::new(python)
        .args([
            "-c",
            "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(dir.trim()).join("capi"))
}

/// Every library discovery finds, in priority order.
pub fn discover(search: &SearchPaths) -> Vec<FoundLibrary> {
    let mut out = Vec::new();
    if let Some(p) = &search.dylib_path {
        if p.is_file() {
            out.push(FoundLibrary {
                path: p.clone(),
                source: "ORT_DYLIB_PATH",
            });
        }
    }
    if let Some(dir) = &search.engines_dir {
        if let Some(path) = library_in(dir) {
            out.push(FoundLibrary {
                path,
                source: "accel-home",
            });
        }
    }
    if let Some(py) = &search.python {
        if let Some(path) = python_package_dir(py).and_then(|d| library_in(&d)) {
            out.push(FoundLibrary {
                path,
                source: "python",
            });
        }
    }
    out
}

struct Loaded {
    env: ort::environment::Environment,
    library: FoundLibrary,
}

static LOADED: OnceLock<Result<Loaded, String>> = OnceLock::new();

fn load(search: &SearchPaths) -> Result<&'static Loaded, RuntimeError> {
    let loaded = LOADED.get_or_init(|| {
        let candidates = discover(search);
        let Some(first) = candidates.into_iter().next() else {
            return Err(format!(
                "ONNX Runtime library not found (looked at ORT_DYLIB_PATH, {}, and the onnxruntime package of python3); \
                 run `accel engines install onnxruntime` or set ORT_DYLIB_PATH",
                search
                    .engines_dir
                    .as_deref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| "$ACCEL_HOME/engines".into())
            ));
        };
        let env = ort::init_from(&first.path)
            .map_err(|e| format!("cannot load {}: {e}", first.path.display()))?
            .with_name("accel")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", first.path.display()))?;
        Ok(Loaded {
            env,
            library: first,
        })
    });
    loaded
        .as_ref()
        .map_err(|e| RuntimeError::EngineUnavailable(e.clone()))
}

/// Execution providers compiled into the loaded library (e.g.
/// `CPUExecutionProvider`, `CUDAExecutionProvider`).
pub fn available_providers() -> Vec<String> {
    let api = ort::api();
    let mut ptr: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut len: std::ffi::c_int = 0;
    // SAFETY: the API table comes from a successfully loaded library; the
    // out-pointers are valid locals; the list is released with the matching call.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut ptr, &mut len);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
            return Vec::new();
        }
        let names = (0..len.max(0) as usize)
            .map(|i| {
                std::ffi::CStr::from_ptr(*ptr.add(i))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let status = (api.ReleaseAvailableProviders)(ptr, len);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
        }
        names
    }
}

/// The ONNX Runtime backend.
pub struct OrtBackend {
    loaded: &'static Loaded,
}

impl OrtBackend {
    /// Finds and loads the library (once per process).
    pub fn init(search: &SearchPaths) -> Result<Self, RuntimeError> {
        Ok(OrtBackend {
            loaded: load(search)?,
        })
    }

    /// The library in use.
    pub fn library(&self) -> &FoundLibrary {
        &self.loaded.library
    }
}

fn version_from_path(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let v = name.strip_prefix("libonnxruntime.so.")?;
    (!v.is_empty()).then(|| v.to_string())
}

impl Backend for OrtBackend {
    fn kind(&self) -> EngineKind {
        EngineKind::OnnxRuntime
    }

    fn version(&self) -> String {
        version_from_path(&self.loaded.library.path).unwrap_or_else(|| {
            ort::info()
                .split(", ")
                .find_map(|s| s.strip_prefix("git-branch=rel-"))
                .unwrap_or("unknown")
                .to_string()
        })
    }

    fn load(&self, model: &[u8], options: &LoadOptions) -> Result<Box<dyn Plan>, RuntimeError> {
        let cached = options
            .cache
            .as_ref()
            .filter(|c| !options.prepared && c.is_valid())
            .map(|c| c.path(&format!("ort{}", self.version()), "onnx"));
        let session = match &cached {
            _ if options.prepared => self.session(Source::Prepared(model), options)?,
            Some(path) if path.is_file() => match self.session(Source::Optimized(path), options) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unusable optimized model; optimizing again");
                    let _ = std::fs::remove_file(path);
                    self.session(Source::Model(model, cached.as_deref()), options)?
                }
            },
            _ => self.session(Source::Model(model, cached.as_deref()), options)?,
        };
        let inputs = session
            .inputs()
            .iter()
            .map(|o| tensor_info(o.name(), o.dtype()))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = session
            .outputs()
            .iter()
            .map(|o| tensor_info(o.name(), o.dtype()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Box::new(OrtPlan {
            session: Mutex::new(session),
            inputs,
            outputs,
        }))
    }
}

impl OrtBackend {
    /// Optimizes `model` the way [`Backend::load`] does (all graph
    /// optimizations, layouts for this CPU) and returns the optimized model's
    /// bytes: load them later with [`LoadOptions::prepared`] to skip the
    /// optimization. Tied to this ONNX Runtime version and [`cpu_tag`].
    ///
    /// [`cpu_tag`]: super::cpu_tag
    pub fn optimize(&self, model: &[u8], options: &LoadOptions) -> Result<Vec<u8>, RuntimeError> {
        let dir = std::env::temp_dir();
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = dir.join(format!(
            ".accel-optimize-{}-{}.onnx",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let options = LoadOptions {
            prepared: false,
            cache: None,
            ..options.clone()
        };
        let session = self.session(Source::Model(model, Some(&path)), &options);
        let bytes = std::fs::read(&path);
        let _ = std::fs::remove_file(&path);
        drop(session?);
        bytes.map_err(|e| RuntimeError::Load {
            engine: "onnxruntime",
            message: format!("the optimized model was not written: {e}"),
        })
    }
}

/// What a session is built from.
enum Source<'a> {
    /// The model's bytes, optimized now (and written to the cache path, if
    /// given, for next time).
    Model(&'a [u8], Option<&'a Path>),
    /// A model this backend optimized before: loaded without optimizing.
    Optimized(&'a Path),
    /// The bytes of a model this backend optimized before.
    Prepared(&'a [u8]),
}

impl OrtBackend {
    fn session(&self, source: Source<'_>, options: &LoadOptions) -> Result<Session, RuntimeError> {
        let err = |e: ort::Error| RuntimeError::Load {
            engine: "onnxruntime",
            message: e.to_string(),
        };
        let level = match source {
            Source::Model(..) => GraphOptimizationLevel::Level3,
            Source::Optimized(_) | Source::Prepared(_) => GraphOptimizationLevel::Disable,
        };
        let mut builder = Session::builder(&self.loaded.env)
            .map_err(err)?
            .with_optimization_level(level)
            .map_err(|e| err(e.into()))?
            .with_intra_threads(options.resolved_threads())
            .map_err(|e| err(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.into()))?;
        if let Some(spin) = options.spin {
            builder = builder
                .with_intra_op_spinning(spin)
                .map_err(|e| err(e.into()))?;
        }
        match source {
            Source::Optimized(path) => builder.commit_from_file(path).map_err(err),
            Source::Prepared(model) => builder.commit_from_memory(model).map_err(err),
            Source::Model(model, None) => builder.commit_from_memory(model).map_err(err),
            Source::Model(model, Some(path)) => {
                // Written beside its final name, renamed when complete: a
                // reader never sees half a file.
                let dir = path.parent().unwrap_or(Path::new("."));
                let tmp = dir.join(format!(
                    ".{}.{}.tmp",
                    path.file_name().and_then(|n| n.to_str()).unwrap_or("model"),
                    std::process::id()
                ));
                let written = std::fs::create_dir_all(dir).is_ok();
                if written {
                    builder = builder
                        .with_optimized_model_path(&tmp)
                        .map_err(|e| err(e.into()))?;
                }
                let session = builder.commit_from_memory(model).map_err(err)?;
                if written {
                    if let Err(e) = std::fs::rename(&tmp, path) {
                        tracing::warn!(path = %path.display(), error = %e, "could not cache the optimized model");
                        let _ = std::fs::remove_file(&tmp);
                    }
                }
                Ok(session)
            }
        }
    }
}

fn dtype_of(t: TensorElementType) -> Option<DType> {
    Some(match t {
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Int8 => DType::I8,
        TensorElementType::String => DType::String,
        _ => return None,
    })
}

fn tensor_info(name: &str, ty: &ValueType) -> Result<TensorInfo, RuntimeError> {
    let unsupported = || RuntimeError::Load {
        engine: "onnxruntime",
        message: format!("tensor {name:?} has an unsupported type {ty:?}"),
    };
    let (Some(elem), Some(shape)) = (ty.tensor_type(), ty.tensor_shape()) else {
        return Err(unsupported());
    };
    Ok(TensorInfo {
        name: name.to_string(),
        dtype: dtype_of(elem).ok_or_else(unsupported)?,
        shape: shape.iter().map(|&d| usize::try_from(d).ok()).collect(),
    })
}

/// A loaded ONNX Runtime session. `ort` needs `&mut` to run, so calls are
/// serialized by a mutex; each call already uses every intra-op thread.
struct OrtPlan {
    session: Mutex<Session>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

fn infer_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Inference {
        engine: "onnxruntime",
        message: e.to_string(),
    }
}

impl Plan for OrtPlan {
    fn engine(&self) -> EngineKind {
        EngineKind::OnnxRuntime
    }

    fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        if inputs.len() != self.inputs.len() {
            return Err(RuntimeError::InvalidInput(format!(
                "model takes {} inputs, got {}",
                self.inputs.len(),
                inputs.len()
            )));
        }
        let mut values: Vec<(String, ort::session::SessionInputValue<'_>)> = Vec::new();
        for (info, t) in self.inputs.iter().zip(inputs) {
            let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
            let v: ort::session::SessionInputValue<'_> = match t.data() {
                TensorData::F32(d) => TensorRef::from_array_view((shape, &d[..]))
                    .map_err(infer_err)?
                    .into(),
                TensorData::I64(d) => TensorRef::from_array_view((shape, &d[..]))
                    .map_err(infer_err)?
                    .into(),
                TensorData::I32(d) => TensorRef::from_array_view((shape, &d[..]))
                    .map_err(infer_err)?
                    .into(),
                TensorData::U8(d) => TensorRef::from_array_view((shape, &d[..]))
                    .map_err(infer_err)?
                    .into(),
                TensorData::I8(d) => TensorRef::from_array_view((shape, &d[..]))
                    .map_err(infer_err)?
                    .into(),
                TensorData::String(_) => {
                    return Err(RuntimeError::InvalidInput(format!(
                        "input {:?}: string tensors go through preprocessing, not to the engine",
                        info.name
                    )))
                }
            };
            values.push((info.name.clone(), v));
        }
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(values).map_err(infer_err)?;
        let mut result = Vec::with_capacity(self.outputs.len());
        for info in &self.outputs {
            let value = &outputs[info.name.as_str()];
            let tensor = match info.dtype {
                DType::F32 => extract(value, TensorData::F32)?,
                DType::I64 => extract(value, TensorData::I64)?,
                DType::I32 => extract(value, TensorData::I32)?,
                DType::U8 => extract(value, TensorData::U8)?,
                DType::I8 => extract(value, TensorData::I8)?,
                other => return Err(infer_err(format!("{other} outputs are not supported"))),
            };
            result.push(tensor);
        }
        Ok(result)
    }
}

fn extract<T: ort::value::PrimitiveTensorElementType + Clone>(
    value: &ort::value::DynValue,
    wrap: fn(Vec<T>) -> TensorData,
) -> Result<Tensor, RuntimeError> {
    let (shape, data) = value.try_extract_tensor::<T>().map_err(infer_err)?;
    let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    Tensor::new(shape, wrap(data.to_vec())).map_err(infer_err)
}

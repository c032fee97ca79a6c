//! tract: the pure-Rust engine that is always compiled in.
//!
//! Plans are compiled for batch 1 (dynamic batch dimensions are fixed to 1);
//! the pipeline runs larger batches item by item on such plans.

use super::{Backend, EngineKind, LoadOptions, Plan, TensorInfo};
use crate::error::RuntimeError;
use accel_core::{DType, Tensor, TensorData};
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::{DimLike, Factoid};

/// The tract backend.
#[derive(Debug, Default)]
pub struct TractBackend;

impl TractBackend {
    /// A new backend.
    pub fn new() -> Self {
        TractBackend
    }
}

static EXECUTOR_THREADS: Mutex<usize> = Mutex::new(0);

/// tract's matrix multiplications use one process-wide executor; set it to
/// `threads` workers unless it already has that many.
fn ensure_executor(threads: usize) {
    let mut current = EXECUTOR_THREADS.lock().unwrap_or_else(|p| p.into_inner());
    if *current != threads {
        let executor = if threads > 1 {
            tract_linalg::multithread::Executor::multithread(threads)
        } else {
            tract_linalg::multithread::Executor::SingleThread
        };
        tract_linalg::multithread::set_default_executor(executor);
        *current = threads;
    }
}

fn load_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Load {
        engine: "tract",
        message: format!("{e:#}"),
    }
}

fn infer_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Inference {
        engine: "tract",
        message: format!("{e:#}"),
    }
}

fn dtype_of(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F32 => DType::F32,
        DatumType::I64 => DType::I64,
        DatumType::I32 => DType::I32,
        DatumType::U8 => DType::U8,
        DatumType::I8 => DType::I8,
        _ => return None,
    })
}

impl Backend for TractBackend {
    fn kind(&self) -> EngineKind {
        EngineKind::Tract
    }

    fn version(&self) -> String {
        "0.23.9".to_string()
    }

    fn load(&self, model: &[u8], options: &LoadOptions) -> Result<Box<dyn Plan>, RuntimeError> {
        ensure_executor(options.resolved_threads());
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(model))
            .map_err(load_err)?;
        // Fix every input to a concrete shape: dynamic dimensions become 1.
        for ix in 0..model.inputs.len() {
            let fact = model.input_fact(ix).map_err(load_err)?.clone();
            let dt = fact
                .datum_type
                .concretize()
                .ok_or_else(|| load_err(format!("input {ix} has no known element type")))?;
            let rank = fact
                .shape
                .rank()
                .concretize()
                .ok_or_else(|| load_err(format!("input {ix} has no known rank")))?;
            let dims: Vec<usize> = (0..rank as usize)
                .map(|d| {
                    fact.shape
                        .dim(d)
                        .and_then(|f| f.concretize())
                        .and_then(|d| d.to_usize().ok())
                        .unwrap_or(1)
                })
                .collect();
            model
                .set_input_fact(ix, InferenceFact::dt_shape(dt, dims))
                .map_err(load_err)?;
        }
        let typed = model.into_optimized().map_err(load_err)?;
        let info = |outlets: &[OutletId]| -> Result<Vec<TensorInfo>, RuntimeError> {
            outlets
                .iter()
                .map(|o| {
                    let fact = typed.outlet_fact(*o).map_err(load_err)?;
                    let name = typed.node(o.node).name.clone();
                    let name = typed
                        .outlet_label(*o)
                        .map(|s| s.to_string())
                        .unwrap_or(name);
                    Ok(TensorInfo {
                        name,
                        dtype: dtype_of(fact.datum_type).ok_or_else(|| {
                            load_err(format!("unsupported element type {:?}", fact.datum_type))
                        })?,
                        shape: fact.shape.iter().map(|d| d.to_usize().ok()).collect(),
                    })
                })
                .collect()
        };
        let inputs = info(&typed.inputs)?;
        let outputs = info(&typed.outputs)?;
        let runnable = typed.into_runnable().map_err(load_err)?;
        Ok(Box::new(TractPlan {
            runnable,
            inputs,
            outputs,
        }))
    }
}

struct TractPlan {
    runnable: Arc<TypedRunnableModel>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

fn to_tract(t: &Tensor) -> Result<tract_onnx::prelude::Tensor, RuntimeError> {
    let shape = t.shape();
    let r = match t.data() {
        TensorData::F32(d) => tract_onnx::prelude::Tensor::from_shape(shape, d),
        TensorData::I64(d) => tract_onnx::prelude::Tensor::from_shape(shape, d),
        TensorData::I32(d) => tract_onnx::prelude::Tensor::from_shape(shape, d),
        TensorData::U8(d) => tract_onnx::prelude::Tensor::from_shape(shape, d),
        TensorData::I8(d) => tract_onnx::prelude::Tensor::from_shape(shape, d),
        TensorData::String(_) => {
            return Err(RuntimeError::InvalidInput(
                "string tensors go through preprocessing, not to the engine".into(),
            ))
        }
    };
    r.map_err(infer_err)
}

fn from_tract(t: &tract_onnx::prelude::Tensor) -> Result<Tensor, RuntimeError> {
    let shape = t.shape().to_vec();
    let data = match t.datum_type() {
        DatumType::F32 => TensorData::F32(
            t.to_plain_array_view::<f32>()
                .map_err(infer_err)?
                .iter()
                .copied()
                .collect(),
        ),
        DatumType::I64 => TensorData::I64(
            t.to_plain_array_view::<i64>()
                .map_err(infer_err)?
                .iter()
                .copied()
                .collect(),
        ),
        DatumType::I32 => TensorData::I32(
            t.to_plain_array_view::<i32>()
                .map_err(infer_err)?
                .iter()
                .copied()
                .collect(),
        ),
        DatumType::U8 => TensorData::U8(
            t.to_plain_array_view::<u8>()
                .map_err(infer_err)?
                .iter()
                .copied()
                .collect(),
        ),
        DatumType::I8 => TensorData::I8(
            t.to_plain_array_view::<i8>()
                .map_err(infer_err)?
                .iter()
                .copied()
                .collect(),
        ),
        other => return Err(infer_err(format!("unsupported output type {other:?}"))),
    };
    Tensor::new(shape, data).map_err(infer_err)
}

impl Plan for TractPlan {
    fn engine(&self) -> EngineKind {
        EngineKind::Tract
    }

    fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        let values: TVec<TValue> = inputs
            .iter()
            .map(|t| to_tract(t).map(|t| t.into_tvalue()))
            .collect::<Result<_, _>>()?;
        let out = self.runnable.run(values).map_err(infer_err)?;
        out.iter().map(|v| from_tract(v)).collect()
    }
}

//! Test support: a tiny fake engine (doubles its float input) behind a
//! real request core, for adapter tests without model files.

use crate::auth::{ApiKey, ServiceKeys};
use crate::core::{RequestCore, Service};
use crate::executor::Executor;
use crate::metrics::Metrics;
use accel_core::spec::{InputKind, OutputSpec, PipelineSpec};
use accel_core::{DType, Tensor};
use accel_runtime::{CompiledPipeline, EngineKind, Limits, Plan, RuntimeError, TensorInfo};
use std::sync::Arc;

pub(crate) const KEY: &str = "test-key-0123456789";

struct Doubler {
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

impl Plan for Doubler {
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
        let x = &inputs[0];
        let doubled = x.as_f32().unwrap().iter().map(|v| v * 2.0).collect();
        Ok(vec![Tensor::from_f32(x.shape().to_vec(), doubled).unwrap()])
    }
}

pub(crate) fn core(warm: bool) -> Arc<RequestCore> {
    let info = |name: &str| TensorInfo {
        name: name.into(),
        dtype: DType::F32,
        shape: vec![None, Some(2)],
    };
    let plan = Doubler {
        inputs: vec![info("x")],
        outputs: vec![info("y")],
    };
    let spec = PipelineSpec {
        input_kind: InputKind::Tensor,
        input_name: "x".into(),
        input_aliases: vec!["x_alias".into()],
        preprocess: None,
        outputs: vec![OutputSpec {
            name: "y".into(),
            aliases: vec!["y:0".into()],
            softmax: false,
        }],
        top_k: 5,
        labels: None,
        detection: None,
    };
    let pipeline = CompiledPipeline::new(Box::new(plan), spec, None, Limits::default()).unwrap();
    let service = Service {
        name: "svc".into(),
        model_name: "m".into(),
        version: 1,
        pipeline: Arc::new(pipeline),
        keys: ServiceKeys::new("svc", &[ApiKey::new(KEY)], None),
    };
    let core = RequestCore::new(vec![service], Executor::new(1, 4), Arc::new(Metrics::new()));
    if warm {
        core.warm_up().unwrap();
    }
    Arc::new(core)
}

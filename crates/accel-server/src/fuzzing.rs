//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`):
//! the adapters' wire-to-tensor conversions and the core's input validation,
//! callable without a listener or an engine. Thin wrappers over the code the
//! handlers run; not a stable API.

use crate::auth::ServiceKeys;
use crate::core::{validate_inputs, Service};
use crate::error::ServeError;
use crate::grpc::{kserve, tfs};
use crate::request::NamedInput;
use accel_core::spec::{InputKind, Preset};
use accel_core::{DType, PipelineSpec, Tensor};
use accel_proto::inference::ModelInferRequest;
use accel_proto::tensorflow::serving::PredictRequest;
use accel_runtime::onnx_info::ModelIo;
use accel_runtime::pipeline::resolve_spec;
use accel_runtime::{CompiledPipeline, EngineKind, Limits, Plan, RuntimeError, TensorInfo};
use std::sync::Arc;

/// TF Serving gRPC `Predict`: the inputs and the `model_spec`, as the
/// handler converts them before calling the core.
pub fn tfs_predict(req: &PredictRequest) -> Result<Vec<NamedInput>, ServeError> {
    let inputs = tfs::predict_inputs(req)?;
    tfs::target(
        req.model_spec.as_ref(),
        &tonic::metadata::MetadataMap::new(),
    )?;
    Ok(inputs)
}

/// KServe v2 gRPC `ModelInfer`: the inputs (typed contents or raw, BYTES
/// split) and the target, as the handler converts them.
pub fn kserve_infer(req: &ModelInferRequest) -> Result<Vec<NamedInput>, ServeError> {
    let inputs = kserve::infer_inputs(req)?;
    kserve::target(&req.model_name, &req.model_version)?;
    Ok(inputs)
}

/// TF Serving REST `:predict` body (row or columnar format).
pub fn tfs_rest(body: &[u8], default_input: &str) -> Result<Vec<NamedInput>, ServeError> {
    crate::http::tfs::parse_predict(body, default_input).map(|(_, inputs)| inputs)
}

/// KServe v2 REST inference body: its JSON part and the binary part after it.
pub fn kserve_rest(json_part: &[u8], binary_part: &[u8]) -> Result<Vec<NamedInput>, ServeError> {
    crate::http::kserve::parse_request(json_part, binary_part).map(|p| p.inputs)
}

/// A plan that is never run: validation only looks at its inputs.
struct Idle(Vec<TensorInfo>, Vec<TensorInfo>);

impl Plan for Idle {
    fn engine(&self) -> EngineKind {
        EngineKind::Tract
    }
    fn inputs(&self) -> &[TensorInfo] {
        &self.0
    }
    fn outputs(&self) -> &[TensorInfo] {
        &self.1
    }
    fn run(&self, _: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        Err(RuntimeError::InvalidInput(
            "the fuzzing plan does not run".into(),
        ))
    }
}

fn service(name: &str, spec: PipelineSpec, input: TensorInfo) -> Service {
    let output = TensorInfo {
        name: "logits".into(),
        dtype: DType::F32,
        shape: vec![None, Some(2)],
    };
    let io = ModelIo {
        inputs: vec![input.clone()],
        outputs: vec![output.clone()],
        opsets: vec![],
    };
    let spec = resolve_spec(spec, &io).expect("fuzzing spec resolves");
    let limits = Limits {
        max_batch: 8,
        ..Limits::default()
    };
    let pipeline = CompiledPipeline::new(
        Box::new(Idle(vec![input], vec![output])),
        spec,
        None,
        limits,
    )
    .expect("fuzzing pipeline");
    Service {
        name: name.into(),
        model_name: name.into(),
        version: 1,
        pipeline: Arc::new(pipeline),
        keys: ServiceKeys::new(name, &[], None),
    }
}

/// Two services to validate converted inputs against, as the core does
/// before admission: an image pipeline (torchvision preset, input `data`
/// `[N,3,224,224]` f32) and a raw-tensor one (input `x`, `[N,4]` f32).
pub struct Validator {
    images: Service,
    raw: Service,
}

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Validator {
    /// Builds both services (no model file, no engine).
    pub fn new() -> Self {
        let images = service(
            "images",
            Preset::Torchvision.spec(),
            TensorInfo {
                name: "data".into(),
                dtype: DType::F32,
                shape: vec![None, Some(3), Some(224), Some(224)],
            },
        );
        let mut raw_spec = Preset::Torchvision.spec();
        raw_spec.input_kind = InputKind::Tensor;
        raw_spec.preprocess = None;
        let raw = service(
            "raw",
            raw_spec,
            TensorInfo {
                name: "x".into(),
                dtype: DType::F32,
                shape: vec![None, Some(4)],
            },
        );
        Validator { images, raw }
    }

    /// Validates `inputs` against both services; whether each accepted.
    pub fn validate(&self, inputs: &[NamedInput]) -> [bool; 2] {
        [&self.images, &self.raw].map(|s| validate_inputs(s, inputs.to_vec()).is_ok())
    }
}

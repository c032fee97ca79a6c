//! A service's input and outputs as the metadata routes describe them.

use crate::core::Service;
use accel_core::DType;
use accel_runtime::EngineKind;

/// One tensor of a service's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorDesc {
    /// The model's own name.
    pub name: String,
    /// The name a TF Serving signature lists it under: the first alias,
    /// else the model's name (the label outputs get when none is asked for).
    pub key: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, `-1` where dynamic.
    pub shape: Vec<i64>,
}

fn dims(shape: &[Option<usize>]) -> Vec<i64> {
    shape
        .iter()
        .map(|d| d.and_then(|d| i64::try_from(d).ok()).unwrap_or(-1))
        .collect()
}

/// The input: encoded images are a string tensor of shape `[-1]`.
pub(crate) fn input(service: &Service) -> TensorDesc {
    let spec = service.pipeline.spec();
    let key = spec
        .input_aliases
        .first()
        .unwrap_or(&spec.input_name)
        .clone();
    let (dtype, shape) = if service.takes_images() {
        (DType::String, vec![-1])
    } else {
        let info = &service.pipeline.plan().inputs()[0];
        (info.dtype, dims(&info.shape))
    };
    TensorDesc {
        name: spec.input_name.clone(),
        key,
        dtype,
        shape,
    }
}

/// The exposed outputs, in the spec's order.
pub(crate) fn outputs(service: &Service) -> Vec<TensorDesc> {
    service
        .pipeline
        .output_infos()
        .iter()
        .map(|o| TensorDesc {
            name: o.name.clone(),
            key: o.aliases.first().unwrap_or(&o.name).clone(),
            dtype: o.dtype,
            shape: dims(&o.shape),
        })
        .collect()
}

/// The KServe `platform` of the engine.
pub(crate) fn platform(service: &Service) -> &'static str {
    match service.pipeline.plan().engine() {
        EngineKind::OnnxRuntime => "onnxruntime_onnx",
        EngineKind::Tract => "tract_onnx",
    }
}

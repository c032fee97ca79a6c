//! Reading an ONNX file's declared inputs and outputs without compiling it:
//! fast enough for registration, and the first check that a file is a model.

use crate::engine::TensorInfo;
use crate::error::RuntimeError;
use accel_core::DType;
use prost::Message;
use tract_onnx::pb;

/// The graph's real inputs (initializers excluded) and outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelIo {
    /// Graph inputs that are not initializers.
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs.
    pub outputs: Vec<TensorInfo>,
    /// Opsets imported, as (domain, version); `""` is the default domain.
    pub opsets: Vec<(String, i64)>,
}

fn not_onnx(why: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Load {
        engine: "onnx",
        message: format!("not an ONNX model: {why}"),
    }
}

fn dtype_of(elem_type: i32) -> Option<DType> {
    // TensorProto.DataType numbers.
    Some(match elem_type {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        6 => DType::I32,
        7 => DType::I64,
        8 => DType::String,
        _ => return None,
    })
}

fn info(v: &pb::ValueInfoProto) -> Option<TensorInfo> {
    let ty = v.r#type.as_ref()?;
    let pb::type_proto::Value::TensorType(t) = ty.value.as_ref()?;
    let shape = t
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                        Some(v as usize)
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(TensorInfo {
        name: v.name.clone(),
        dtype: dtype_of(t.elem_type)?,
        shape,
    })
}

/// Parses `bytes` as an ONNX `ModelProto` and lists its graph's inputs and
/// outputs. Fails with a clear message when the bytes are not an ONNX model.
pub fn read_model_io(bytes: &[u8]) -> Result<ModelIo, RuntimeError> {
    if bytes.is_empty() {
        return Err(not_onnx("the file is empty"));
    }
    let model = pb::ModelProto::decode(bytes).map_err(not_onnx)?;
    if model.ir_version <= 0 {
        return Err(not_onnx("no ir_version"));
    }
    let graph = model.graph.as_ref().ok_or_else(|| not_onnx("no graph"))?;
    if graph.node.is_empty() {
        return Err(not_onnx("the graph has no nodes"));
    }
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let unsupported = |v: &pb::ValueInfoProto| RuntimeError::Load {
        engine: "onnx",
        message: format!("tensor {:?} has a type Accel does not support", v.name),
    };
    let inputs = graph
        .input
        .iter()
        .filter(|v| !initializers.contains(v.name.as_str()))
        .map(|v| info(v).ok_or_else(|| unsupported(v)))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = graph
        .output
        .iter()
        .map(|v| info(v).ok_or_else(|| unsupported(v)))
        .collect::<Result<Vec<_>, _>>()?;
    if inputs.is_empty() || outputs.is_empty() {
        return Err(not_onnx("the graph declares no inputs or no outputs"));
    }
    Ok(ModelIo {
        inputs,
        outputs,
        opsets: model
            .opset_import
            .iter()
            .map(|o| (o.domain.clone(), o.version))
            .collect(),
    })
}

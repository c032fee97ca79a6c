//! ONNX model I/O and small graph helpers.
//!
//! Models are read and written with the prost messages of
//! [`accel_proto::onnx`] (re-exported here as [`pb`]), generated from the
//! complete `onnx.proto` of onnx 1.23.2, so a decode/encode round trip keeps
//! every field ONNX defines. Models whose tensors live in external files are
//! refused: the converter works on single-file models only.

use crate::error::ConvertError;
use prost::Message as _;
use std::collections::{HashMap, HashSet};

/// The ONNX protobuf messages.
pub use accel_proto::onnx as pb;

use pb::tensor_proto::{DataLocation, DataType};

/// Reads an ONNX model. Refuses bytes that are not a model with a graph, and
/// models with tensors stored outside the file (`data_location = EXTERNAL`).
pub fn decode(bytes: &[u8]) -> Result<pb::ModelProto, ConvertError> {
    if bytes.is_empty() {
        return Err(ConvertError::InvalidModel("the file is empty".into()));
    }
    let model = pb::ModelProto::decode(bytes)
        .map_err(|e| ConvertError::InvalidModel(format!("not an ONNX model: {e}")))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ConvertError::InvalidModel("the model has no graph".into()))?;
    check_graph_data(graph)?;
    for f in &model.functions {
        for n in &f.node {
            check_node_data(n)?;
        }
    }
    Ok(model)
}

/// Writes a model.
pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// The model's graph, or `InvalidModel`.
pub fn graph(model: &pb::ModelProto) -> Result<&pb::GraphProto, ConvertError> {
    model
        .graph
        .as_ref()
        .ok_or_else(|| ConvertError::InvalidModel("the model has no graph".into()))
}

/// The model's graph, mutably, or `InvalidModel`.
pub fn graph_mut(model: &mut pb::ModelProto) -> Result<&mut pb::GraphProto, ConvertError> {
    model
        .graph
        .as_mut()
        .ok_or_else(|| ConvertError::InvalidModel("the model has no graph".into()))
}

fn check_tensor_data(t: &pb::TensorProto) -> Result<(), ConvertError> {
    if t.data_location == DataLocation::External as i32 {
        return Err(ConvertError::Unsupported(format!(
            "tensor {:?} keeps its data in an external file; only single-file ONNX models \
             are supported",
            t.name
        )));
    }
    Ok(())
}

fn check_graph_data(g: &pb::GraphProto) -> Result<(), ConvertError> {
    for t in &g.initializer {
        check_tensor_data(t)?;
    }
    for s in &g.sparse_initializer {
        for t in s.values.iter().chain(s.indices.iter()) {
            check_tensor_data(t)?;
        }
    }
    for n in &g.node {
        check_node_data(n)?;
    }
    Ok(())
}

fn check_node_data(n: &pb::NodeProto) -> Result<(), ConvertError> {
    for a in &n.attribute {
        for t in a.t.iter().chain(a.tensors.iter()) {
            check_tensor_data(t)?;
        }
        for s in a.sparse_tensor.iter().chain(a.sparse_tensors.iter()) {
            for t in s.values.iter().chain(s.indices.iter()) {
                check_tensor_data(t)?;
            }
        }
        for g in a.g.iter().chain(a.graphs.iter()) {
            check_graph_data(g)?;
        }
    }
    Ok(())
}

/// Number of elements of a tensor with these dimensions (1 for a scalar).
pub fn numel(name: &str, dims: &[i64]) -> Result<usize, ConvertError> {
    dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| {
                ConvertError::InvalidModel(format!("tensor {name:?}: bad dims {dims:?}"))
            })
    })
}

/// The values of a FLOAT tensor, from `raw_data` (little-endian) or
/// `float_data`.
pub fn tensor_f32(t: &pb::TensorProto) -> Result<Vec<f32>, ConvertError> {
    check_tensor_data(t)?;
    if t.data_type != DataType::Float as i32 {
        return Err(ConvertError::InvalidModel(format!(
            "tensor {:?}: expected FLOAT, found data type {}",
            t.name, t.data_type
        )));
    }
    let n = numel(&t.name, &t.dims)?;
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        t.float_data.clone()
    };
    if values.len() != n || (!t.raw_data.is_empty() && t.raw_data.len() != 4 * n) {
        return Err(ConvertError::InvalidModel(format!(
            "tensor {:?}: {} values stored for dims {:?}",
            t.name,
            values.len(),
            t.dims
        )));
    }
    Ok(values)
}

/// The values of an INT64 tensor, from `raw_data` (little-endian) or
/// `int64_data`.
pub fn tensor_i64(t: &pb::TensorProto) -> Result<Vec<i64>, ConvertError> {
    check_tensor_data(t)?;
    if t.data_type != DataType::Int64 as i32 {
        return Err(ConvertError::InvalidModel(format!(
            "tensor {:?}: expected INT64, found data type {}",
            t.name, t.data_type
        )));
    }
    let n = numel(&t.name, &t.dims)?;
    let values: Vec<i64> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()
    } else {
        t.int64_data.clone()
    };
    if values.len() != n || (!t.raw_data.is_empty() && t.raw_data.len() != 8 * n) {
        return Err(ConvertError::InvalidModel(format!(
            "tensor {:?}: {} values stored for dims {:?}",
            t.name,
            values.len(),
            t.dims
        )));
    }
    Ok(values)
}

fn raw_tensor(name: &str, dims: &[i64], data_type: DataType, raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: data_type as i32,
        raw_data: raw,
        ..Default::default()
    }
}

/// A FLOAT tensor written as `raw_data`.
pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, dims, DataType::Float, raw)
}

/// An INT8 tensor written as `raw_data`.
pub fn int8_tensor(name: &str, dims: &[i64], values: &[i8]) -> pb::TensorProto {
    let raw = values.iter().map(|v| v.to_le_bytes()[0]).collect();
    raw_tensor(name, dims, DataType::Int8, raw)
}

/// A UINT8 tensor written as `raw_data`.
pub fn uint8_tensor(name: &str, dims: &[i64], values: &[u8]) -> pb::TensorProto {
    raw_tensor(name, dims, DataType::Uint8, values.to_vec())
}

/// An INT32 tensor written as `raw_data`.
pub fn int32_tensor(name: &str, dims: &[i64], values: &[i32]) -> pb::TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, dims, DataType::Int32, raw)
}

/// An INT64 tensor written as `raw_data`.
pub fn int64_tensor(name: &str, dims: &[i64], values: &[i64]) -> pb::TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, dims, DataType::Int64, raw)
}

/// The attribute `name` of a node.
pub fn attr<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An INT attribute, or `default` when absent.
pub fn attr_int(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

/// A FLOAT attribute, or `default` when absent.
pub fn attr_float(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

/// An INTS attribute (`None` when absent).
pub fn attr_ints<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n [i64]> {
    attr(node, name).map(|a| a.ints.as_slice())
}

/// An INT attribute.
pub fn make_attr_int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// A node in the default domain.
pub fn make_node(
    op_type: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op_type.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes,
        ..Default::default()
    }
}

/// Whether a node belongs to the default (`ai.onnx`) domain.
pub fn is_default_domain(node: &pb::NodeProto) -> bool {
    node.domain.is_empty() || node.domain == "ai.onnx"
}

/// Who produces and who reads each tensor of a graph (by node index), and
/// where its initializers, inputs and outputs are. A snapshot: rebuild it
/// after editing the graph.
#[derive(Debug, Clone, Default)]
pub struct GraphIndex {
    producer: HashMap<String, usize>,
    consumers: HashMap<String, Vec<usize>>,
    initializers: HashMap<String, usize>,
    inputs: HashSet<String>,
    outputs: HashSet<String>,
}

impl GraphIndex {
    /// Indexes `graph`.
    pub fn new(graph: &pb::GraphProto) -> Self {
        let mut ix = GraphIndex::default();
        for (i, n) in graph.node.iter().enumerate() {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                ix.producer.entry(o.clone()).or_insert(i);
            }
            for x in n.input.iter().filter(|x| !x.is_empty()) {
                let c = ix.consumers.entry(x.clone()).or_default();
                c.push(i);
            }
        }
        for (i, t) in graph.initializer.iter().enumerate() {
            ix.initializers.entry(t.name.clone()).or_insert(i);
        }
        ix.inputs = graph.input.iter().map(|v| v.name.clone()).collect();
        ix.outputs = graph.output.iter().map(|v| v.name.clone()).collect();
        ix
    }

    /// The node that writes `tensor`.
    pub fn producer(&self, tensor: &str) -> Option<usize> {
        self.producer.get(tensor).copied()
    }

    /// The nodes that read `tensor`, in graph order; a node reading it twice
    /// appears twice.
    pub fn consumers(&self, tensor: &str) -> &[usize] {
        self.consumers.get(tensor).map_or(&[], Vec::as_slice)
    }

    /// The initializer called `name`.
    pub fn initializer<'g>(
        &self,
        graph: &'g pb::GraphProto,
        name: &str,
    ) -> Option<&'g pb::TensorProto> {
        self.initializers
            .get(name)
            .and_then(|&i| graph.initializer.get(i))
    }

    /// Whether `name` is an initializer.
    pub fn is_initializer(&self, name: &str) -> bool {
        self.initializers.contains_key(name)
    }

    /// Whether `name` is listed in the graph's inputs.
    pub fn is_graph_input(&self, name: &str) -> bool {
        self.inputs.contains(name)
    }

    /// Whether `name` is listed in the graph's outputs.
    pub fn is_graph_output(&self, name: &str) -> bool {
        self.outputs.contains(name)
    }
}

/// Checks that every node input is a graph input, an initializer or the
/// output of an earlier node (ONNX requires topological order).
pub fn check_topological(graph: &pb::GraphProto) -> Result<(), ConvertError> {
    let mut known: HashSet<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
    known.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    for n in &graph.node {
        for x in n.input.iter().filter(|x| !x.is_empty()) {
            if !known.contains(x.as_str()) {
                return Err(ConvertError::InvalidModel(format!(
                    "node {:?} ({}) reads {x:?}, which no earlier node writes (the graph is \
                     not in topological order, or the tensor does not exist)",
                    n.name, n.op_type
                )));
            }
        }
        known.extend(n.output.iter().map(String::as_str));
    }
    Ok(())
}

/// Tensor and node names in use, to make new ones that clash with none.
#[derive(Debug, Clone, Default)]
pub struct Names {
    used: HashSet<String>,
}

impl Names {
    /// Every name of `graph`: tensors (inputs, outputs, value infos,
    /// initializers, node inputs and outputs) and nodes.
    pub fn of_graph(graph: &pb::GraphProto) -> Self {
        let mut used = HashSet::new();
        for v in graph
            .input
            .iter()
            .chain(&graph.output)
            .chain(&graph.value_info)
        {
            used.insert(v.name.clone());
        }
        for t in &graph.initializer {
            used.insert(t.name.clone());
        }
        for n in &graph.node {
            used.insert(n.name.clone());
            used.extend(n.input.iter().cloned());
            used.extend(n.output.iter().cloned());
        }
        used.remove("");
        Names { used }
    }

    /// `base` if unused, else `base_1`, `base_2`, ...; the result is
    /// reserved.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 0usize;
        while name.is_empty() || self.used.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.used.insert(name.clone());
        name
    }

    /// Marks `name` as used.
    pub fn reserve(&mut self, name: &str) {
        self.used.insert(name.to_string());
    }
}

/// A FLOAT tensor value info without a shape.
pub fn float_value_info(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Appends `names` to the graph outputs, after the model's own, as FLOAT
/// tensors of unknown shape (for calibration: the engine then returns them).
/// Every name must be a tensor of the graph.
pub fn add_outputs(model: &mut pb::ModelProto, names: &[String]) -> Result<(), ConvertError> {
    let graph = graph_mut(model)?;
    let mut known: HashSet<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
    known.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    for n in &graph.node {
        known.extend(n.output.iter().map(String::as_str));
    }
    if let Some(missing) = names.iter().find(|n| !known.contains(n.as_str())) {
        return Err(ConvertError::InvalidArgument(format!(
            "{missing:?} is not a tensor of the graph"
        )));
    }
    graph
        .output
        .extend(names.iter().map(|n| float_value_info(n)));
    Ok(())
}

/// The ranks that value infos, inputs and outputs of the graph declare
/// (the first declaration of a name wins).
pub fn declared_ranks(graph: &pb::GraphProto) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for v in graph
        .value_info
        .iter()
        .chain(&graph.input)
        .chain(&graph.output)
    {
        if let Some(pb::type_proto::Value::TensorType(t)) =
            v.r#type.as_ref().and_then(|t| t.value.as_ref())
        {
            if let Some(s) = &t.shape {
                out.entry(v.name.clone()).or_insert(s.dim.len());
            }
        }
    }
    out
}

/// The element types that value infos, inputs and outputs of the graph
/// declare (the first declaration of a name wins).
pub fn declared_elem_types(graph: &pb::GraphProto) -> HashMap<String, i32> {
    let mut out = HashMap::new();
    for v in graph
        .value_info
        .iter()
        .chain(&graph.input)
        .chain(&graph.output)
    {
        if let Some(pb::type_proto::Value::TensorType(t)) =
            v.r#type.as_ref().and_then(|t| t.value.as_ref())
        {
            if t.elem_type != 0 {
                out.entry(v.name.clone()).or_insert(t.elem_type);
            }
        }
    }
    out
}

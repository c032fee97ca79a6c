//! The pooled features of a classifier, and a featurizer cut from it.
//!
//! [`find_features`] walks back from a classifier's output through its head
//! — the final `Gemm`/`MatMul` (with its bias `Add`), and the softmax,
//! reshapes and no-op or quantization nodes around it — to the tensor the
//! linear layer reads: the pooled features (`611` in ShuffleNetV2, the
//! `GlobalAveragePool` output in ResNet). [`cut_at`] makes a tensor the only
//! output of a model and prunes what no longer feeds it.

use crate::error::ConvertError;
use crate::graph::{self, pb, GraphIndex};
use std::collections::HashSet;

/// Ops that sit between a pooled tensor and the linear layer (or between
/// the linear layer and the output) without mixing the features: reshapes,
/// no-ops at inference, fake quantization, range clips.
const PASS_THROUGH: &[&str] = &[
    "Flatten",
    "Reshape",
    "Squeeze",
    "Identity",
    "Dropout",
    "Clip",
    "QuantizeLinear",
    "DequantizeLinear",
];

/// Ops that may follow the linear layer, besides [`PASS_THROUGH`].
const AFTER_LINEAR: &[&str] = &["Softmax", "LogSoftmax"];

/// Whether `name` is a constant of the graph: an initializer, or the output
/// of a `Constant` node or of a `DequantizeLinear` of one.
fn is_constant(graph: &pb::GraphProto, ix: &GraphIndex, name: &str) -> bool {
    if ix.is_initializer(name) {
        return true;
    }
    match ix.producer(name).map(|p| &graph.node[p]) {
        Some(n) if n.op_type == "Constant" => true,
        Some(n) if n.op_type == "DequantizeLinear" => {
            n.input.first().is_some_and(|x| is_constant(graph, ix, x))
        }
        _ => false,
    }
}

/// The pooled-features tensor of a classifier: the tensor fed to the final
/// `Gemm`/`MatMul` of the graph's first output, before any flatten, reshape,
/// clip or quantize/dequantize pair. `InvalidArgument` when the output is not
/// produced by such a head (name the tensor instead).
pub fn find_features(model: &pb::ModelProto) -> Result<String, ConvertError> {
    let graph = graph::graph(model)?;
    let output = graph
        .output
        .first()
        .ok_or_else(|| ConvertError::InvalidModel("the graph has no output".into()))?;
    let ix = GraphIndex::new(graph);
    let not_found = |why: String| {
        ConvertError::InvalidArgument(format!(
            "cannot find the pooled features of output {:?}: {why}; name the features tensor",
            output.name
        ))
    };
    let mut t = output.name.clone();
    // Up from the output to the linear layer.
    let linear = loop {
        let Some(p) = ix.producer(&t) else {
            return Err(not_found(format!(
                "no Gemm or MatMul produces it (reached {t:?})"
            )));
        };
        let n = &graph.node[p];
        let first = || n.input.first().cloned().unwrap_or_default();
        if !graph::is_default_domain(n) {
            return Err(not_found(format!(
                "{:?} ({}:{}) is not a Gemm or MatMul",
                n.name, n.domain, n.op_type
            )));
        }
        match n.op_type.as_str() {
            "Gemm" | "MatMul" => break n,
            "Add" if n.input.len() == 2 => {
                // The bias: follow the operand that is not a constant.
                let (a, b) = (&n.input[0], &n.input[1]);
                t = match (is_constant(graph, &ix, a), is_constant(graph, &ix, b)) {
                    (false, true) => a.clone(),
                    (true, false) => b.clone(),
                    _ => {
                        return Err(not_found(format!(
                            "Add {:?} does not add a constant bias",
                            n.name
                        )))
                    }
                };
            }
            op if PASS_THROUGH.contains(&op) || AFTER_LINEAR.contains(&op) => t = first(),
            op => {
                return Err(not_found(format!(
                    "{:?} ({op}) is not a Gemm or MatMul",
                    n.name
                )))
            }
        }
    };
    if linear.op_type == "Gemm" && graph::attr_int(linear, "transA", 0) != 0 {
        return Err(not_found(format!(
            "Gemm {:?} transposes its input",
            linear.name
        )));
    }
    let weight = linear.input.get(1).map(String::as_str).unwrap_or("");
    if !is_constant(graph, &ix, weight) {
        return Err(not_found(format!(
            "{} {:?} multiplies two computed tensors",
            linear.op_type, linear.name
        )));
    }
    t = linear.input.first().cloned().unwrap_or_default();
    // Down from the linear layer's input through reshapes and no-ops.
    while let Some(p) = ix.producer(&t) {
        let n = &graph.node[p];
        if !(graph::is_default_domain(n) && PASS_THROUGH.contains(&n.op_type.as_str())) {
            break;
        }
        t = n.input.first().cloned().unwrap_or_default();
    }
    if ix.is_graph_input(&t) || ix.producer(&t).is_none() {
        return Err(not_found(format!(
            "the linear layer reads the model's input {t:?}"
        )));
    }
    Ok(t)
}

/// Names a node reads, including the outer-scope names its subgraphs
/// (`If`, `Loop`, `Scan` bodies) read.
fn node_reads(n: &pb::NodeProto, out: &mut Vec<String>) {
    out.extend(n.input.iter().filter(|x| !x.is_empty()).cloned());
    for a in &n.attribute {
        for g in a.g.iter().chain(a.graphs.iter()) {
            for sub in &g.node {
                node_reads(sub, out);
            }
        }
    }
}

/// A copy of `model` whose only output is `tensor` (a FLOAT tensor computed
/// by the graph), without the nodes, initializers and value infos that no
/// longer feed it. The model's inputs are kept.
pub fn cut_at(model: &pb::ModelProto, tensor: &str) -> Result<pb::ModelProto, ConvertError> {
    let graph = graph::graph(model)?;
    let ix = GraphIndex::new(graph);
    if ix.producer(tensor).is_none() {
        let why = if ix.is_graph_input(tensor) || ix.is_initializer(tensor) {
            "is an input or a constant, not a computed tensor"
        } else {
            "is not a tensor of the graph"
        };
        return Err(ConvertError::InvalidArgument(format!("{tensor:?} {why}")));
    }
    if let Some(&t) = graph::declared_elem_types(graph).get(tensor) {
        if t != pb::tensor_proto::DataType::Float as i32 {
            return Err(ConvertError::InvalidArgument(format!(
                "{tensor:?} is not a float tensor (ONNX data type {t})"
            )));
        }
    }
    // Nodes that feed the tensor.
    let mut keep = vec![false; graph.node.len()];
    let mut needed: HashSet<String> = HashSet::new();
    let mut stack = vec![tensor.to_string()];
    while let Some(t) = stack.pop() {
        if !needed.insert(t.clone()) {
            continue;
        }
        if let Some(p) = ix.producer(&t) {
            if !keep[p] {
                keep[p] = true;
                let mut reads = Vec::new();
                node_reads(&graph.node[p], &mut reads);
                stack.extend(reads);
            }
        }
    }
    let mut cut = model.clone();
    let g = graph::graph_mut(&mut cut)?;
    let mut k = keep.iter();
    g.node.retain(|_| *k.next().unwrap_or(&false));
    let produced: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let initializers: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    g.initializer.retain(|t| needed.contains(&t.name));
    g.sparse_initializer
        .retain(|s| s.values.as_ref().is_some_and(|v| needed.contains(&v.name)));
    // Real inputs stay (the model's signature); initializer inputs go with
    // their initializer.
    g.input
        .retain(|v| !initializers.contains(&v.name) || needed.contains(&v.name));
    let declared = graph.value_info.iter().find(|v| v.name == tensor).cloned();
    g.value_info
        .retain(|v| v.name != tensor && produced.contains(v.name.as_str()));
    let mut out = declared.unwrap_or_else(|| graph::float_value_info(tensor));
    if let Some(pb::type_proto::Value::TensorType(t)) =
        out.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = pb::tensor_proto::DataType::Float as i32;
    }
    g.output = vec![out];
    graph::check_topological(g)?;
    Ok(cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{decode, f32_tensor, make_node};
    use std::path::Path;

    fn fixture(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/models")
            .join(name);
        std::fs::read(p).unwrap()
    }

    #[test]
    fn shufflenet_features_are_the_pooled_611() {
        // f32: ReduceMean → 611 → Clip → MatMul → Clip → Add(fc.bias).
        let m = decode(&fixture("shufflenet-v2-12-f32.onnx")).unwrap();
        assert_eq!(find_features(&m).unwrap(), "611");
        // QDQ: ReduceMean → 611 → Q → DQ → MatMul → Q → DQ → Add.
        let q = decode(&fixture("shufflenet-v2-12-qdq.onnx")).unwrap();
        assert_eq!(find_features(&q).unwrap(), "611");
    }

    #[test]
    fn cut_keeps_only_what_feeds_the_tensor() {
        let m = decode(&fixture("shufflenet-v2-12-f32.onnx")).unwrap();
        let full = graph::graph(&m).unwrap();
        let cut = cut_at(&m, "611").unwrap();
        let g = graph::graph(&cut).unwrap();
        assert_eq!(g.output.len(), 1);
        assert_eq!(g.output[0].name, "611");
        assert_eq!(g.node.last().unwrap().op_type, "ReduceMean");
        assert_eq!(g.node.len(), full.node.len() - 4);
        assert!(!g
            .initializer
            .iter()
            .any(|t| t.name.starts_with("fc.") || t.name.starts_with("611_Gemm")));
        assert_eq!(g.input.len(), 1);
        assert_eq!(g.input[0].name, "input");
        // Every initializer left is read by a node.
        let read: HashSet<&str> = g
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .collect();
        assert!(g.initializer.iter().all(|t| read.contains(t.name.as_str())));
        // Unknown, constant and input names are refused.
        for bad in ["nope", "input", "fc.weight_dequantized"] {
            assert!(matches!(
                cut_at(&m, bad),
                Err(ConvertError::InvalidArgument(_))
            ));
        }
    }

    fn vi(name: &str) -> pb::ValueInfoProto {
        graph::float_value_info(name)
    }

    fn tiny(nodes: Vec<pb::NodeProto>, inits: Vec<pb::TensorProto>) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: 7,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                node: nodes,
                initializer: inits,
                input: vec![vi("x")],
                output: vec![vi("y")],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resnet_style_head_gives_the_pool_output() {
        let m = tiny(
            vec![
                make_node("Relu", "r", &["x"], &["act"], vec![]),
                make_node("GlobalAveragePool", "p", &["act"], &["pool"], vec![]),
                make_node("Flatten", "f", &["pool"], &["flat"], vec![]),
                make_node("Gemm", "g", &["flat", "w", "b"], &["logits"], vec![]),
                make_node("Softmax", "s", &["logits"], &["y"], vec![]),
            ],
            vec![
                f32_tensor("w", &[2, 3], &[0.0; 6]),
                f32_tensor("b", &[2], &[0.0; 2]),
            ],
        );
        assert_eq!(find_features(&m).unwrap(), "pool");
    }

    #[test]
    fn a_head_without_a_linear_layer_is_refused() {
        // SqueezeNet-style: a 1x1 convolution then pooling.
        let m = tiny(
            vec![
                make_node("Conv", "c", &["x", "w"], &["conv"], vec![]),
                make_node("GlobalAveragePool", "p", &["conv"], &["pool"], vec![]),
                make_node("Flatten", "f", &["pool"], &["y"], vec![]),
            ],
            vec![f32_tensor("w", &[2, 3, 1, 1], &[0.0; 6])],
        );
        let err = find_features(&m).unwrap_err().to_string();
        assert!(err.contains("GlobalAveragePool"), "{err}");
        // A linear layer straight on the input has no features to cut.
        let m = tiny(
            vec![make_node("MatMul", "m", &["x", "w"], &["y"], vec![])],
            vec![f32_tensor("w", &[3, 2], &[0.0; 6])],
        );
        assert!(find_features(&m).is_err());
    }
}

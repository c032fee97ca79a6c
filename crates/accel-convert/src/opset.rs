//! Default-domain opset upgrade to 13.
//!
//! Per-channel `DequantizeLinear(axis)` needs opset 13 (QDQ at all needs 10).
//! Between opsets 10 and 13 most operators only gained element types; the few
//! whose signature changed are rewritten here, as ONNX's own version
//! converter does (`Clip`/`Pad` 10→11 and `Dropout` 11→12: attributes become
//! inputs; `Split`, `Squeeze`, `Unsqueeze`, `ReduceSum` 12→13: `split`/`axes`
//! become inputs; `Softmax`/`LogSoftmax`/`Hardmax` 12→13 changed meaning and
//! are accepted only where both meanings agree). Every other operator must be
//! on an explicit list of unchanged ones; anything else is refused rather
//! than guessed.

use crate::error::ConvertError;
use crate::graph::{self, pb, Names};

/// The opset the converter targets.
pub const TARGET: i64 = 13;

/// The lowest default-domain opset the converter accepts.
pub const MIN: i64 = 10;

/// The lowest IR version that goes with opset 13.
const MIN_IR_VERSION: i64 = 7;

/// Operators whose inference semantics and signature are the same in every
/// default-domain opset from 10 to 13 (ONNX's version converter treats them
/// as "compatible").
const UNCHANGED: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "Cos",
    "Cosh",
    "DepthToSpace",
    "DequantizeLinear",
    "Div",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "EyeLike",
    "Flatten",
    "Floor",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "Greater",
    "HardSigmoid",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LeakyRelu",
    "Less",
    "Log",
    "LpNormalization",
    "LpPool",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "Mean",
    "MeanVarianceNormalization",
    "Min",
    "Mod",
    "Mul",
    "Neg",
    "NonZero",
    "Not",
    "Or",
    "PRelu",
    "Pow",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Selu",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Size",
    "Slice",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Sqrt",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Where",
    "Xor",
];

/// Operators that only exist from opset 11 or 12 on and did not change up
/// to 13 (they cannot appear in an older model).
const UNCHANGED_SINCE_11: &[&str] = &[
    "BitShift",
    "Celu",
    "Compress",
    "CumSum",
    "Det",
    "DynamicQuantizeLinear",
    "Einsum",
    "GatherElements",
    "GatherND",
    "GreaterOrEqual",
    "LessOrEqual",
    "Range",
    "Round",
    "ScatterElements",
    "ScatterND",
];

/// Non-default domains passed through untouched (their operators do not
/// depend on the default-domain opset).
const KNOWN_DOMAINS: &[&str] = &["com.microsoft", "ai.onnx.ml"];

/// The default-domain (`""` / `ai.onnx`) opset the model imports.
pub fn default_opset(model: &pb::ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
}

/// Raises the default-domain opset to 13 (and `ir_version` to at least 7)
/// when it is lower, rewriting the operators whose signature changed.
/// Returns whether the graph was changed. A model already at 13 or above is
/// left as it is (only `ir_version` is raised if needed).
pub fn upgrade_to_13(model: &mut pb::ModelProto) -> Result<bool, ConvertError> {
    let from = default_opset(model).ok_or_else(|| {
        ConvertError::InvalidModel("the model imports no default-domain (ai.onnx) opset".into())
    })?;
    if from < MIN {
        return Err(ConvertError::Unsupported(format!(
            "the model uses opset {from}; the converter needs opset {MIN} or later \
             (convert it to opset {TARGET} first, e.g. with onnx.version_converter)"
        )));
    }
    if model.ir_version < MIN_IR_VERSION {
        model.ir_version = MIN_IR_VERSION;
    }
    if from >= TARGET {
        return Ok(false);
    }
    if let Some(f) = model.functions.first() {
        return Err(ConvertError::Unsupported(format!(
            "the model defines local functions ({}:{}); they cannot be moved to opset {TARGET}",
            f.domain, f.name
        )));
    }
    let graph = graph::graph_mut(model)?;
    let mut names = Names::of_graph(graph);
    let mut new_inits = Vec::new();
    let mut ranks = graph::declared_ranks(graph);
    for n in graph.node.iter().filter(|n| graph::is_default_domain(n)) {
        // Outputs whose rank does not depend on the input's.
        if matches!(n.op_type.as_str(), "Flatten" | "Gemm") {
            if let Some(o) = n.output.first() {
                ranks.entry(o.clone()).or_insert(2);
            }
        }
    }
    for node in &mut graph.node {
        upgrade_node(node, from, &ranks, &mut names, &mut new_inits)?;
    }
    graph.initializer.extend(new_inits);
    for o in &mut model.opset_import {
        if o.domain.is_empty() || o.domain == "ai.onnx" {
            o.version = TARGET;
        }
    }
    Ok(true)
}

fn cannot(node: &pb::NodeProto, why: &str) -> ConvertError {
    ConvertError::Unsupported(format!(
        "op {} (node {:?}) cannot be moved to opset {TARGET}{why}",
        node.op_type, node.name
    ))
}

/// Base for the names of new initializers: the node's name, else its first
/// output.
fn base_name(node: &pb::NodeProto) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else {
        node.output.first().cloned().unwrap_or_default()
    }
}

/// Removes attribute `name` from `node` and returns it.
fn take_attr(node: &mut pb::NodeProto, name: &str) -> Option<pb::AttributeProto> {
    let i = node.attribute.iter().position(|a| a.name == name)?;
    Some(node.attribute.remove(i))
}

/// Sets input `slot` of `node`, padding skipped optional inputs with "".
fn set_input(node: &mut pb::NodeProto, slot: usize, name: String) {
    while node.input.len() <= slot {
        node.input.push(String::new());
    }
    node.input[slot] = name;
}

fn upgrade_node(
    node: &mut pb::NodeProto,
    from: i64,
    ranks: &std::collections::HashMap<String, usize>,
    names: &mut Names,
    inits: &mut Vec<pb::TensorProto>,
) -> Result<(), ConvertError> {
    if !graph::is_default_domain(node) {
        if KNOWN_DOMAINS.contains(&node.domain.as_str()) {
            return Ok(());
        }
        return Err(ConvertError::Unsupported(format!(
            "op {}:{} (node {:?}) is in a domain the converter does not know",
            node.domain, node.op_type, node.name
        )));
    }
    if node
        .attribute
        .iter()
        .any(|a| a.g.is_some() || !a.graphs.is_empty())
    {
        return Err(cannot(node, ": it has subgraphs"));
    }
    let op = node.op_type.as_str();
    match op {
        "Split" => {
            if let Some(a) = take_attr(node, "split") {
                let name = names.fresh(&format!("{}_split", base_name(node)));
                inits.push(graph::int64_tensor(&name, &[a.ints.len() as i64], &a.ints));
                set_input(node, 1, name);
            }
        }
        "Squeeze" | "Unsqueeze" | "ReduceSum" => {
            if let Some(a) = take_attr(node, "axes") {
                let name = names.fresh(&format!("{}_axes", base_name(node)));
                inits.push(graph::int64_tensor(&name, &[a.ints.len() as i64], &a.ints));
                set_input(node, 1, name);
            }
        }
        "Clip" if from < 11 => {
            for (attr, slot) in [("min", 1), ("max", 2)] {
                if let Some(a) = take_attr(node, attr) {
                    let name = names.fresh(&format!("{}_{attr}", base_name(node)));
                    inits.push(graph::f32_tensor(&name, &[], &[a.f]));
                    set_input(node, slot, name);
                }
            }
        }
        "Clip" => {}
        "Pad" if from < 11 => {
            let pads = take_attr(node, "pads").ok_or_else(|| cannot(node, ": no pads"))?;
            let value = take_attr(node, "value").map_or(0.0, |a| a.f);
            let name = names.fresh(&format!("{}_pads", base_name(node)));
            inits.push(graph::int64_tensor(
                &name,
                &[pads.ints.len() as i64],
                &pads.ints,
            ));
            set_input(node, 1, name);
            let mode = graph::attr(node, "mode").map(|a| a.s.as_slice());
            if mode.is_none() || mode == Some(b"constant") {
                let name = names.fresh(&format!("{}_value", base_name(node)));
                inits.push(graph::f32_tensor(&name, &[], &[value]));
                set_input(node, 2, name);
            }
        }
        "Pad" => {}
        "Dropout" if from < 12 => {
            if let Some(a) = take_attr(node, "ratio") {
                let name = names.fresh(&format!("{}_ratio", base_name(node)));
                inits.push(graph::f32_tensor(&name, &[], &[a.f]));
                set_input(node, 1, name);
            }
        }
        "Dropout" => {}
        "Resize" if from < 11 => {
            return Err(cannot(
                node,
                ": Resize-10 has other coordinate semantics (convert the model to opset 11+ first)",
            ))
        }
        "Resize" => {}
        "Softmax" | "LogSoftmax" | "Hardmax" => {
            // Up to 12 the input is flattened to 2-D at `axis` (default 1);
            // from 13 the op runs along `axis` (default -1). Same meaning
            // only when `axis` is the last dimension.
            let axis = graph::attr(node, "axis").map(|a| a.i);
            let rank = node.input.first().and_then(|x| ranks.get(x)).copied();
            let last = match (axis, rank) {
                (Some(-1), _) => true,
                (a, Some(r)) => {
                    let a = a.unwrap_or(1);
                    let a = if a < 0 { a + r as i64 } else { a };
                    a == r as i64 - 1
                }
                _ => false,
            };
            if !last {
                return Err(cannot(
                    node,
                    ": its meaning changed in opset 13 and its axis is not known to be the last \
                     dimension",
                ));
            }
            if axis.is_none() {
                node.attribute.push(graph::make_attr_int("axis", -1));
            }
        }
        _ if UNCHANGED.contains(&op) || UNCHANGED_SINCE_11.contains(&op) => {}
        _ => return Err(cannot(node, "")),
    }
    Ok(())
}

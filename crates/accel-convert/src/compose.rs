//! A featurizer and a trained head composed into one classifier:
//! `features → Flatten(axis=1) → Gemm(W, b, transB=1) → Softmax(axis=1)`,
//! output [`PROBABILITIES`] `[N, classes]`.

use crate::error::ConvertError;
use crate::graph::{self, f32_tensor, make_attr_int, make_node, pb, Names};
use crate::opset::default_opset;
use crate::train::LinearHead;

/// The composed model's output.
pub const PROBABILITIES: &str = "probabilities";

/// The lowest default-domain opset the head is written for (`Gemm` with a
/// broadcast bias; `Flatten` and a 2-D `Softmax(axis=1)` mean the same in
/// every opset since).
const MIN_OPSET: i64 = 7;

/// Appends `head` to `featurizer`, a model whose only output is the
/// feature tensor (see [`crate::features::cut_at`]). The features are
/// flattened from axis 1, so `[N, C]` and `[N, C, 1, 1]` both work; their
/// size per item must be `head.features` (checked here where the graph
/// declares it, else by the engine).
pub fn compose(
    featurizer: &pb::ModelProto,
    head: &LinearHead,
) -> Result<pb::ModelProto, ConvertError> {
    if head.weights.len() != head.classes * head.features || head.bias.len() != head.classes {
        return Err(ConvertError::InvalidArgument(format!(
            "the head has {} weights and {} biases for {} classes × {} features",
            head.weights.len(),
            head.bias.len(),
            head.classes,
            head.features
        )));
    }
    let mut model = featurizer.clone();
    match default_opset(&model) {
        Some(v) if v < MIN_OPSET => {
            return Err(ConvertError::Unsupported(format!(
            "the featurizer uses opset {v}; the classifier head needs opset {MIN_OPSET} or later"
        )))
        }
        Some(_) => {}
        None => model.opset_import.push(pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }),
    }
    let g = graph::graph_mut(&mut model)?;
    if g.output.len() != 1 {
        return Err(ConvertError::InvalidArgument(format!(
            "the featurizer must have exactly one output (the features), not {}",
            g.output.len()
        )));
    }
    let features = g.output[0].name.clone();
    if let Some(size) = per_item_size(&g.output[0]) {
        if size != head.features {
            return Err(ConvertError::InvalidArgument(format!(
                "{features:?} has {size} values per item, the head takes {}",
                head.features
            )));
        }
    }
    let mut names = Names::of_graph(g);
    if names.fresh(PROBABILITIES) != PROBABILITIES {
        return Err(ConvertError::InvalidModel(format!(
            "the featurizer already has a tensor called {PROBABILITIES:?}"
        )));
    }
    let flat = names.fresh(&format!("{features}_flat"));
    let weight = names.fresh("head.weight");
    let bias = names.fresh("head.bias");
    let logits = names.fresh("head.logits");
    let (n_flatten, n_gemm, n_softmax) = (
        names.fresh("head_flatten"),
        names.fresh("head_gemm"),
        names.fresh("head_softmax"),
    );
    let (k, d) = (head.classes as i64, head.features as i64);
    g.initializer
        .push(f32_tensor(&weight, &[k, d], &head.weights));
    g.initializer.push(f32_tensor(&bias, &[k], &head.bias));
    g.node.push(make_node(
        "Flatten",
        &n_flatten,
        &[&features],
        &[&flat],
        vec![make_attr_int("axis", 1)],
    ));
    g.node.push(make_node(
        "Gemm",
        &n_gemm,
        &[&flat, &weight, &bias],
        &[&logits],
        vec![make_attr_int("transB", 1)],
    ));
    g.node.push(make_node(
        "Softmax",
        &n_softmax,
        &[&logits],
        &[PROBABILITIES],
        vec![make_attr_int("axis", 1)],
    ));
    // [N, classes], N as the input declares it.
    let batch = g
        .input
        .iter()
        .find(|v| !g.initializer.iter().any(|t| t.name == v.name))
        .and_then(|v| shape_of(v))
        .and_then(|s| s.dim.first().cloned())
        .unwrap_or_default();
    let mut out = graph::float_value_info(PROBABILITIES);
    if let Some(pb::type_proto::Value::TensorType(t)) =
        out.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape = Some(pb::TensorShapeProto {
            dim: vec![
                batch,
                pb::tensor_shape_proto::Dimension {
                    value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(k)),
                    ..Default::default()
                },
            ],
        });
    }
    g.output = vec![out];
    graph::check_topological(g)?;
    Ok(model)
}

fn shape_of(v: &pb::ValueInfoProto) -> Option<&pb::TensorShapeProto> {
    match v.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => t.shape.as_ref(),
        _ => None,
    }
}

/// The product of dims 1.. when all are known.
fn per_item_size(v: &pb::ValueInfoProto) -> Option<usize> {
    let s = shape_of(v)?;
    if s.dim.is_empty() {
        return None;
    }
    s.dim[1..].iter().try_fold(1usize, |acc, d| match d.value {
        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
            acc.checked_mul(v as usize)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{decode, encode};

    fn featurizer(out_dims: Option<&[i64]>) -> pb::ModelProto {
        use pb::tensor_shape_proto::{dimension::Value, Dimension};
        let mut out = graph::float_value_info("pool");
        if let (Some(dims), Some(pb::type_proto::Value::TensorType(t))) =
            (out_dims, out.r#type.as_mut().and_then(|t| t.value.as_mut()))
        {
            t.shape = Some(pb::TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|&d| Dimension {
                        value: Some(Value::DimValue(d)),
                        ..Default::default()
                    })
                    .collect(),
            });
        }
        pb::ModelProto {
            ir_version: 7,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 12,
            }],
            graph: Some(pb::GraphProto {
                node: vec![make_node("Relu", "r", &["x"], &["pool"], vec![])],
                input: vec![graph::float_value_info("x")],
                output: vec![out],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn head() -> LinearHead {
        LinearHead {
            classes: 2,
            features: 3,
            weights: vec![1.0, 0.0, -1.0, 0.5, 0.5, 0.5],
            bias: vec![0.1, -0.1],
        }
    }

    #[test]
    fn appends_flatten_gemm_softmax() {
        let m = compose(&featurizer(Some(&[1, 3, 1, 1])), &head()).unwrap();
        let m = decode(&encode(&m)).unwrap();
        let g = graph::graph(&m).unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Relu", "Flatten", "Gemm", "Softmax"]);
        assert_eq!(g.output.len(), 1);
        assert_eq!(g.output[0].name, PROBABILITIES);
        let gemm = &g.node[2];
        assert_eq!(graph::attr_int(gemm, "transB", 0), 1);
        let w = g
            .initializer
            .iter()
            .find(|t| t.name == gemm.input[1])
            .unwrap();
        assert_eq!(w.dims, [2, 3]);
        assert_eq!(graph::tensor_f32(w).unwrap(), head().weights);
        assert_eq!(graph::attr_int(&g.node[3], "axis", -1), 1);
        assert_eq!(default_opset(&m), Some(12));
    }

    #[test]
    fn refuses_mismatches() {
        let err = compose(&featurizer(Some(&[1, 4])), &head()).unwrap_err();
        assert!(err.to_string().contains("4 values per item"), "{err}");
        let mut bad = head();
        bad.bias.pop();
        assert!(compose(&featurizer(None), &bad).is_err());
        let mut old = featurizer(None);
        old.opset_import[0].version = 6;
        assert!(matches!(
            compose(&old, &head()),
            Err(ConvertError::Unsupported(_))
        ));
    }
}

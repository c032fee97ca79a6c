//! Building small ONNX graphs in tests (accel-proto's generated types).

use accel_proto::onnx;

pub fn dims(d: &[Option<i64>]) -> Option<onnx::TypeProto> {
    use onnx::tensor_shape_proto::{dimension::Value, Dimension};
    Some(onnx::TypeProto {
        value: Some(onnx::type_proto::Value::TensorType(
            onnx::type_proto::Tensor {
                elem_type: 1,
                shape: Some(onnx::TensorShapeProto {
                    dim: d
                        .iter()
                        .map(|v| Dimension {
                            value: Some(match v {
                                Some(n) => Value::DimValue(*n),
                                None => Value::DimParam("N".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            },
        )),
        ..Default::default()
    })
}

pub fn value_info(name: &str, d: &[Option<i64>]) -> onnx::ValueInfoProto {
    onnx::ValueInfoProto {
        name: name.into(),
        r#type: dims(d),
        ..Default::default()
    }
}

pub fn constant(name: &str, shape: &[i64], data: Vec<f32>) -> onnx::TensorProto {
    onnx::TensorProto {
        name: name.into(),
        dims: shape.to_vec(),
        data_type: 1,
        float_data: data,
        ..Default::default()
    }
}

pub fn node(op: &str, inputs: &[&str], output: &str) -> onnx::NodeProto {
    onnx::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        ..Default::default()
    }
}

/// An opset-13 model of one graph, encoded.
pub fn model(
    name: &str,
    graph: (Vec<onnx::NodeProto>, Vec<onnx::TensorProto>),
    input: onnx::ValueInfoProto,
    output: Vec<onnx::ValueInfoProto>,
) -> Vec<u8> {
    use prost::Message;
    let (node, initializer) = graph;
    onnx::ModelProto {
        ir_version: 7,
        opset_import: vec![onnx::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "accel-tests".into(),
        graph: Some(onnx::GraphProto {
            name: name.into(),
            node,
            initializer,
            input: vec![input],
            output,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

//! Shared helpers: fixtures, ONNX Runtime, preprocessing, small model
//! builders, comparisons.

#![allow(dead_code)]

use accel_convert::graph::pb;
use accel_core::spec::{ChannelOrder, Preset};
use accel_core::Tensor;
use accel_runtime::engine::onnxruntime::{OrtBackend, SearchPaths};
use accel_runtime::engine::{Backend, LoadOptions, Plan};
use accel_runtime::image::{decode_rgb, preprocess_into};
use accel_runtime::Limits;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(root().join("fixtures").join(rel)).unwrap()
}

pub fn shufflenet() -> Vec<u8> {
    fixture("models/shufflenet-v2-12-f32.onnx")
}

pub fn refs() -> &'static serde_json::Value {
    static REFS: OnceLock<serde_json::Value> = OnceLock::new();
    REFS.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/refs/quant_refs.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    })
}

/// ONNX Runtime, found as `accel-runtime`'s tests find it.
pub fn ort() -> &'static OrtBackend {
    static ORT: OnceLock<OrtBackend> = OnceLock::new();
    ORT.get_or_init(|| {
        let home = std::env::var_os("ACCEL_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".accel")));
        let search = SearchPaths {
            dylib_path: std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
            engines_dir: home.map(|h| h.join("engines")),
            python: Some("python3".into()),
        };
        OrtBackend::init(&search).unwrap_or_else(|e| {
            panic!(
                "this test needs ONNX Runtime: {e}\n\
                 provision it with `cargo run -p accel-cli -- engines install onnxruntime` \
                 (or set ORT_DYLIB_PATH); `scripts/test` does this for you"
            )
        })
    })
}

/// One intra-op thread: results reproducible bit for bit.
pub fn one_thread() -> LoadOptions {
    LoadOptions {
        threads: 1,
        ..LoadOptions::default()
    }
}

pub fn load(model: &[u8], options: &LoadOptions) -> Box<dyn Plan> {
    ort().load(model, options).unwrap()
}

/// The torchvision tensor of a fixture photo, preprocessed by
/// `accel_runtime` (NCHW `[1,3,224,224]`).
pub fn photo_tensor(photo: &str) -> Vec<f32> {
    let mut spec = Preset::Torchvision.spec().preprocess.unwrap();
    spec.set_channel_order(ChannelOrder::Rgb);
    let img = decode_rgb(&fixture(&format!("images/{photo}")), &Limits::default()).unwrap();
    let mut out = vec![0f32; 3 * 224 * 224];
    preprocess_into(&img, &spec, &mut out).unwrap();
    out
}

/// Every output of `plan` on one image tensor.
pub fn run_image(plan: &dyn Plan, input: &[f32]) -> Vec<Vec<f32>> {
    let t = Tensor::from_f32(vec![1, 3, 224, 224], input.to_vec()).unwrap();
    plan.run(&[t])
        .unwrap()
        .iter()
        .map(|o| o.as_f32().unwrap().to_vec())
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Distance in units in the last place between two finite f32 of the same
/// sign.
pub fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- small models built with the protobuf types --------------------------

pub fn vi(name: &str, elem: i32, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;

pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: format!("{op}_{}", outputs.first().copied().unwrap_or("")),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn with_ints(mut n: pb::NodeProto, name: &str, ints: &[i64]) -> pb::NodeProto {
    n.attribute.push(pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    });
    n
}

pub fn with_int(mut n: pb::NodeProto, name: &str, i: i64) -> pb::NodeProto {
    n.attribute.push(pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    });
    n
}

pub fn with_float(mut n: pb::NodeProto, name: &str, f: f32) -> pb::NodeProto {
    n.attribute.push(pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f,
        ..Default::default()
    });
    n
}

pub fn model(
    opset: i64,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: if opset >= 13 { 7 } else { 5 },
        producer_name: "accel-convert tests".into(),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(pb::GraphProto {
            name: "g".into(),
            node: nodes,
            initializer: initializers,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn op_counts(model: &pb::ModelProto) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for n in &model.graph.as_ref().unwrap().node {
        *out.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    out
}

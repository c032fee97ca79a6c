//! `graph` (ONNX I/O) and `opset` (upgrade to 13).

use crate::common::*;
use accel_convert::graph::{self, pb};
use accel_convert::opset;
use accel_convert::ConvertError;
use accel_core::Tensor;

const MODELS: [&str; 3] = [
    "shufflenet-v2-12-f32.onnx",
    "shufflenet-v2-12-qdq.onnx",
    "mobilenetv2-12-int8.onnx",
];

/// decode → encode → decode gives the same message for the three fixture
/// models, and ONNX Runtime gives bit-identical logits for the re-encoded
/// bytes (which differ: proto3 packs repeated scalars).
#[test]
fn round_trip_keeps_the_fixture_models() {
    let input = photo_tensor("skimage_chelsea.png");
    for name in MODELS {
        let bytes = fixture(&format!("models/{name}"));
        let m = graph::decode(&bytes).unwrap();
        let again = graph::encode(&m);
        assert_eq!(graph::decode(&again).unwrap(), m, "{name}");
        let want = run_image(load(&bytes, &one_thread()).as_ref(), &input);
        let got = run_image(load(&again, &one_thread()).as_ref(), &input);
        assert_eq!(got, want, "{name}: logits of the re-encoded model differ");
    }
}

#[test]
fn non_models_and_external_data_are_refused() {
    for bytes in [&b""[..], b"hello, I am text\n"] {
        let err = graph::decode(bytes).unwrap_err();
        assert!(matches!(err, ConvertError::InvalidModel(_)), "{err:?}");
    }
    let mut w = graph::f32_tensor("w", &[2], &[1.0, 2.0]);
    w.raw_data.clear();
    w.data_location = pb::tensor_proto::DataLocation::External as i32;
    w.external_data.push(pb::StringStringEntryProto {
        key: "location".into(),
        value: "weights.bin".into(),
    });
    let m = model(
        13,
        vec![node("Add", &["x", "w"], &["y"])],
        vec![w],
        vec![vi("x", FLOAT, &[2])],
        vec![vi("y", FLOAT, &[2])],
    );
    let err = graph::decode(&graph::encode(&m)).unwrap_err();
    assert!(matches!(err, ConvertError::Unsupported(_)), "{err:?}");
    assert!(err.to_string().contains("external"), "{err}");
}

#[test]
fn tensors_read_raw_and_typed_data_and_write_raw_data() {
    let raw = graph::f32_tensor("a", &[2, 2], &[1.0, -2.0, 3.5, 0.25]);
    assert_eq!(raw.raw_data.len(), 16);
    assert_eq!(graph::tensor_f32(&raw).unwrap(), [1.0, -2.0, 3.5, 0.25]);
    let typed = pb::TensorProto {
        name: "b".into(),
        dims: vec![3],
        data_type: FLOAT,
        float_data: vec![0.5, 1.5, -1.0],
        ..Default::default()
    };
    assert_eq!(graph::tensor_f32(&typed).unwrap(), [0.5, 1.5, -1.0]);
    let short = graph::f32_tensor("c", &[3], &[1.0, 2.0]);
    assert!(graph::tensor_f32(&short).is_err());
    assert_eq!(
        graph::int8_tensor("q", &[3], &[-128, 0, 127]).raw_data,
        [0x80, 0, 0x7f]
    );
    assert_eq!(
        graph::int32_tensor("b", &[1], &[-2]).raw_data,
        (-2i32).to_le_bytes()
    );
    let i = graph::int64_tensor("s", &[2], &[58, -1]);
    assert_eq!(graph::tensor_i64(&i).unwrap(), [58, -1]);
}

#[test]
fn index_names_and_added_outputs() {
    let m = graph::decode(&shufflenet()).unwrap();
    let g = m.graph.as_ref().unwrap();
    let ix = graph::GraphIndex::new(g);
    let first_conv = g.node.iter().position(|n| n.op_type == "Conv").unwrap();
    let x = &g.node[first_conv].input[0];
    assert_eq!(
        ix.producer(x),
        Some(0),
        "the first Clip writes the first Conv's input"
    );
    assert!(ix.consumers(x).contains(&first_conv));
    assert!(ix.initializer(g, &g.node[first_conv].input[1]).is_some());
    assert!(ix.is_graph_input("input") && ix.is_graph_output("output"));
    graph::check_topological(g).unwrap();

    let mut names = graph::Names::of_graph(g);
    assert_eq!(names.fresh("output"), "output_1");
    assert_eq!(names.fresh("output"), "output_2");
    assert_eq!(names.fresh("brand_new"), "brand_new");

    let mut m2 = m.clone();
    graph::add_outputs(&mut m2, &[x.clone(), "609".into()]).unwrap();
    let outs: Vec<&str> = m2
        .graph
        .as_ref()
        .unwrap()
        .output
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(outs, ["output", x.as_str(), "609"]);
    let err = graph::add_outputs(&mut m2, &["nope".into()]).unwrap_err();
    assert!(matches!(err, ConvertError::InvalidArgument(_)), "{err:?}");
}

/// The fixture (opset 12) moved to opset 13: every `Split` reads its sizes
/// from an int64 initializer instead of the `split` attribute, and ONNX
/// Runtime's logits are bit-identical.
#[test]
fn opset_upgrade_rewires_split_and_keeps_the_logits() {
    let bytes = shufflenet();
    let before = graph::decode(&bytes).unwrap();
    assert_eq!(opset::default_opset(&before), Some(12));
    let mut after = before.clone();
    assert!(opset::upgrade_to_13(&mut after).unwrap());
    assert_eq!(opset::default_opset(&after), Some(13));
    assert!(after.ir_version >= 7);
    let (g0, g1) = (
        before.graph.as_ref().unwrap(),
        after.graph.as_ref().unwrap(),
    );
    assert_eq!(g0.node.len(), g1.node.len());
    let mut splits = 0;
    for (n0, n1) in g0.node.iter().zip(&g1.node) {
        if n0.op_type != "Split" {
            assert_eq!(n0, n1, "only Split nodes change");
            continue;
        }
        splits += 1;
        let sizes = graph::attr_ints(n0, "split").unwrap().to_vec();
        assert!(graph::attr(n1, "split").is_none());
        assert_eq!(n1.input.len(), 2);
        let t = g1
            .initializer
            .iter()
            .find(|t| t.name == n1.input[1])
            .unwrap();
        assert_eq!(graph::tensor_i64(t).unwrap(), sizes);
        assert_eq!(
            graph::attr_int(n1, "axis", 0),
            graph::attr_int(n0, "axis", 0)
        );
    }
    assert_eq!(splits, 13);
    // Already at 13: nothing to do.
    let mut again = after.clone();
    assert!(!opset::upgrade_to_13(&mut again).unwrap());
    assert_eq!(again, after);

    for photo in ["skimage_chelsea.png", "sklearn_china.jpg"] {
        let input = photo_tensor(photo);
        let want = run_image(load(&bytes, &one_thread()).as_ref(), &input);
        let got = run_image(load(&graph::encode(&after), &one_thread()).as_ref(), &input);
        assert_eq!(got, want, "{photo}: logits changed by the opset upgrade");
    }
}

fn run_all(model: &pb::ModelProto, input: &[f32], shape: &[usize]) -> Vec<Vec<f32>> {
    let plan = load(&graph::encode(model), &one_thread());
    let t = Tensor::from_f32(shape.to_vec(), input.to_vec()).unwrap();
    plan.run(&[t])
        .unwrap()
        .iter()
        .map(|o| o.as_f32().unwrap().to_vec())
        .collect()
}

/// An opset-10 model using every rewrite (Clip and Pad attributes, Squeeze,
/// Unsqueeze and ReduceSum axes, Split sizes, Dropout ratio, a Softmax over
/// the last axis) gives the same outputs in ONNX Runtime after the upgrade.
#[test]
fn opset_10_rewrites_give_the_same_outputs() {
    let nodes = vec![
        with_float(
            with_float(node("Clip", &["x"], &["a"]), "min", -0.5),
            "max",
            0.5,
        ),
        with_float(
            with_ints(
                node("Pad", &["a"], &["b"]),
                "pads",
                &[0, 0, 0, 1, 0, 0, 0, 1],
            ),
            "value",
            0.25,
        ),
        with_ints(node("Squeeze", &["b"], &["c"]), "axes", &[2]),
        with_ints(node("Unsqueeze", &["c"], &["d"]), "axes", &[0]),
        with_int(
            with_ints(node("ReduceSum", &["d"], &["e"]), "axes", &[3]),
            "keepdims",
            1,
        ),
        with_int(
            with_ints(node("Split", &["d"], &["f", "g"]), "split", &[1, 2]),
            "axis",
            2,
        ),
        with_float(node("Dropout", &["g"], &["h"]), "ratio", 0.3),
        with_int(node("Flatten", &["h"], &["k"]), "axis", 1),
        node("Softmax", &["k"], &["s"]),
    ];
    let m10 = model(
        10,
        nodes,
        vec![],
        vec![vi("x", FLOAT, &[1, 3, 1, 4])],
        vec![
            vi("e", FLOAT, &[1, 1, 3, 1]),
            vi("f", FLOAT, &[1, 1, 1, 6]),
            vi("s", FLOAT, &[1, 12]),
        ],
    );
    let mut m13 = m10.clone();
    assert!(opset::upgrade_to_13(&mut m13).unwrap());
    let g = m13.graph.as_ref().unwrap();
    for n in &g.node {
        let moved = ["min", "max", "pads", "value", "axes", "split", "ratio"];
        assert!(
            n.attribute
                .iter()
                .all(|a| !moved.contains(&a.name.as_str())),
            "{} kept an attribute that opset 13 takes as an input",
            n.op_type
        );
    }
    let input = values(12, 7);
    let want = run_all(&m10, &input, &[1, 3, 1, 4]);
    let got = run_all(&m13, &input, &[1, 3, 1, 4]);
    assert_eq!(got, want);
}

#[test]
fn opset_upgrade_refuses_what_it_does_not_know() {
    let one = |opset: i64, n: pb::NodeProto, out_dims: &[i64]| {
        model(
            opset,
            vec![n],
            vec![],
            vec![vi("x", FLOAT, &[1, 2, 3])],
            vec![vi("y", FLOAT, out_dims)],
        )
    };
    let cases = [
        (one(9, node("Relu", &["x"], &["y"]), &[1, 2, 3]), "opset 9"),
        (
            one(12, node("Foo", &["x"], &["y"]), &[1, 2, 3]),
            "op Foo (node \"Foo_y\") cannot be moved to opset 13",
        ),
        (
            one(12, node("Upsample", &["x"], &["y"]), &[1, 2, 3]),
            "cannot be moved to opset 13",
        ),
        (
            // Softmax over axis 1 of a rank-3 tensor: flattening (≤ 12)
            // and per-axis (13) differ.
            one(12, node("Softmax", &["x"], &["y"]), &[1, 2, 3]),
            "meaning changed",
        ),
    ];
    for (m, needle) in cases {
        let err = opset::upgrade_to_13(&mut m.clone()).unwrap_err();
        assert!(matches!(err, ConvertError::Unsupported(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    let mut foreign = one(12, node("Foo", &["x"], &["y"]), &[1, 2, 3]);
    foreign.graph.as_mut().unwrap().node[0].domain = "com.example".into();
    let err = opset::upgrade_to_13(&mut foreign).unwrap_err();
    assert!(err.to_string().contains("com.example:Foo"), "{err}");
    // Softmax over the last axis is the same in both opsets.
    let mut last = one(
        12,
        with_int(node("Softmax", &["x"], &["y"]), "axis", 2),
        &[1, 2, 3],
    );
    assert!(opset::upgrade_to_13(&mut last).unwrap());
}

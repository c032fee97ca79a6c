//! `quantize` against ONNX Runtime's own `quantize_static` (QDQ, per
//! channel, S8S8, MinMax) on the float ShuffleNetV2: fed the very ranges
//! ORT's calibrator measured (`refs/quant_refs.json`), our quantizer must
//! write the same int8 weights, scales and zero points, and a model that ORT
//! runs (fused to integer kernels) with ORT's answers.

use crate::common::*;
use accel_convert::graph::{self, pb};
use accel_convert::quantize::{self, QuantPlan, Quantized, Range};
use accel_convert::ConvertError;
use accel_runtime::engine::{LoadOptions, OptimizedCache};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// ORT's calibrated ranges.
fn ort_ranges() -> BTreeMap<String, Range> {
    refs()["ranges"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let r = v.as_array().unwrap();
            let f = |i: usize| r[i].as_f64().unwrap() as f32;
            (
                k.clone(),
                Range {
                    min: f(0),
                    max: f(1),
                },
            )
        })
        .collect()
}

fn plan() -> &'static QuantPlan {
    static PLAN: OnceLock<QuantPlan> = OnceLock::new();
    PLAN.get_or_init(|| quantize::prepare(&shufflenet()).unwrap())
}

/// Our QDQ ShuffleNetV2 made from ORT's ranges.
fn ours() -> &'static (Quantized, pb::ModelProto) {
    static OURS: OnceLock<(Quantized, pb::ModelProto)> = OnceLock::new();
    OURS.get_or_init(|| {
        let q = plan().quantize(&ort_ranges()).unwrap();
        let m = graph::decode(&q.model).unwrap();
        (q, m)
    })
}

fn initializers(m: &pb::ModelProto) -> HashMap<&str, &pb::TensorProto> {
    m.graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect()
}

fn scalar_i8(t: &pb::TensorProto) -> i8 {
    assert_eq!(t.data_type, pb::tensor_proto::DataType::Int8 as i32);
    assert_eq!(t.raw_data.len(), 1, "{}", t.name);
    t.raw_data[0] as i8
}

/// Every Conv/MatMul weight: the same int8 bytes as ORT's (sha256), the
/// same per-channel scales (≤ 1 ulp; in practice equal), zero points 0, the
/// same axis. Every bias: the same int32 bytes and scales.
#[test]
fn weights_and_biases_match_onnxruntime() {
    let (_, m) = ours();
    let inits = initializers(m);
    let nodes = &m.graph.as_ref().unwrap().node;
    let mut checked = 0;
    for (w, r) in refs()["weights"].as_object().unwrap() {
        let Some(axis) = r["axis"].as_i64() else {
            continue; // ORT's per-tensor Add operand: an output op we keep float
        };
        let q = inits[format!("{w}_quantized").as_str()];
        assert_eq!(q.data_type, pb::tensor_proto::DataType::Int8 as i32);
        let dims: Vec<i64> = serde_json::from_value(r["dims"].clone()).unwrap();
        assert_eq!(q.dims, dims, "{w}");
        assert_eq!(
            sha256_hex(&q.raw_data),
            r["sha256"].as_str().unwrap(),
            "{w}: int8 bytes differ"
        );
        let scales = graph::tensor_f32(inits[format!("{w}_scale").as_str()]).unwrap();
        let want: Vec<f32> = r["scales"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(scales.len(), want.len(), "{w}");
        for (c, (a, b)) in scales.iter().zip(&want).enumerate() {
            assert!(ulps(*a, *b) <= 1, "{w}[{c}]: scale {a} vs ORT {b}");
        }
        let zp = inits[format!("{w}_zero_point").as_str()];
        assert!(zp.raw_data.iter().all(|&b| b == 0) && r["zero_points_zero"] == true);
        let dq = nodes
            .iter()
            .find(|n| n.op_type == "DequantizeLinear" && n.input[0] == q.name)
            .unwrap();
        assert_eq!(graph::attr_int(dq, "axis", -99), axis, "{w}");
        checked += 1;
    }
    assert_eq!(checked, 57, "56 Conv weights and the MatMul weight");

    let mut biases = 0;
    for (b, r) in refs()["biases"].as_object().unwrap() {
        let q = inits[format!("{b}_quantized").as_str()];
        assert_eq!(
            sha256_hex(&q.raw_data),
            r["sha256"].as_str().unwrap(),
            "{b}: int32 bytes differ"
        );
        let s = inits[format!("{b}_quantized_scale").as_str()];
        assert_eq!(
            sha256_hex(&s.raw_data),
            r["scales_sha256"].as_str().unwrap(),
            "{b}: scales differ"
        );
        // The DequantizeLinear writes the bias's own name, as ORT's does.
        assert!(nodes
            .iter()
            .any(|n| n.output == [b.clone()] && n.op_type == "DequantizeLinear"));
        assert!(
            !inits.contains_key(b.as_str()),
            "{b}: float bias left behind"
        );
        biases += 1;
    }
    assert_eq!(biases, 56);
}

/// From ORT's ranges, every activation ORT quantizes gets ORT's scale and
/// zero point; ours are the same tensors except the graph output, which we
/// leave float.
#[test]
fn activation_parameters_match_onnxruntime() {
    let (_, m) = ours();
    let inits = initializers(m);
    let nodes = &m.graph.as_ref().unwrap().node;
    let ours: BTreeMap<&str, (f32, i8)> = nodes
        .iter()
        .filter(|n| n.op_type == "QuantizeLinear")
        .map(|n| {
            let s = graph::tensor_f32(inits[n.input[1].as_str()]).unwrap();
            assert_eq!(s.len(), 1);
            (
                n.input[0].as_str(),
                (s[0], scalar_i8(inits[n.input[2].as_str()])),
            )
        })
        .collect();
    let theirs = refs()["activations"].as_object().unwrap();
    for (t, r) in theirs {
        if t == "output_QuantizeLinear_Input" {
            assert!(
                !ours.contains_key("output"),
                "the graph output must stay float"
            );
            continue;
        }
        let (scale, zp) = ours
            .get(t.as_str())
            .unwrap_or_else(|| panic!("{t}: not quantized"));
        assert_eq!(*scale, r["scale"].as_f64().unwrap() as f32, "{t}: scale");
        assert_eq!(
            i64::from(*zp),
            r["zero_point"].as_i64().unwrap(),
            "{t}: zero point"
        );
    }
    assert_eq!(
        ours.len(),
        theirs.len() - 1,
        "tensors ORT does not quantize"
    );
    assert!(!nodes
        .iter()
        .any(|n| n.output.iter().any(|o| o == "output") && n.op_type == "DequantizeLinear"));
}

/// What was done, in numbers: 148 of the 150 Clips folded into their
/// producer (the one on the graph input and the one after ReduceMean have
/// no quantized input), all 56 Conv + the MatMul quantized, node counts as
/// ORT's model less its QDQ on the graph output.
#[test]
fn summary_and_node_counts() {
    let (q, m) = ours();
    let s = &q.summary;
    assert_eq!(s.activations, "int8 asymmetric per-tensor");
    assert_eq!(s.weights, "int8 symmetric per-channel");
    assert_eq!(s.removed_activations, 148);
    assert_eq!(s.quantized_ops["Conv"], 56);
    assert_eq!(s.quantized_ops["MatMul"], 1);
    assert_eq!(s.quantized_ops["Concat"], 16);
    assert_eq!(s.quantized_ops["Reshape"], 32);
    assert_eq!(s.quantized_ops["Transpose"], 16);
    assert_eq!(s.quantized_ops["Split"], 13);
    assert_eq!(s.quantized_ops["MaxPool"], 1);
    let float: BTreeMap<String, usize> = [("Add", 1), ("Clip", 2), ("ReduceMean", 1)]
        .map(|(k, v)| (k.to_string(), v))
        .into();
    assert_eq!(s.float_ops, float);

    let ours = op_counts(m);
    let theirs = &refs()["op_counts"];
    let n = |op: &str| theirs[op].as_u64().unwrap() as usize;
    assert_eq!(ours["QuantizeLinear"], n("QuantizeLinear") - 1);
    // Less the output's DQ and ORT's int8 copy of the last Add's bias.
    assert_eq!(ours["DequantizeLinear"], n("DequantizeLinear") - 2);
    for op in [
        "Conv",
        "Concat",
        "Reshape",
        "Transpose",
        "Split",
        "MaxPool",
        "MatMul",
        "Add",
        "ReduceMean",
        "Clip",
    ] {
        assert_eq!(ours[op], n(op), "{op}");
    }
    let g = m.graph.as_ref().unwrap();
    graph::check_topological(g).unwrap();
    assert_eq!(opset_of(m), 13);
    // Nothing dangles: every initializer is read.
    let read: std::collections::HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    for t in &g.initializer {
        assert!(read.contains(t.name.as_str()), "{} is never read", t.name);
    }
}

fn opset_of(m: &pb::ModelProto) -> i64 {
    accel_convert::opset::default_opset(m).unwrap()
}

/// The same plan and ranges give the same bytes.
#[test]
fn quantization_is_deterministic() {
    let again = quantize::prepare(&shufflenet()).unwrap();
    assert_eq!(again.tensors(), plan().tensors());
    let a = again.quantize(&ort_ranges()).unwrap();
    assert_eq!(a.model, ours().0.model);
    assert_eq!(a.summary, ours().0.summary);
}

#[test]
fn a_missing_range_is_an_invalid_argument_naming_it() {
    let mut ranges = ort_ranges();
    let t = plan().tensors()[3].clone();
    ranges.remove(&t);
    let err = plan().quantize(&ranges).unwrap_err();
    assert!(matches!(err, ConvertError::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains(&t), "{err}");
    let mut bad = ort_ranges();
    bad.insert(
        t.clone(),
        Range {
            min: f32::NAN,
            max: 1.0,
        },
    );
    let err = plan().quantize(&bad).unwrap_err();
    assert!(err.to_string().contains(&t), "{err}");
}

/// `tensors()` are ORT's calibrated tensors (less the ones ORT merges into
/// removed activations); the calibration model returns the model's own
/// output unchanged followed by those tensors, whose min/max on the 8
/// photos (our preprocessing) land close to ORT's (Pillow's).
#[test]
fn calibration_model_returns_the_tensors_to_measure() {
    let tensors = plan().tensors();
    assert_eq!(tensors.len(), 150);
    let ranges = ort_ranges();
    for t in tensors {
        assert!(ranges.contains_key(t), "{t}: ORT did not calibrate it");
    }
    let cal = load(&plan().calibration_model().unwrap(), &one_thread());
    let names: Vec<&str> = cal.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names[0], "output");
    assert_eq!(
        &names[1..],
        tensors.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let float = load(&shufflenet(), &one_thread());
    let mut seen: Vec<(f32, f32)> = vec![(f32::INFINITY, f32::NEG_INFINITY); tensors.len()];
    for photo in refs()["calibration_images"].as_array().unwrap() {
        let input = photo_tensor(photo.as_str().unwrap());
        let outs = run_image(cal.as_ref(), &input);
        let want = &run_image(float.as_ref(), &input)[0];
        assert_eq!(argmax(&outs[0]), argmax(want));
        assert!(cosine(&outs[0], want) > 0.99999);
        for (k, o) in outs[1..].iter().enumerate() {
            let (lo, hi) = o.iter().fold(seen[k], |(a, b), &v| (a.min(v), b.max(v)));
            seen[k] = (lo, hi);
        }
    }
    let mut worst = (0.0f32, "");
    for (t, (lo, hi)) in tensors.iter().zip(&seen) {
        let r = ranges[t];
        let span = (r.max - r.min).max(1e-6);
        let d = ((lo - r.min).abs().max((hi - r.max).abs())) / span;
        if d > worst.0 {
            worst = (d, t);
        }
    }
    eprintln!(
        "calibration: largest range difference vs ORT {:.4} of the span ({})",
        worst.0, worst.1
    );
    assert!(worst.0 < 0.05, "{worst:?}");
}

/// The Pillow tensor `accel-runtime`'s references hold for `photo` (the
/// bytes ORT's QDQ logits in `quant_refs.json` were computed on).
fn pillow_tensor(photo: &str) -> Vec<f32> {
    let path = root().join(format!(
        "crates/accel-runtime/tests/refs/{photo}.torchvision.f32"
    ));
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn ort_qdq_logits(photo: &str) -> (Vec<f32>, usize) {
    let r = &refs()["logits"][photo];
    let logits = serde_json::from_value(r["logits"].clone()).unwrap();
    (logits, r["top5"][0].as_u64().unwrap() as usize)
}

/// Our QDQ model, run by ONNX Runtime as Accel loads models, answers as
/// ORT's own QDQ model on the very same input tensors (Pillow's, for the
/// photos `accel-runtime` keeps them): same top-1, cosine ≥ 0.999 (measured
/// ≈ 0.99994: what remains is ORT quantizing the logits themselves and the
/// last Add's bias, which we keep float). And it is measurably not the
/// float model.
#[test]
fn qdq_model_agrees_with_onnxruntime_qdq_model() {
    let (q, _) = ours();
    let int8 = load(&q.model, &LoadOptions::default());
    let float = load(&shufflenet(), &LoadOptions::default());
    for photo in ["skimage_chelsea.png", "sklearn_china.jpg"] {
        let (want, top1) = ort_qdq_logits(photo);
        let input = pillow_tensor(photo);
        let got = &run_image(int8.as_ref(), &input)[0];
        let f = &run_image(float.as_ref(), &input)[0];
        let (c, cf) = (cosine(got, &want), cosine(f, &want));
        eprintln!(
            "{photo} (Pillow tensor): top-1 ours {} ORT {top1}; cosine vs ORT QDQ {c:.6} \
             (float model vs ORT QDQ {cf:.6}); max |ours - float| {:.3}",
            argmax(got),
            max_abs_diff(got, f)
        );
        assert_eq!(argmax(got), top1, "{photo}");
        assert!(c >= 0.999, "{photo}: cosine {c}");
        assert!(
            c > cf,
            "{photo}: closer to the float model than to ORT's QDQ model"
        );
        assert!(
            max_abs_diff(got, f) > 0.1,
            "{photo}: int8 logits equal the float ones"
        );
    }
}

/// The same through our own preprocessing (`accel_runtime`) on chelsea,
/// coffee and china: same top-1 as ORT's QDQ model. The cosine bound is
/// looser because the inputs differ: `accel_runtime`'s resize is within a
/// level or two of Pillow's, and int8 rounding amplifies that; ORT's own
/// QDQ model fed our tensors instead of Pillow's moves just as far (cosine
/// 0.9973 / 0.9959 / 0.9972 against itself, measured with the Python
/// package), ours 0.9972 / 0.9958 / 0.9971.
#[test]
fn qdq_model_agrees_with_onnxruntime_through_our_preprocessing() {
    let (q, _) = ours();
    let int8 = load(&q.model, &LoadOptions::default());
    for photo in refs()["logits"].as_object().unwrap().keys() {
        let (want, top1) = ort_qdq_logits(photo);
        let got = &run_image(int8.as_ref(), &photo_tensor(photo))[0];
        let c = cosine(got, &want);
        eprintln!(
            "{photo} (accel_runtime tensor): top-1 ours {} ORT {top1}; cosine {c:.6}",
            argmax(got)
        );
        assert_eq!(argmax(got), top1, "{photo}");
        assert!(c >= 0.99, "{photo}: cosine {c}");
    }
}

/// ONNX Runtime really runs our QDQ model on integer kernels: its optimized
/// model has as many QLinearConv / QLinearConcat / QLinearMatMul nodes as
/// it makes of its own QDQ model, so a silent float fallback cannot pass.
#[test]
fn onnxruntime_fuses_the_qdq_model() {
    let (q, _) = ours();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("accel-convert-fused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = LoadOptions {
        cache: Some(OptimizedCache {
            dir: dir.clone(),
            model_sha256: sha256_hex(&q.model),
        }),
        ..LoadOptions::default()
    };
    load(&q.model, &options);
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "onnx"))
        .expect("ONNX Runtime wrote no optimized model");
    let optimized = graph::decode(&std::fs::read(&file).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let ours = op_counts(&optimized);
    let theirs = &refs()["optimized_op_counts"];
    eprintln!("optimized: {ours:?}");
    for op in ["QLinearConv", "QLinearConcat", "QLinearMatMul"] {
        let want = theirs[op].as_u64().unwrap() as usize;
        assert!(want > 0);
        assert_eq!(ours.get(op).copied().unwrap_or(0), want, "{op}");
    }
}

// ---- small models -------------------------------------------------------

fn small(
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    out: &str,
    out_dims: &[i64],
) -> Vec<u8> {
    graph::encode(&model(
        13,
        nodes,
        inits,
        vec![vi("x", FLOAT, &[1, 4])],
        vec![vi(out, FLOAT, out_dims)],
    ))
}

fn full_ranges(plan: &QuantPlan, r: Range) -> BTreeMap<String, Range> {
    plan.tensors().iter().map(|t| (t.clone(), r)).collect()
}

/// Gemm with `transB` is quantized along axis 0 and its bias with
/// `x_scale·w_scale`; a Relu after it goes (its range is the Relu output's);
/// a Clip(1, 6) stays (its bounds do not hold 0, so the quantized range
/// cannot reproduce it); the graph input gets its QDQ pair first, the graph
/// output none; ORT runs the result close to the float model.
#[test]
fn small_model_rewiring() {
    let w = graph::f32_tensor("W", &[3, 4], &values(12, 1));
    let b = graph::f32_tensor("B", &[3], &[0.1, -0.2, 0.3]);
    let lo = graph::f32_tensor("lo", &[], &[1.0]);
    let hi = graph::f32_tensor("hi", &[], &[6.0]);
    let nodes = vec![
        with_int(node("Gemm", &["x", "W", "B"], &["g"]), "transB", 1),
        node("Relu", &["g"], &["r"]),
        node("Clip", &["r", "lo", "hi"], &["c"]),
        node("Reshape", &["c", "shape"], &["y"]),
    ];
    let shape = graph::int64_tensor("shape", &[2], &[1, 3]);
    let bytes = small(nodes, vec![w, b, lo, hi, shape], "y", &[1, 3]);
    let plan = quantize::prepare(&bytes).unwrap();
    assert_eq!(plan.tensors(), ["x", "r", "c"]);
    let q = plan
        .quantize(&full_ranges(
            &plan,
            Range {
                min: -4.0,
                max: 4.0,
            },
        ))
        .unwrap();
    assert_eq!(q.summary.removed_activations, 1);
    assert_eq!(q.summary.quantized_ops["Gemm"], 1);
    assert_eq!(q.summary.quantized_ops["Clip"], 1);
    // Its only reader is the graph output, which stays float.
    assert_eq!(q.summary.float_ops["Reshape"], 1);
    let m = graph::decode(&q.model).unwrap();
    let g = m.graph.as_ref().unwrap();
    let ops: Vec<(&str, &str)> = g
        .node
        .iter()
        .map(|n| (n.op_type.as_str(), n.name.as_str()))
        .collect();
    assert_eq!(
        ops,
        [
            ("QuantizeLinear", "x_QuantizeLinear"),
            ("DequantizeLinear", "x_DequantizeLinear"),
            ("DequantizeLinear", "W_DequantizeLinear"),
            ("DequantizeLinear", "B_DequantizeLinear"),
            ("Gemm", "Gemm_g"),
            ("QuantizeLinear", "r_QuantizeLinear"),
            ("DequantizeLinear", "r_DequantizeLinear"),
            ("Clip", "Clip_c"),
            ("QuantizeLinear", "c_QuantizeLinear"),
            ("DequantizeLinear", "c_DequantizeLinear"),
            ("Reshape", "Reshape_y"),
        ]
    );
    let gemm = &g.node[4];
    assert_eq!(
        gemm.input,
        [
            "x_DequantizeLinear_Output",
            "W_DequantizeLinear_Output",
            "B"
        ]
    );
    assert_eq!(
        gemm.output,
        ["r"],
        "the Gemm writes the removed Relu's output"
    );
    assert_eq!(graph::attr_int(&g.node[2], "axis", -1), 0);
    assert_eq!(g.node[10].output, ["y"], "the graph output stays float");
    let inits = initializers(&m);
    // Relu removed: r's range is clamped to [0, ∞) → [0, 4].
    let rs = graph::tensor_f32(inits["r_scale"]).unwrap()[0];
    assert_eq!(rs, (4.0f64 / 255.0) as f32);
    assert_eq!(scalar_i8(inits["r_zero_point"]), -128);
    assert!(!inits.contains_key("y_scale"));
    // Bias scale = x_scale · w_scale[m].
    let xs = graph::tensor_f32(inits["x_scale"]).unwrap()[0];
    let ws = graph::tensor_f32(inits["W_scale"]).unwrap();
    let bs = graph::tensor_f32(inits["B_quantized_scale"]).unwrap();
    for m in 0..3 {
        assert_eq!(bs[m], xs * ws[m]);
    }

    let float = load(&bytes, &one_thread());
    let int8 = load(&q.model, &one_thread());
    let x = [0.5f32, -0.25, 0.75, 1.0];
    let t = |v: &[f32]| accel_core::Tensor::from_f32(vec![1, 4], v.to_vec()).unwrap();
    let a = float.run(&[t(&x)]).unwrap()[0].as_f32().unwrap().to_vec();
    let b = int8.run(&[t(&x)]).unwrap()[0].as_f32().unwrap().to_vec();
    assert!(max_abs_diff(&a, &b) < 0.05, "{a:?} vs {b:?}");
}

/// A Clip whose input has a second reader, or whose output is the graph
/// output, is kept; an already-quantized model is refused.
#[test]
fn activations_that_cannot_go_stay() {
    let w = graph::f32_tensor("W", &[4, 3], &values(12, 2));
    let nodes = vec![
        node("MatMul", &["x", "W"], &["m"]),
        node("Relu", &["m"], &["r"]),
        node("Add", &["m", "r"], &["s"]),
        node("Relu", &["s"], &["y"]),
    ];
    let bytes = small(nodes, vec![w], "y", &[1, 3]);
    let plan = quantize::prepare(&bytes).unwrap();
    let q = plan
        .quantize(&full_ranges(
            &plan,
            Range {
                min: -1.0,
                max: 1.0,
            },
        ))
        .unwrap();
    assert_eq!(q.summary.removed_activations, 0);
    assert_eq!(q.summary.quantized_ops["MatMul"], 1);
    assert_eq!(q.summary.quantized_ops["Add"], 1);
    assert_eq!(
        q.summary.quantized_ops["Relu"], 1,
        "the first Relu runs on QDQ data"
    );
    assert_eq!(
        q.summary.float_ops["Relu"], 1,
        "the output Relu stays float"
    );
    load(&q.model, &one_thread());

    let qdq = fixture("models/shufflenet-v2-12-qdq.onnx");
    let err = quantize::prepare(&qdq).unwrap_err();
    assert!(matches!(err, ConvertError::Unsupported(_)), "{err:?}");
    assert!(err.to_string().contains("already quantized"), "{err}");
}

/// A residual block as ResNets have it, calibrated here on one input through
/// `calibration_model` (whose outputs include the graph input itself): both
/// ReLUs fold away, Conv on the graph input, the residual Add, the pooling
/// and the classifier are quantized, and ORT's result is close to float.
#[test]
fn residual_block_end_to_end() {
    let conv = |x: &str, w: &str, b: &str, y: &str, k: i64| {
        with_ints(
            with_ints(node("Conv", &[x, w, b], &[y]), "kernel_shape", &[k, k]),
            "pads",
            &[k / 2; 4],
        )
    };
    let nodes = vec![
        conv("x", "W1", "B1", "c1", 3),
        node("Relu", &["c1"], &["r1"]),
        conv("r1", "W2", "B2", "c2", 1),
        node("Add", &["c2", "r1"], &["s"]),
        node("Relu", &["s"], &["r2"]),
        node("GlobalAveragePool", &["r2"], &["p"]),
        node("Flatten", &["p"], &["f"]),
        with_int(node("Gemm", &["f", "W3", "B3"], &["y"]), "transB", 1),
    ];
    let inits = vec![
        graph::f32_tensor("W1", &[4, 2, 3, 3], &values(72, 3)),
        graph::f32_tensor("B1", &[4], &values(4, 4)),
        graph::f32_tensor("W2", &[4, 4, 1, 1], &values(16, 5)),
        graph::f32_tensor("B2", &[4], &values(4, 6)),
        graph::f32_tensor("W3", &[3, 4], &values(12, 7)),
        graph::f32_tensor("B3", &[3], &values(3, 8)),
    ];
    let bytes = graph::encode(&model(
        13,
        nodes,
        inits,
        vec![vi("x", FLOAT, &[1, 2, 5, 5])],
        vec![vi("y", FLOAT, &[1, 3])],
    ));
    let plan = quantize::prepare(&bytes).unwrap();
    assert_eq!(plan.tensors()[0], "x", "the graph input is quantized first");
    let x = values(50, 9);
    let t = || accel_core::Tensor::from_f32(vec![1, 2, 5, 5], x.clone()).unwrap();
    let cal = load(&plan.calibration_model().unwrap(), &one_thread());
    let outs = cal.run(&[t()]).unwrap();
    assert_eq!(outs.len(), 1 + plan.tensors().len());
    let ranges: BTreeMap<String, Range> = plan
        .tensors()
        .iter()
        .zip(&outs[1..])
        .map(|(name, o)| {
            let v = o.as_f32().unwrap();
            let min = v.iter().copied().fold(f32::INFINITY, f32::min);
            let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            (name.clone(), Range { min, max })
        })
        .collect();
    assert_eq!(
        ranges["x"].min,
        x.iter().copied().fold(f32::INFINITY, f32::min)
    );
    let q = plan.quantize(&ranges).unwrap();
    assert_eq!(q.summary.removed_activations, 2);
    let quantized: BTreeMap<String, usize> = [
        ("Add", 1),
        ("Conv", 2),
        ("Flatten", 1),
        ("Gemm", 1),
        ("GlobalAveragePool", 1),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into();
    assert_eq!(q.summary.quantized_ops, quantized);
    assert!(q.summary.float_ops.is_empty(), "{:?}", q.summary.float_ops);
    let m = graph::decode(&q.model).unwrap();
    let g = m.graph.as_ref().unwrap();
    assert_eq!(g.node[0].op_type, "QuantizeLinear");
    assert_eq!(g.node[0].input[0], "x");
    let a = load(&bytes, &one_thread()).run(&[t()]).unwrap()[0]
        .as_f32()
        .unwrap()
        .to_vec();
    let b = load(&q.model, &one_thread()).run(&[t()]).unwrap()[0]
        .as_f32()
        .unwrap()
        .to_vec();
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max_abs_diff(&a, &b) < 0.05 * scale, "{a:?} vs {b:?}");
}

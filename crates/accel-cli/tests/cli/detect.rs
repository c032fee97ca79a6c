//! CLI tests: SSD detection (issue 7). A graph with the seed's SSD-VGG 300
//! head layout and constant outputs is registered with the `ssd-vgg-300`
//! preset (its heads matched by size); `accel predict` and the TF Serving
//! REST endpoint must report the objects planted in those constants, with
//! the boxes computed here by hand from the seed's anchor and decoding
//! formulas (Balanca's SSD-TensorFlow `ssd_anchor_one_layer` and
//! `tf_ssd_bboxes_decode_layer`).

use super::graphs::{constant, model, node, value_info};
use super::*;
use accel_proto::onnx;
use base64::Engine as _;
use std::io::{Read, Write};

/// The seed's layers: feature size, step, sizes, anchors per cell.
const LAYERS: [(usize, f32, [f32; 2], usize); 6] = [
    (37, 8.0, [21.0, 45.0], 4),
    (19, 16.0, [45.0, 99.0], 6),
    (10, 32.0, [99.0, 153.0], 6),
    (5, 64.0, [153.0, 207.0], 6),
    (3, 100.0, [207.0, 261.0], 4),
    (1, 300.0, [261.0, 315.0], 4),
];
const CLASSES: usize = 21;

/// One planted object: layer, cell y, x, anchor, class, logit, box offsets.
struct Plant {
    layer: usize,
    y: usize,
    x: usize,
    anchor: usize,
    class: usize,
    logit: f32,
    offsets: [f32; 4],
}

const PLANTS: [Plant; 4] = [
    // A dog filling the 1×1 map's first anchor.
    Plant {
        layer: 5,
        y: 0,
        x: 0,
        anchor: 0,
        class: 12,
        logit: 10.0,
        offsets: [0.0; 4],
    },
    // A weaker dog at the 3×3 map's centre: IoU 0.63 with the first, suppressed.
    Plant {
        layer: 4,
        y: 1,
        x: 1,
        anchor: 0,
        class: 12,
        logit: 9.0,
        offsets: [0.0; 4],
    },
    // A car at the same place: another class, kept.
    Plant {
        layer: 4,
        y: 1,
        x: 1,
        anchor: 1,
        class: 7,
        logit: 9.0,
        offsets: [0.0; 4],
    },
    // A person in the 37×37 map, second anchor (the sqrt(s0·s1) square), shifted.
    Plant {
        layer: 0,
        y: 2,
        x: 3,
        anchor: 1,
        class: 15,
        logit: 8.0,
        offsets: [1.0, -0.5, 0.2, 0.0],
    },
];

/// The synthetic SSD: every head output is `0 · mean(image) + constant`.
/// Boxes come first in the output list, so the preset must match by size.
fn ssd_model() -> Vec<u8> {
    let mut nodes = vec![
        onnx::NodeProto {
            attribute: vec![onnx::AttributeProto {
                name: "keepdims".into(),
                r#type: onnx::attribute_proto::AttributeType::Int as i32,
                i: 1,
                ..Default::default()
            }],
            ..node("ReduceMean", &["image"], "mean")
        },
        node("Unsqueeze", &["mean", "axis4"], "mean5"),
        node("Mul", &["mean5", "zero"], "zeros"),
    ];
    let mut inits = vec![
        constant("zero", &[], vec![0.0]),
        onnx::TensorProto {
            name: "axis4".into(),
            dims: vec![1],
            data_type: 7,
            int64_data: vec![4],
            ..Default::default()
        },
    ];
    let mut outputs = Vec::new();
    let mut score_outputs = Vec::new();
    for (l, (f, _, _, a)) in LAYERS.iter().enumerate() {
        let f = *f;
        let mut logits = vec![0f32; f * f * a * CLASSES];
        let mut offsets = vec![0f32; f * f * a * 4];
        for p in PLANTS.iter().filter(|p| p.layer == l) {
            let cell = (p.y * f + p.x) * a + p.anchor;
            logits[cell * CLASSES + p.class] = p.logit;
            offsets[cell * 4..cell * 4 + 4].copy_from_slice(&p.offsets);
        }
        let (fi, ai) = (f as i64, *a as i64);
        for (what, width, data) in [("cls", CLASSES, logits), ("box", 4, offsets)] {
            let c = format!("{what}{l}_const");
            let out = format!("ssd_300_vgg/block{l}_{what}");
            inits.push(constant(&c, &[1, fi, fi, ai, width as i64], data));
            nodes.push(node("Add", &["zeros", &c], &out));
            let info = value_info(
                &out,
                &[None, Some(fi), Some(fi), Some(ai), Some(width as i64)],
            );
            if what == "cls" {
                score_outputs.push(info);
            } else {
                outputs.push(info);
            }
        }
    }
    outputs.extend(score_outputs);
    model(
        "synthetic-ssd",
        (nodes, inits),
        value_info("image", &[None, Some(300), Some(300), Some(3)]),
        outputs,
    )
}

/// The seed's anchor of a plant, decoded with its offsets, as
/// `[ymin, xmin, ymax, xmax]` fractions of the input.
fn expected_box(p: &Plant) -> [f32; 4] {
    let (_, step, sizes, _) = LAYERS[p.layer];
    let cy = (p.y as f32 + 0.5) * step / 300.0;
    let cx = (p.x as f32 + 0.5) * step / 300.0;
    let side = match p.anchor {
        0 => sizes[0],
        1 => (sizes[0] * sizes[1]).sqrt(),
        _ => unreachable!("only square anchors are planted"),
    } / 300.0;
    let [l0, l1, l2, l3] = p.offsets;
    let cx = l0 * side * 0.1 + cx;
    let cy = l1 * side * 0.1 + cy;
    let w = side * (l2 * 0.2).exp();
    let h = side * (l3 * 0.2).exp();
    [cy - h / 2.0, cx - w / 2.0, cy + h / 2.0, cx + w / 2.0]
}

/// softmax probability of a planted logit among 20 zeros.
fn expected_score(p: &Plant) -> f32 {
    let e = (p.logit as f64).exp();
    (e / (e + (CLASSES - 1) as f64)) as f32
}

fn png_size(bytes: &[u8]) -> (f32, f32) {
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w as f32, h as f32)
}

const VOC: [&str; 21] = [
    "none",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// The planted objects the answer must hold, best first: dog (layer 5),
/// car, person; the weaker dog is suppressed by NMS.
fn expected(image: &[u8]) -> Vec<(usize, f32, [f32; 4])> {
    let (w, h) = png_size(image);
    let mut want: Vec<(usize, f32, [f32; 4])> = [0usize, 2, 3]
        .iter()
        .map(|i| {
            let p = &PLANTS[*i];
            let b = expected_box(p);
            let px = [b[0] * h, b[1] * w, b[2] * h, b[3] * w].map(|v| v.clamp(0.0, w.max(h)));
            let px = [px[0].min(h), px[1].min(w), px[2].min(h), px[3].min(w)];
            (p.class, expected_score(p), px)
        })
        .collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1));
    want
}

fn assert_close(got: f64, want: f32, what: &str) {
    assert!(
        (got - f64::from(want)).abs() <= 1e-3 * f64::from(want.abs().max(1.0)),
        "{what}: got {got}, want {want}"
    );
}

/// POSTs JSON to the HTTP port and returns the parsed answer.
fn post_json(http: &str, path: &str, body: &Value) -> Value {
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    serde_json::from_str(body).unwrap()
}

#[test]
fn ssd_preset_detects_planted_objects_in_predict_and_over_rest() {
    let h = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("ssd.onnx");
    std::fs::write(&model, ssd_model()).unwrap();
    let labels = dir.path().join("voc.txt");
    std::fs::write(&labels, VOC.join("\n")).unwrap();
    let out = h.ok(&[
        "models",
        "register",
        "ssd",
        model.to_str().unwrap(),
        "--preset",
        "ssd-vgg-300",
        "--labels",
        labels.to_str().unwrap(),
    ]);
    assert_eq!(out.trim(), "ssd:1");
    let photo_path = fixture("images/skimage_chelsea.png");
    let photo = std::fs::read(&photo_path).unwrap();
    let want = expected(&photo);

    // accel predict
    let v = h.json(&[
        "predict",
        "ssd",
        photo_path.to_str().unwrap(),
        "--json",
        "--top",
        "10",
    ]);
    let found = v["results"][0]["detections"].as_array().unwrap();
    assert_eq!(found.len(), want.len(), "{v}");
    for (d, (class, score, bbox)) in found.iter().zip(&want) {
        assert_eq!(d["class"], *class, "{v}");
        assert_eq!(d["label"], VOC[*class]);
        assert_close(d["score"].as_f64().unwrap(), *score, "score");
        for (g, w) in d["bbox"].as_array().unwrap().iter().zip(bbox) {
            assert_close(g.as_f64().unwrap(), *w, "box");
        }
    }
    let text = h.ok(&["predict", "ssd", photo_path.to_str().unwrap()]);
    assert!(text.contains("dog") && text.contains("person"), "{text}");

    // The same answer from the server, as the four TF Object Detection API outputs.
    let mut cmd = h.cmd();
    cmd.args(["serve", "--model", "ssd"]);
    let mut served = spawn_serve(cmd);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&photo);
    let answer = post_json(
        &served.http,
        "/v1/models/ssd:predict",
        &serde_json::json!({"instances": [{"b64": b64}]}),
    );
    let p = &answer["predictions"][0];
    assert_eq!(p["num_detections"], 3.0, "{answer}");
    let boxes = p["detection_boxes"].as_array().unwrap();
    assert_eq!(boxes.len(), 200, "padded to keep_top_k");
    for (i, (class, score, bbox)) in want.iter().enumerate() {
        assert_eq!(p["detection_classes"][i], *class as f64);
        assert_close(p["detection_scores"][i].as_f64().unwrap(), *score, "score");
        for (g, w) in boxes[i].as_array().unwrap().iter().zip(bbox) {
            assert_close(g.as_f64().unwrap(), *w, "box");
        }
    }
    assert_eq!(p["detection_scores"][3], 0.0, "padding");
    let meta = post_json(
        &served.http,
        "/v2/models/ssd/infer",
        &serde_json::json!({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES",
            "data": [b64]}], "outputs": [{"name": "num_detections"}]}),
    );
    assert_eq!(meta["outputs"].as_array().unwrap().len(), 1, "{meta}");
    assert_eq!(meta["outputs"][0]["data"][0], 3.0, "{meta}");
    served.child.kill().unwrap();
    served.child.wait().unwrap();

    // A model whose heads do not fit the preset is refused at registration.
    let err = h.fails(&[
        "models",
        "register",
        "notssd",
        fixture("models/shufflenet-v2-12-qdq.onnx")
            .to_str()
            .unwrap(),
        "--preset",
        "ssd-vgg-300",
    ]);
    assert!(err.contains("ssd layer 0"), "{err}");
}

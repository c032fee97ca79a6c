//! CLI tests: train (issue 7). Transfer learning on `fixtures/digits` (300
//! handwritten digits from scikit-learn's `load_digits`, see its
//! PROVENANCE.md) with the float ShuffleNetV2 as featurizer; the composed
//! model answers the same in process and over gRPC, and converts.

use super::{fixture, heavy, spawn_serve, Home};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Held-out accuracy `accel train` must reach on the digits. Measured:
/// 0.95 (57/60 held-out images) with ONNX Runtime 1.31.1 and with the
/// defaults (300 epochs, L2 0.01), every run (training is deterministic).
const MIN_ACCURACY: f64 = 0.90;

/// The `k`-th image (by file name) of a digits class.
fn digit(class: &str, k: usize) -> PathBuf {
    let dir = fixture("digits").join(class);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    files[k].clone()
}

fn top(v: &Value) -> Vec<(u64, f64)> {
    v["results"][0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["index"].as_u64().unwrap(), c["score"].as_f64().unwrap()))
        .collect()
}

#[test]
fn train_on_shufflenet_features_then_predict_serve_and_convert() {
    let _heavy = heavy();
    let h = Home::new();
    h.register("shuffle", "shufflenet-v2-12-f32.onnx");
    let data = fixture("digits");
    let data = data.to_str().unwrap();
    let v = h.json(&[
        "train",
        "digits",
        "--featurizer",
        "shuffle",
        "--data",
        data,
        "--json",
    ]);
    eprintln!("{v:#}");
    assert_eq!(v["model"], "digits:1");
    let accuracy = v["accuracy"].as_f64().unwrap();
    assert!(accuracy >= MIN_ACCURACY, "held-out accuracy {accuracy}");
    // 30 images per class, 20 % of each held out.
    assert_eq!(v["validation"], 60);
    assert_eq!(v["train"], 240);
    let classes: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    assert_eq!(v["classes"], serde_json::json!(classes));
    assert_eq!(v["features"]["tensor"], "611");
    assert_eq!(v["features"]["computed"], 300);
    assert_eq!(v["features"]["cached"], 0);

    // Again: every feature from the cache, the same model.
    let again = h.json(&[
        "train",
        "digits",
        "--featurizer",
        "shuffle",
        "--data",
        data,
        "--json",
    ]);
    assert_eq!(again["model"], "digits:2");
    assert_eq!(again["features"]["cached"], 300);
    assert_eq!(again["features"]["computed"], 0);
    assert_eq!(again["accuracy"], v["accuracy"]);
    let sha = |m: &str| h.json(&["models", "show", m, "--json"])["sha256"].clone();
    assert_eq!(sha("digits:1"), sha("digits:2"));
    // The text form.
    let text = h.ok(&[
        "train",
        "digits",
        "--featurizer",
        "shuffle:1",
        "--data",
        data,
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "digits:3");
    assert!(
        lines[1].starts_with("held-out accuracy ") && lines[1].ends_with("/60)"),
        "{text}"
    );

    // The registered model: parent, labels, spec, properties.
    let shown = h.json(&["models", "show", "digits:1", "--json"]);
    assert_eq!(shown["format"], "onnx");
    assert_eq!(shown["parent"], "shuffle:1");
    assert_eq!(shown["spec"]["labels"]["count"], 10);
    assert_eq!(shown["spec"]["outputs"][0]["name"], "probabilities");
    assert_eq!(shown["spec"]["outputs"][0]["softmax"], false);
    let props = &shown["properties"];
    assert_eq!(props["accel.train.featurizer"], "shuffle:1");
    assert_eq!(props["accel.train.features"], "611");
    assert_eq!(props["accel.train.classes"], "10");
    assert_eq!(props["accel.train.train_images"], "240");
    assert_eq!(props["accel.train.val_images"], "60");
    assert_eq!(props["accel.train.epochs"], "300");
    assert!(props["accel.train.val_accuracy"].is_string());
    assert!(props["accel.train.l2"].is_string());

    // A held-out image (class 5's third file: the split holds out files
    // 2, 7, 12, 17, 22, 27 of each class).
    let img = digit("5", 2);
    let img = img.to_str().unwrap();
    let predicted = h.json(&["predict", "digits:1", img, "--json"]);
    assert_eq!(
        predicted["results"][0]["top"][0]["label"], "5",
        "{predicted}"
    );
    let in_process = top(&predicted);
    assert_eq!(in_process.len(), 5);
    let sum: f64 = in_process.iter().map(|(_, s)| s).sum();
    assert!(sum > 0.5 && sum <= 1.0 + 1e-5, "{sum}");

    // `accel serve` answers the same over gRPC.
    let mut cmd = h.cmd();
    cmd.args(["serve", "--model", "digits:1", "--service", "digits"]);
    let mut served = spawn_serve(cmd);
    let scored = h.json(&["score", &served.grpc, "--service", "digits", img, "--json"]);
    served.child.kill().unwrap();
    served.child.wait().unwrap();
    let over_grpc = top(&scored);
    assert_eq!(
        over_grpc.iter().map(|c| c.0).collect::<Vec<_>>(),
        in_process.iter().map(|c| c.0).collect::<Vec<_>>(),
        "{scored} vs {predicted}"
    );
    // The same float32 scores (JSON prints them at f32 and f64 precision).
    for ((_, a), (_, b)) in over_grpc.iter().zip(&in_process) {
        assert_eq!(*a as f32, *b as f32, "{scored} vs {predicted}");
    }

    // Ready to convert.
    let plan = h.json(&[
        "convert",
        "digits:1",
        "--precision",
        "fp32",
        "--threads",
        "1",
        "--min-time-ms",
        "100",
        "--json",
    ]);
    assert_eq!(plan["model"], "digits-plan:1");
    let shown = h.json(&["models", "show", "digits-plan:1", "--json"]);
    assert_eq!(shown["parent"], "digits:1");
    assert_eq!(shown["spec"]["labels"]["count"], 10);
}

/// `root/<class>/<file>` copies of digit images; `extra` adds raw files.
fn data_dir(root: &Path, classes: &[(&str, usize)], extra: &[(&str, &[u8])]) -> String {
    for (class, n) in classes {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..*n {
            std::fs::copy(digit("1", k), dir.join(format!("{k}.png"))).unwrap();
        }
    }
    for (rel, bytes) in extra {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    root.to_str().unwrap().to_string()
}

#[test]
fn train_rejects_bad_input_and_registers_nothing() {
    let h = Home::new();
    h.register("shuffle", "shufflenet-v2-12-f32.onnx");
    let path = fixture("models/shufflenet-v2-12-f32.onnx");
    h.ok(&["models", "register", "raw", path.to_str().unwrap()]);
    let before = h.listing();
    let tmp = tempfile::tempdir().unwrap();
    let train = |data: &str, more: &[&str]| {
        let mut args = vec!["train", "x", "--featurizer", "shuffle", "--data", data];
        args.extend(more);
        h.fails(&args)
    };

    let missing = tmp.path().join("missing");
    let err = train(missing.to_str().unwrap(), &[]);
    assert!(
        err.contains("data folder") && err.contains("missing"),
        "{err}"
    );

    let one = data_dir(&tmp.path().join("one"), &[("a", 3)], &[]);
    let err = train(&one, &[]);
    assert!(
        err.contains("1 class folder") && err.contains("at least 2"),
        "{err}"
    );

    let few = data_dir(&tmp.path().join("few"), &[("a", 3), ("b", 1)], &[]);
    let err = train(&few, &[]);
    assert!(err.contains("\"b\" has 1 image"), "{err}");

    let bad = data_dir(
        &tmp.path().join("bad"),
        &[("a", 2), ("b", 2)],
        &[("b/broken.png", b"not a png")],
    );
    let err = train(&bad, &[]);
    assert!(err.contains("broken.png"), "{err}");

    let good = data_dir(&tmp.path().join("good"), &[("a", 2), ("b", 2)], &[]);
    let err = train(&good, &["--features", "nope"]);
    assert!(err.contains("\"nope\""), "{err}");
    let err = train(&good, &["--val-split", "1.5"]);
    assert!(err.contains("--val-split"), "{err}");
    let err = h.fails(&["train", "x", "--featurizer", "raw", "--data", &good]);
    assert!(err.contains("raw tensors"), "{err}");
    let err = h.fails(&["train", "x", "--featurizer", "nope", "--data", &good]);
    assert!(err.contains("nope"), "{err}");
    let err = h.fails(&[
        "train",
        "bad name!",
        "--featurizer",
        "shuffle",
        "--data",
        &good,
    ]);
    assert!(err.contains("bad name!"), "{err}");

    assert_eq!(h.listing(), before, "nothing registered");
}

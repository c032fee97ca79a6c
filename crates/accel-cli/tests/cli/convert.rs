//! `accel convert` and `accel operations`: the float ShuffleNetV2 becomes an
//! int8 plan within the accuracy budget, faster than the float plan, and the
//! plan serves the known classes (PROVENANCE.md) like any model.

use super::{fixture, heavy, spawn_serve, Home};
use serde_json::Value;
use std::path::Path;

/// Calibration and validation folders: disjoint halves of the bundled photos.
fn photo_dirs(root: &Path) -> (String, String) {
    let cal = root.join("calibration");
    let val = root.join("validation");
    for (dir, photos) in [
        (
            &cal,
            &[
                "skimage_astronaut.png",
                "skimage_rocket.jpg",
                "sklearn_flower.jpg",
                "mobilenet_caffe_cat.jpg",
            ],
        ),
        (
            &val,
            &[
                "skimage_chelsea.png",
                "skimage_chelsea_q90.jpg",
                "skimage_coffee.png",
                "sklearn_china.jpg",
            ],
        ),
    ] {
        std::fs::create_dir_all(dir).unwrap();
        for p in photos {
            std::fs::copy(fixture(&format!("images/{p}")), dir.join(p)).unwrap();
        }
    }
    (
        cal.to_str().unwrap().to_string(),
        val.to_str().unwrap().to_string(),
    )
}

fn candidate<'a>(report: &'a Value, engine: &str, precision: &str, threads: u64) -> &'a Value {
    report["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["engine"] == engine && c["precision"] == precision && c["threads"] == threads)
        .unwrap_or_else(|| panic!("no {engine} {precision} x{threads} candidate in {report:#}"))
}

#[test]
fn convert_float_shufflenet_to_an_int8_plan_and_serve_it() {
    let _heavy = heavy();
    let h = Home::new();
    h.register("shuffle-f32", "shufflenet-v2-12-f32.onnx");
    let work = tempfile::tempdir().unwrap();
    let (cal, val) = photo_dirs(work.path());
    let v = h.json(&[
        "convert",
        "shuffle-f32",
        "--precision",
        "int8",
        "--calibration",
        &cal,
        "--validation",
        &val,
        "--augment",
        "--threads",
        "1",
        "--min-time-ms",
        "1500",
        "--json",
    ]);
    let model = v["model"].as_str().unwrap().to_string();
    assert_eq!(model, "shuffle-f32-plan:1");
    let report = &v["report"];
    assert_eq!(report["chosen"]["precision"], "int8", "{report:#}");
    assert_eq!(report["chosen"]["engine"], "onnxruntime", "{report:#}");
    // 4 validation photos × 12 views (crops and mirror images).
    assert_eq!(report["validation"]["images"], 48);
    assert_eq!(report["calibration"]["images"], 48);
    let int8 = candidate(report, "onnxruntime", "int8", 1);
    let fp32 = candidate(report, "onnxruntime", "fp32", 1);
    let agreement = int8["top1_agreement"].as_f64().unwrap();
    assert!(agreement >= 0.99, "top-1 agreement {agreement}: {report:#}");
    let cosine = int8["cosine"].as_f64().unwrap();
    assert!(cosine > 0.9 && cosine <= 1.0 + 1e-9, "cosine {cosine}");
    // The float plan agrees with the float reference (same engine).
    assert_eq!(fp32["top1_agreement"], 1.0);
    // Faster, in one run on one machine.
    let (p_int8, p_fp32) = (
        int8["p50_ms"].as_f64().unwrap(),
        fp32["p50_ms"].as_f64().unwrap(),
    );
    assert!(p_int8 < p_fp32, "int8 p50 {p_int8} ms vs fp32 {p_fp32} ms");
    eprintln!("int8/fp32 p50: {p_int8:.3}/{p_fp32:.3} ms, agreement {agreement}, cosine {cosine}");

    // The registry has the plan, its parent and the report.
    let shown = h.json(&["models", "show", &model, "--json"]);
    assert_eq!(shown["format"], "accel-plan");
    assert_eq!(shown["parent"], "shuffle-f32:1");
    assert_eq!(&shown["report"], report);
    assert_eq!(shown["properties"]["accel.plan.precision"], "int8");
    let text = h.ok(&["models", "show", &model]);
    assert!(
        text.contains("chosen:") && text.contains("COSINE"),
        "{text}"
    );

    // The plan answers like a model: the known classes.
    let imgs = [
        "skimage_chelsea.png",
        "skimage_coffee.png",
        "sklearn_china.jpg",
    ]
    .map(|f| fixture(&format!("images/{f}")));
    let mut args = vec!["predict", model.as_str(), "--json"];
    args.extend(imgs.iter().map(|p| p.to_str().unwrap()));
    let p = h.json(&args);
    assert_eq!(p["engine"], "onnxruntime");
    let top1: Vec<u64> = p["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["top"][0]["index"].as_u64().unwrap())
        .collect();
    assert!((281..=285).contains(&top1[0]), "chelsea {}", top1[0]);
    assert_eq!(&top1[1..], [967, 698]);
    // `accel serve` loads the plan as it is, and it answers over gRPC.
    let mut cmd = h.cmd();
    cmd.args(["serve", "--model", &model, "--service", "plan"]);
    let mut served = spawn_serve(cmd);
    let coffee = fixture("images/skimage_coffee.png");
    let s = h.json(&[
        "score",
        &served.grpc,
        "--service",
        "plan",
        coffee.to_str().unwrap(),
        "--json",
    ]);
    served.child.kill().unwrap();
    served.child.wait().unwrap();
    assert_eq!(s["results"][0]["top"][0]["index"], 967, "{s}");
    // A plan cannot be loaded by the other engine, and says why.
    let err = h.fails(&[
        "predict",
        &model,
        "--engine",
        "tract",
        imgs[0].to_str().unwrap(),
    ]);
    assert!(err.contains("plan for onnxruntime"), "{err}");
    // A plan is not converted again.
    let err = h.fails(&["convert", &model, "--precision", "fp32"]);
    assert!(err.contains("accel-plan"), "{err}");
}

#[test]
fn convert_rejects_bad_input_and_registers_nothing() {
    let h = Home::new();
    h.register("shuffle-f32", "shufflenet-v2-12-f32.onnx");
    let before = h.listing();
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_str().unwrap();
    let err = h.fails(&[
        "convert",
        "shuffle-f32",
        "--precision",
        "int8",
        "--calibration",
        empty,
    ]);
    assert!(err.contains("no images"), "{err}");
    let err = h.fails(&["convert", "shuffle-f32", "--precision", "int8"]);
    assert!(err.contains("--calibration"), "{err}");
    let err = h.fails(&[
        "convert",
        "shuffle-f32",
        "--precision",
        "fp32",
        "--output",
        "nope",
    ]);
    assert!(err.contains("no output \"nope\""), "{err}");
    let err = h.fails(&["convert", "shuffle-f32", "--precision", "bf16"]);
    assert!(err.contains("unknown precision"), "{err}");
    let err = h.fails(&["convert", "shuffle-f32", "--target", "tpu"]);
    assert!(err.contains("target \"tpu\""), "{err}");
    let err = h.fails(&["convert", "nope:3"]);
    assert!(err.contains("nope"), "{err}");
    // A raw-tensor model cannot be calibrated on images.
    let path = fixture("models/shufflenet-v2-12-f32.onnx");
    h.ok(&["models", "register", "raw", path.to_str().unwrap()]);
    let err = h.fails(&["convert", "raw"]);
    assert!(err.contains("raw tensors"), "{err}");
    let after = h.listing();
    assert_eq!(
        before.as_array().unwrap().len() + 1,
        after.as_array().unwrap().len(),
        "only the raw model was added"
    );
}

#[test]
fn convert_no_wait_runs_as_an_operation() {
    let h = Home::new();
    h.register("shuffle-f32", "shufflenet-v2-12-f32.onnx");
    let id = h
        .ok(&[
            "convert",
            "shuffle-f32",
            "--precision",
            "fp32",
            "--threads",
            "1",
            "--min-time-ms",
            "100",
            "--no-wait",
        ])
        .trim()
        .to_string();
    assert!(id.starts_with("convert-"), "{id}");
    let done = h.json(&["operations", "wait", &id, "--timeout", "300", "--json"]);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["result"]["model"], "shuffle-f32-plan:1");
    let list = h.json(&["operations", "list", "--json"]);
    assert_eq!(list[0]["id"], id.as_str());
    let shown = h.json(&["models", "show", "shuffle-f32-plan:1", "--json"]);
    assert_eq!(shown["report"]["chosen"]["precision"], "fp32");
    // A failing operation is reported as failed, with its reason.
    let id = h
        .ok(&["convert", "shuffle-f32", "--target", "tpu", "--no-wait"])
        .trim()
        .to_string();
    let out = h.run(&["operations", "wait", &id, "--timeout", "300"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("target \"tpu\""), "{err}");
    let err = h.fails(&["operations", "show", "convert-000000000000"]);
    assert!(err.contains("convert-000000000000"), "{err}");
}

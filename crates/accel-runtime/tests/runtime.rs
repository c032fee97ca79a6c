//! Runtime integration tests. References come from other people's code:
//! Pillow + numpy preprocessing and ONNX Runtime's Python package
//! (`refs/gen_references.py` made `refs/`), plus cross-engine agreement.

use accel_core::spec::{ChannelOrder, Preset};
use accel_core::Tensor;
use accel_runtime::engine::onnxruntime::{OrtBackend, SearchPaths};
use accel_runtime::engine::tract::TractBackend;
use accel_runtime::engine::{Backend, LoadOptions, Plan};
use accel_runtime::image::{decode_rgb, preprocess_into};
use accel_runtime::onnx_info::read_model_io;
use accel_runtime::pipeline::resolve_spec;
use accel_runtime::{CompiledPipeline, Limits, RuntimeError};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(root().join("fixtures").join(rel)).unwrap()
}

fn refs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/refs")
}

fn references() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(refs_dir().join("references.json")).unwrap()).unwrap()
}

fn read_f32(name: &str) -> Vec<f32> {
    std::fs::read(refs_dir().join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn ort() -> OrtBackend {
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
}

const PHOTOS: [&str; 8] = [
    "skimage_chelsea.png",
    "skimage_chelsea_q90.jpg",
    "skimage_coffee.png",
    "sklearn_china.jpg",
    "skimage_astronaut.png",
    "skimage_rocket.jpg",
    "sklearn_flower.jpg",
    "mobilenet_caffe_cat.jpg",
];

fn diff_stats(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let mut max = 0f32;
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        max = max.max(d);
        sum += f64::from(d);
    }
    (max, (sum / a.len() as f64) as f32)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

fn preprocess(bytes: &[u8], preset: Preset, order: ChannelOrder) -> Vec<f32> {
    let mut spec = preset.spec().preprocess.unwrap();
    spec.set_channel_order(order);
    let img = decode_rgb(bytes, &Limits::default()).unwrap();
    let mut out = vec![0f32; 3 * 224 * 224];
    preprocess_into(&img, &spec, &mut out).unwrap();
    out
}

/// Bound: one 8-bit level is 1/255/0.225 = 0.0174 after torchvision's
/// normalization. Pillow and fast_image_resize both round a fixed-point
/// bilinear convolution, and JPEG decoders (libjpeg-turbo vs zune-jpeg) may
/// differ by a level or two per pixel, so we allow 4 levels anywhere and a
/// mean difference under a quarter level.
#[test]
fn torchvision_preprocessing_matches_pillow_and_numpy() {
    let refs = references();
    for photo in [
        "skimage_chelsea.png",
        "sklearn_china.jpg",
        "skimage_rocket.jpg",
    ] {
        let want = read_f32(&format!("{photo}.torchvision.f32"));
        assert_eq!(
            refs["tensors"][format!("{photo}.torchvision.f32")],
            serde_json::json!([1, 3, 224, 224])
        );
        let got = preprocess(
            &fixture(&format!("images/{photo}")),
            Preset::Torchvision,
            ChannelOrder::Rgb,
        );
        let (max, mean) = diff_stats(&got, &want);
        eprintln!("{photo}: max {max:.4} mean {mean:.5}");
        assert!(max <= 4.0 / 255.0 / 0.224, "{photo}: max abs diff {max}");
        assert!(
            mean <= 0.25 / 255.0 / 0.224,
            "{photo}: mean abs diff {mean}"
        );
    }
}

/// The azureml-accel preset in BGR against the seed's formula computed with
/// numpy on Pillow's resize: values are in 0..255 units here, so the bound is
/// 4 levels anywhere and a quarter level on average.
#[test]
fn azureml_preset_matches_the_seed_formula_in_bgr() {
    let want = read_f32("sklearn_china.azureml-bgr.f32");
    let got = preprocess(
        &fixture("images/sklearn_china.jpg"),
        Preset::AzuremlAccel,
        ChannelOrder::Bgr,
    );
    let (max, mean) = diff_stats(&got, &want);
    eprintln!("azureml bgr: max {max:.3} mean {mean:.4}");
    assert!(max <= 4.0, "max abs diff {max}");
    assert!(mean <= 0.25, "mean abs diff {mean}");
}

/// Grayscale and RGBA PNGs decode exactly as Pillow's `convert("RGB")`;
/// an EXIF orientation-6 JPEG is rotated as `ImageOps.exif_transpose` does.
#[test]
fn grayscale_alpha_and_exif_orientation_decode_like_pillow() {
    let refs = references();
    for name in ["gray.png", "rgba.png", "exif6.jpg"] {
        let bytes = std::fs::read(refs_dir().join("special").join(name)).unwrap();
        let want = std::fs::read(refs_dir().join("special").join(format!("{name}.rgb"))).unwrap();
        let img = decode_rgb(&bytes, &Limits::default()).unwrap();
        let w = refs["special"][name]["width"].as_u64().unwrap() as u32;
        let h = refs["special"][name]["height"].as_u64().unwrap() as u32;
        assert_eq!(
            (img.width, img.height),
            (w, h),
            "{name}: size after orientation"
        );
        if name.ends_with(".png") {
            assert_eq!(img.pixels, want, "{name}: pixels differ from Pillow");
        } else {
            let mean: f64 = img
                .pixels
                .iter()
                .zip(&want)
                .map(|(a, b)| f64::from(a.abs_diff(*b)))
                .sum::<f64>()
                / want.len() as f64;
            assert!(
                mean < 2.0,
                "{name}: mean difference {mean} levels (rotation wrong?)"
            );
        }
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header claims `w`×`h` and whose data is a few bytes.
pub fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    out
}

#[test]
fn bad_images_fail_with_clear_errors() {
    let jpeg = fixture("images/sklearn_china.jpg");
    let limits = Limits::default();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated jpeg",
            jpeg[..jpeg.len() / 3].to_vec(),
            "truncated",
        ),
        ("zero bytes", vec![], "empty"),
        (
            "text",
            b"this is not an image\n".to_vec(),
            "not a JPEG or PNG",
        ),
    ];
    for (what, bytes, needle) in cases {
        let err = decode_rgb(&bytes, &limits).expect_err(what);
        assert!(matches!(err, RuntimeError::Decode(_)), "{what}: {err:?}");
        assert!(err.to_string().contains(needle), "{what}: {err}");
    }
    let err = decode_rgb(&png_header_only(30000, 30000), &limits).expect_err("bomb decoded");
    assert!(
        matches!(
            err,
            RuntimeError::TooManyPixels {
                width: 30000,
                height: 30000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("30000x30000"), "{err}");
}

fn run_plan(plan: &dyn Plan, input: &[f32]) -> Vec<f32> {
    let t = Tensor::from_f32(vec![1, 3, 224, 224], input.to_vec()).unwrap();
    let out = plan.run(&[t]).unwrap();
    out[0].as_f32().unwrap().to_vec()
}

/// Our ONNX Runtime binding, fed Pillow's tensors, reproduces the logits of
/// ONNX Runtime's own Python package.
#[test]
fn onnxruntime_backend_reproduces_python_onnxruntime() {
    let ort = ort();
    let refs = references();
    for model in [
        "shufflenet-v2-12-f32.onnx",
        "shufflenet-v2-12-qdq.onnx",
        "mobilenetv2-12-int8.onnx",
    ] {
        let plan = ort
            .load(
                &fixture(&format!("models/{model}")),
                &LoadOptions::default(),
            )
            .unwrap();
        for photo in [
            "skimage_chelsea.png",
            "sklearn_china.jpg",
            "skimage_rocket.jpg",
        ] {
            let input = read_f32(&format!("{photo}.torchvision.f32"));
            let want: Vec<f32> =
                serde_json::from_value(refs["logits"][model][photo].clone()).unwrap();
            let got = run_plan(plan.as_ref(), &input);
            let c = cosine(&got, &want);
            assert!(c >= 0.99999, "{model} {photo}: cosine {c}");
            assert_eq!(argmax(&got), argmax(&want), "{model} {photo}");
        }
    }
}

/// tract on the float model agrees with ONNX Runtime (Python) to cosine
/// ≥ 0.999; on the QDQ model it agrees on top-1. The int8 MobileNetV2 uses
/// com.microsoft contrib ops (QLinearAdd, QLinearGlobalAveragePool) that
/// tract does not implement: loading it must fail and say so.
#[test]
fn tract_agrees_with_onnxruntime_on_pillow_tensors() {
    let tract = TractBackend::new();
    let refs = references();
    for model in ["shufflenet-v2-12-f32.onnx", "shufflenet-v2-12-qdq.onnx"] {
        let plan = tract
            .load(
                &fixture(&format!("models/{model}")),
                &LoadOptions::default(),
            )
            .unwrap();
        for photo in [
            "skimage_chelsea.png",
            "sklearn_china.jpg",
            "skimage_rocket.jpg",
        ] {
            let input = read_f32(&format!("{photo}.torchvision.f32"));
            let want: Vec<f32> =
                serde_json::from_value(refs["logits"][model][photo].clone()).unwrap();
            let got = run_plan(plan.as_ref(), &input);
            let c = cosine(&got, &want);
            eprintln!("tract {model} {photo}: cosine {c:.6}");
            if model.contains("f32") {
                assert!(c >= 0.999, "{model} {photo}: cosine {c}");
            }
            assert_eq!(argmax(&got), argmax(&want), "{model} {photo}");
        }
    }
    let err = tract
        .load(
            &fixture("models/mobilenetv2-12-int8.onnx"),
            &LoadOptions::default(),
        )
        .err()
        .expect("tract is not expected to run com.microsoft contrib ops");
    let msg = err.to_string();
    assert!(
        msg.contains("QLinear") || msg.contains("com.microsoft"),
        "{msg}"
    );
}

fn pipeline(backend: &dyn Backend, model: &str) -> CompiledPipeline {
    let bytes = fixture(&format!("models/{model}"));
    let spec = resolve_spec(Preset::Torchvision.spec(), &read_model_io(&bytes).unwrap()).unwrap();
    let plan = backend.load(&bytes, &LoadOptions::default()).unwrap();
    CompiledPipeline::new(plan, spec, None, Limits::default()).unwrap()
}

/// Whole pipelines (our decoding and preprocessing) on every bundled photo:
/// the known classes on ONNX Runtime, and tract's top-1 equal to ONNX
/// Runtime's for both ShuffleNetV2 models, with cosine ≥ 0.999 on the float one.
#[test]
fn pipelines_classify_the_photos_and_engines_agree() {
    let ort = ort();
    let tract = TractBackend::new();
    let expected = [
        ("skimage_chelsea.png", 281..=285),
        ("skimage_coffee.png", 967..=967),
        ("sklearn_china.jpg", 698..=698),
    ];
    for model in ["mobilenetv2-12-int8.onnx", "shufflenet-v2-12-qdq.onnx"] {
        let p = pipeline(&ort, model);
        for (photo, classes) in expected.clone() {
            let (r, _) = p
                .classify(&[&fixture(&format!("images/{photo}"))], 5)
                .unwrap();
            let top1 = r[0].top[0].index;
            assert!(classes.contains(&top1), "{model} {photo}: top-1 {top1}");
        }
    }
    for model in ["shufflenet-v2-12-f32.onnx", "shufflenet-v2-12-qdq.onnx"] {
        let (po, pt) = (pipeline(&ort, model), pipeline(&tract, model));
        for photo in PHOTOS {
            let bytes = fixture(&format!("images/{photo}"));
            let (a, _) = po.run_images(&[&bytes]).unwrap();
            let (b, _) = pt.run_images(&[&bytes]).unwrap();
            let (a, b) = (a[0].tensor.as_f32().unwrap(), b[0].tensor.as_f32().unwrap());
            assert_eq!(
                argmax(a),
                argmax(b),
                "{model} {photo}: engines disagree on top-1"
            );
            if model.contains("f32") {
                let c = cosine(a, b);
                assert!(c >= 0.999, "{model} {photo}: cosine {c}");
            }
        }
    }
}

/// A batch of 3 through a model whose batch dimension is fixed at 1 runs
/// item by item and gives the same answers as three single calls.
#[test]
fn batches_match_single_calls() {
    let p = pipeline(&TractBackend::new(), "shufflenet-v2-12-qdq.onnx");
    let imgs: Vec<Vec<u8>> = PHOTOS[..3]
        .iter()
        .map(|f| fixture(&format!("images/{f}")))
        .collect();
    let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
    let (batch, _) = p.classify(&refs, 3).unwrap();
    for (i, one) in refs.iter().enumerate() {
        let (single, _) = p.classify(&[one], 3).unwrap();
        assert_eq!(single[0], batch[i]);
    }
    let over = vec![refs[0]; Limits::default().max_batch + 1];
    let err = p.preprocess(&over).unwrap_err();
    assert!(err.to_string().contains("over the limit"), "{err}");
}

#[test]
fn non_onnx_files_are_refused() {
    for bytes in [
        b"".to_vec(),
        b"hello, I am text\n".to_vec(),
        fixture("images/skimage_coffee.png"),
    ] {
        let err = read_model_io(&bytes).unwrap_err();
        assert!(err.to_string().contains("not an ONNX model"), "{err}");
    }
    let io = read_model_io(&fixture("models/shufflenet-v2-12-qdq.onnx")).unwrap();
    assert_eq!(io.inputs[0].name, "input");
    assert_eq!(io.outputs[0].name, "output");
}

/// ONNX Runtime's optimized model is cached on first load and loaded
/// without optimizing afterwards: the cached plan's outputs equal a fresh
/// plan's, and a damaged cache file is replaced, not trusted.
#[test]
fn onnxruntime_caches_its_optimized_model_and_survives_a_damaged_cache() {
    use accel_runtime::engine::OptimizedCache;
    let dir = std::env::temp_dir().join(format!("accel-ort-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let model = fixture("models/shufflenet-v2-12-f32.onnx");
    let cache = OptimizedCache {
        dir: dir.clone(),
        model_sha256: "0".repeat(64),
    };
    let options = LoadOptions {
        threads: 1,
        cache: Some(cache),
        ..LoadOptions::default()
    };
    let ort = ort();
    let input = Tensor::from_f32(
        vec![1, 3, 224, 224],
        preprocess(
            &fixture("images/sklearn_china.jpg"),
            Preset::Torchvision,
            ChannelOrder::Rgb,
        ),
    )
    .unwrap();
    let fresh = ort.load(&model, &LoadOptions::default()).unwrap();
    let want = fresh.run(std::slice::from_ref(&input)).unwrap();
    let cached_files = || -> Vec<PathBuf> {
        std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };

    let first = ort.load(&model, &options).unwrap();
    let files = cached_files();
    assert_eq!(files.len(), 1, "one optimized model written: {files:?}");
    assert!(files[0].to_string_lossy().contains(&"0".repeat(64)));
    let second = ort.load(&model, &options).unwrap();
    for plan in [&first, &second] {
        let got = plan.run(std::slice::from_ref(&input)).unwrap();
        let (max, _) = diff_stats(got[0].as_f32().unwrap(), want[0].as_f32().unwrap());
        assert!(max <= 1e-3, "cached plan differs by {max}");
    }

    std::fs::write(&files[0], b"not an onnx model").unwrap();
    let third = ort.load(&model, &options).unwrap();
    let got = third.run(std::slice::from_ref(&input)).unwrap();
    assert_eq!(
        argmax(got[0].as_f32().unwrap()),
        argmax(want[0].as_f32().unwrap())
    );
    assert!(
        std::fs::metadata(&files[0]).unwrap().len() > 1000,
        "the damaged cache file was rewritten"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

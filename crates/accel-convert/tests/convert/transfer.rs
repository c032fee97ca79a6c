//! Transfer learning's graph work, run by the engines: the featurizer cut at
//! its pooled features gives the full model's intermediate values, and the
//! composed model's output is `softmax(W·f + b)` computed by hand.

use super::common::*;
use accel_convert::compose::{compose, PROBABILITIES};
use accel_convert::features::{cut_at, find_features};
use accel_convert::graph::{self, decode, encode};
use accel_convert::train::LinearHead;
use accel_runtime::engine::tract::TractBackend;
use accel_runtime::engine::Backend;

const PHOTOS: [&str; 3] = [
    "skimage_chelsea.png",
    "skimage_coffee.png",
    "sklearn_china.jpg",
];

/// The float ShuffleNet with `611` as an extra output: the reference
/// features.
fn reference_features(photo: &str) -> Vec<f32> {
    let mut m = decode(&shufflenet()).unwrap();
    graph::add_outputs(&mut m, &["611".to_string()]).unwrap();
    let plan = load(&encode(&m), &one_thread());
    let ix = plan.outputs().iter().position(|o| o.name == "611").unwrap();
    run_image(plan.as_ref(), &photo_tensor(photo)).swap_remove(ix)
}

#[test]
fn cut_featurizer_gives_the_full_models_pooled_features() {
    let m = decode(&shufflenet()).unwrap();
    let tensor = find_features(&m).unwrap();
    assert_eq!(tensor, "611");
    let cut = encode(&cut_at(&m, &tensor).unwrap());
    assert!(cut.len() < shufflenet().len());
    let plan = load(&cut, &one_thread());
    assert_eq!(plan.outputs().len(), 1);
    assert_eq!(plan.outputs()[0].name, "611");
    for photo in PHOTOS {
        let got = run_image(plan.as_ref(), &photo_tensor(photo)).remove(0);
        let want = reference_features(photo);
        assert_eq!(got.len(), 1024, "{photo}");
        // Same engine, same kernels, one thread: the same values.
        assert!(max_abs_diff(&got, &want) <= 1e-6, "{photo}");
    }
}

/// A deterministic head on the 1024 ShuffleNet features.
fn head(classes: usize) -> LinearHead {
    LinearHead {
        classes,
        features: 1024,
        weights: values(classes * 1024, 11).iter().map(|v| v * 0.5).collect(),
        bias: values(classes, 12),
    }
}

/// `softmax(W·f + b)` in f64.
fn by_hand(h: &LinearHead, f: &[f32]) -> Vec<f64> {
    let z: Vec<f64> = (0..h.classes)
        .map(|c| {
            f64::from(h.bias[c])
                + h.weights[c * h.features..(c + 1) * h.features]
                    .iter()
                    .zip(f)
                    .map(|(w, x)| f64::from(*w) * f64::from(*x))
                    .sum::<f64>()
        })
        .collect();
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn composed_model_computes_softmax_of_the_head_on_both_engines() {
    let m = decode(&shufflenet()).unwrap();
    let cut = cut_at(&m, "611").unwrap();
    let h = head(5);
    let composed = encode(&compose(&cut, &h).unwrap());
    let io = accel_runtime::onnx_info::read_model_io(&composed).unwrap();
    assert_eq!(io.outputs.len(), 1);
    assert_eq!(io.outputs[0].name, PROBABILITIES);
    assert_eq!(io.outputs[0].shape, [Some(1), Some(5)]);
    let ort = load(&composed, &one_thread());
    let tract = TractBackend::new().load(&composed, &one_thread()).unwrap();
    for photo in PHOTOS {
        let features = reference_features(photo);
        let want = by_hand(&h, &features);
        let input = photo_tensor(photo);
        for (engine, plan) in [("onnxruntime", &ort), ("tract", &tract)] {
            let got = run_image(plan.as_ref(), &input).remove(0);
            assert_eq!(got.len(), 5);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (f64::from(*g) - w).abs() < 1e-4,
                    "{engine} {photo}: {got:?} vs {want:?}"
                );
            }
            assert_eq!(argmax(&got), h.predict(&features), "{engine} {photo}");
        }
        // The head's own probabilities agree too.
        let own = h.probabilities(&features);
        for (g, w) in own.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() < 1e-6);
        }
    }
}

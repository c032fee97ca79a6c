//! SSD postprocessing cost at batch 1 with the seed's SSD-VGG 300 layout
//! (8,432 anchors × 21 classes): softmax alone vs the whole stage (softmax,
//! threshold, top-k, NMS, merge), at the seed's threshold (0.5) and at
//! torchvision's (0.01, many candidates reach NMS).
//!
//! `cargo run -p accel-bench --bin ssd_post --release`

use accel_bench::onnx_builder::Rng;
use accel_bench::stats::percentile;
use accel_core::detection::SsdSpec;
use accel_runtime::detect::SsdDecoder;
use accel_runtime::postprocess::softmax_rows;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let names: Vec<(String, String)> = (0..6).map(|i| (format!("c{i}"), format!("b{i}"))).collect();
    let base = SsdSpec::ssd_vgg_300(&names);
    let mut rng = Rng::new(7);
    // Logits with a spread like a trained head's (std 3), offsets std 1.
    let scores: Vec<Vec<f32>> = base
        .layers
        .iter()
        .map(|l| {
            (0..l.anchor_count() * 21)
                .map(|_| rng.normal(3.0))
                .collect()
        })
        .collect();
    let boxes: Vec<Vec<f32>> = base
        .layers
        .iter()
        .map(|l| (0..l.anchor_count() * 4).map(|_| rng.normal(1.0)).collect())
        .collect();
    let s: Vec<&[f32]> = scores.iter().map(Vec::as_slice).collect();
    let b: Vec<&[f32]> = boxes.iter().map(Vec::as_slice).collect();
    let runs = 300;
    let time = |f: &mut dyn FnMut()| {
        for _ in 0..20 {
            f();
        }
        let mut ms: Vec<f64> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        (percentile(&mut ms, 50.0), percentile(&mut ms, 99.0))
    };
    let (p50, p99) = time(&mut || {
        for l in &scores {
            let mut v = l.clone();
            softmax_rows(&mut v, 21);
            std::hint::black_box(&v);
        }
    });
    println!("softmax only (copy + softmax of 8432x21): p50 {p50:.3} ms, p99 {p99:.3} ms");
    for threshold in [0.5f32, 0.01] {
        let mut spec = base.clone();
        spec.score_threshold = threshold;
        let decoder = SsdDecoder::new(spec)?;
        let found = decoder.detect(&s, &b)?.len();
        let (p50, p99) = time(&mut || {
            std::hint::black_box(decoder.detect(&s, &b).unwrap());
        });
        println!(
            "whole stage, threshold {threshold}: p50 {p50:.3} ms, p99 {p99:.3} ms ({found} detections kept)"
        );
    }
    Ok(())
}

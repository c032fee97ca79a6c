//! In-process batch-1 inference latency, every engine × thread count × model
//! in one run, printed as a Markdown table for docs/PERFORMANCE.md.
//!
//!     cargo run --release -p accel-bench --bin inproc -- --runs 50

use accel_bench::{resnet, stats::percentile};
use accel_core::spec::Preset;
use accel_core::Tensor;
use accel_runtime::engine::onnxruntime::{OrtBackend, SearchPaths};
use accel_runtime::engine::tract::TractBackend;
use accel_runtime::engine::{Backend, LoadOptions};
use accel_runtime::image::{decode_rgb, preprocess_into};
use accel_runtime::Limits;
use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

/// In-process latency benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Timed runs per configuration (after warm-up).
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Warm-up runs per configuration.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Where the generated ResNet-50 is written (created if missing).
    #[arg(long, default_value = "target/models/resnet50-random.onnx")]
    resnet50: PathBuf,
    /// Photo used as input (preprocessed with the torchvision preset).
    #[arg(long, default_value = "fixtures/images/sklearn_china.jpg")]
    image: PathBuf,
    /// ONNX Runtime library (else $ACCEL_HOME/engines, then python3's onnxruntime).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_dylib: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.resnet50.exists() {
        std::fs::create_dir_all(args.resnet50.parent().context("resnet50 path")?)?;
        eprintln!(
            "generating ResNet-50 (random weights) at {}",
            args.resnet50.display()
        );
        std::fs::write(&args.resnet50, resnet::resnet50(50))?;
    }
    let models = [
        ("ResNet-50 fp32 (random weights)", args.resnet50.clone()),
        (
            "ShuffleNetV2 fp32",
            PathBuf::from("fixtures/models/shufflenet-v2-12-f32.onnx"),
        ),
        (
            "ShuffleNetV2 int8 QDQ",
            PathBuf::from("fixtures/models/shufflenet-v2-12-qdq.onnx"),
        ),
    ];
    let home = std::env::var_os("ACCEL_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".accel")));
    let ort = OrtBackend::init(&SearchPaths {
        dylib_path: args.ort_dylib.clone(),
        engines_dir: home.map(|h| h.join("engines")),
        python: Some("python3".into()),
    })?;
    let backends: Vec<(&str, Box<dyn Backend>)> = vec![
        ("onnxruntime", Box::new(ort)),
        ("tract", Box::new(TractBackend::new())),
    ];

    // Input: the photo through our own decode + preprocessing.
    let bytes = std::fs::read(&args.image)?;
    let spec = Preset::Torchvision.spec().preprocess.context("preset")?;
    let mut pre_ms = Vec::new();
    let mut input = vec![0f32; 3 * 224 * 224];
    for _ in 0..args.runs {
        let t = Instant::now();
        let img = decode_rgb(&bytes, &Limits::default())?;
        preprocess_into(&img, &spec, &mut input)?;
        pre_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let tensor = Tensor::from_f32(vec![1, 3, 224, 224], input)?;

    println!(
        "decode + preprocess {} (one thread): p50 {:.2} ms, p99 {:.2} ms\n",
        args.image.display(),
        percentile(&mut pre_ms.clone(), 50.0),
        percentile(&mut pre_ms, 99.0)
    );
    println!("| model | engine | threads | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|");
    for (model_name, path) in &models {
        let model = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
        for (engine_name, backend) in &backends {
            for &threads in &args.threads {
                let plan = backend.load(
                    &model,
                    &LoadOptions {
                        threads,
                        ..LoadOptions::default()
                    },
                )?;
                for _ in 0..args.warmup {
                    plan.run(std::slice::from_ref(&tensor))?;
                }
                let mut ms = Vec::with_capacity(args.runs);
                for _ in 0..args.runs {
                    let t = Instant::now();
                    plan.run(std::slice::from_ref(&tensor))?;
                    ms.push(t.elapsed().as_secs_f64() * 1e3);
                }
                println!(
                    "| {model_name} | {engine_name} | {threads} | {:.2} | {:.2} |",
                    percentile(&mut ms.clone(), 50.0),
                    percentile(&mut ms, 99.0)
                );
            }
        }
    }
    Ok(())
}

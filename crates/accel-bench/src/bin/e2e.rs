//! End-to-end latency (JPEG bytes → softmax over gRPC, batch 1, loopback)
//! next to the same model's in-process inference, in one run.
//!
//!     cargo run -q -p accel-bench --bin e2e -- --accel target/debug/accel
//!
//! For each model: register it in a temporary Accel home, start
//! `accel serve` as a separate process, measure `--requests` TF Serving
//! Predict calls at concurrency 1 with the project's client; stop the server;
//! then measure, in this process, preprocessing and inference of the same
//! photo with the same engine and thread count.

use accel_bench::{resnet, stats::percentile};
use accel_client::bench::{run as run_bench, BenchPlan, BenchProtocol};
use accel_client::{Client, ClientOptions};
use accel_core::spec::Preset;
use accel_core::Tensor;
use accel_runtime::engine::onnxruntime::{OrtBackend, SearchPaths};
use accel_runtime::engine::{Backend, LoadOptions};
use accel_runtime::image::{decode_rgb, preprocess_into};
use accel_runtime::Limits;
use anyhow::{bail, Context};
use clap::Parser;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// End-to-end vs in-process benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// The accel binary.
    #[arg(long, default_value = "target/debug/accel")]
    accel: PathBuf,
    /// Measured requests per model.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Engine threads (server and in-process alike).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Photo sent.
    #[arg(long, default_value = "fixtures/images/sklearn_china.jpg")]
    image: PathBuf,
    /// Where the generated ResNet-50 lives (created if missing).
    #[arg(long, default_value = "target/models/resnet50-random.onnx")]
    resnet50: PathBuf,
    /// Directory holding libonnxruntime (default target/accel-home/engines).
    #[arg(long, default_value = "target/accel-home/engines")]
    engines: PathBuf,
}

fn accel(args: &Args, home: &Path) -> Command {
    let mut c = Command::new(&args.accel);
    c.env("ACCEL_HOME", home);
    c
}

fn serve_and_measure(
    args: &Args,
    home: &Path,
    model: &str,
    image: &[u8],
) -> anyhow::Result<accel_client::bench::BenchReport> {
    let mut child = accel(args, home)
        .args([
            "serve",
            "--model",
            model,
            "--engine",
            "onnxruntime",
            "--threads",
            &args.threads.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let grpc = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .with_context(|| format!("no ready line: {line:?}"))?
        .to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let _g = runtime.enter();
    let client = Client::connect(ClientOptions {
        address: grpc,
        service: model.to_string(),
        timeout: Some(Duration::from_secs(60)),
        ..ClientOptions::default()
    })?;
    let plan = BenchPlan {
        protocol: BenchProtocol::TfsGrpc,
        concurrency: 1,
        requests: Some(args.requests),
        duration: Duration::from_secs(3600),
        warmup: 10,
        images: vec![image.to_vec()],
        input: None,
    };
    let report = runtime.block_on(run_bench(&client, &plan));
    let _ = child.kill();
    let _ = child.wait();
    let report = report?;
    if report.errors > 0 {
        bail!("{} errors: {:?}", report.errors, report.errors_by_status);
    }
    Ok(report)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.resnet50.exists() {
        std::fs::create_dir_all(args.resnet50.parent().context("path")?)?;
        std::fs::write(&args.resnet50, resnet::resnet50(50))?;
    }
    let home = std::env::temp_dir().join(format!("accel-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&home)?;
    let engines = std::fs::canonicalize(&args.engines)
        .context("ONNX Runtime engines dir (run scripts/test once)")?;
    std::os::unix::fs::symlink(&engines, home.join("engines"))?;
    let models = [
        (
            "resnet50",
            "ResNet-50 fp32 (random weights)",
            args.resnet50.clone(),
        ),
        (
            "shufflenet",
            "ShuffleNetV2 int8 QDQ",
            PathBuf::from("fixtures/models/shufflenet-v2-12-qdq.onnx"),
        ),
    ];
    let image = std::fs::read(&args.image)?;
    let ort = OrtBackend::init(&SearchPaths {
        engines_dir: Some(engines),
        ..SearchPaths::default()
    })?;
    let pre_spec = Preset::Torchvision.spec().preprocess.context("preset")?;
    println!("| model | in-process preprocess p50 ms | in-process inference p50 / p99 ms | end-to-end gRPC p50 / p99 ms | overhead p50 ms | e2e / inference |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, label, path) in &models {
        let status = accel(&args, &home)
            .args([
                "models",
                "register",
                name,
                path.to_str().context("path")?,
                "--preset",
                "torchvision",
            ])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("registering {name} failed");
        }
        let e2e = serve_and_measure(&args, &home, name, &image)?;
        // In process: same photo, same engine and threads.
        let plan = ort.load(
            &std::fs::read(path)?,
            &LoadOptions {
                threads: args.threads,
                ..LoadOptions::default()
            },
        )?;
        let mut input = vec![0f32; 3 * 224 * 224];
        let (mut pre, mut inf) = (Vec::new(), Vec::new());
        for i in 0..args.requests + 10 {
            let t0 = Instant::now();
            let img = decode_rgb(&image, &Limits::default())?;
            preprocess_into(&img, &pre_spec, &mut input)?;
            let t1 = Instant::now();
            let t = Tensor::from_f32(vec![1, 3, 224, 224], input.clone())?;
            plan.run(std::slice::from_ref(&t))?;
            if i >= 10 {
                pre.push((t1 - t0).as_secs_f64() * 1e3);
                inf.push(t1.elapsed().as_secs_f64() * 1e3);
            }
        }
        let (pre50, inf50, inf99) = (
            percentile(&mut pre, 50.0),
            percentile(&mut inf.clone(), 50.0),
            percentile(&mut inf, 99.0),
        );
        let l = &e2e.latency_ms;
        println!(
            "| {label} | {pre50:.2} | {inf50:.2} / {inf99:.2} | {:.2} / {:.2} | {:.2} | {:.2} |",
            l.p50,
            l.p99,
            l.p50 - inf50,
            l.p50 / inf50
        );
    }
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

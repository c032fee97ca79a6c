//! `accel bench ADDRESS --service NAME FILE...`: latency percentiles,
//! throughput and errors of a running service under closed-loop
//! concurrency, over any of the four protocols `accel serve` speaks (and
//! that Triton, KServe and TF Serving speak), with the server's own
//! per-stage times when it sends `server-timing`.

use super::serve::parse_key;
use crate::output::print_json;
use accel_client::bench::{run as run_bench, BenchPlan, BenchProtocol};
use accel_client::{Client, ClientOptions};
use accel_server::auth::ApiKey;
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Protocols `accel bench` speaks.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    /// TensorFlow Serving gRPC Predict.
    TfsGrpc,
    /// KServe v2 gRPC ModelInfer.
    KserveGrpc,
    /// KServe v2 REST infer with Triton's binary tensor data extension.
    KserveHttp,
    /// TensorFlow Serving REST predict with {"b64": ...} instances.
    TfsRest,
}

/// `accel bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server address, HOST:PORT: for `accel serve`, its grpc= port for the gRPC protocols and its http= port for the HTTP ones.
    pub address: String,
    /// Service name.
    #[arg(long, env = "ACCEL_SERVICE")]
    pub service: String,
    /// Image files sent round-robin, one per request.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Wire protocol.
    #[arg(long, value_enum, default_value = "tfs-grpc")]
    pub protocol: ProtocolArg,
    /// Input name: KServe requests send it (default "input"); TF Serving REST names the instance's input with it (default: unnamed); TF Serving gRPC keys the input with it (default "images").
    #[arg(long)]
    pub input: Option<String>,
    /// Closed-loop clients in parallel.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Measured requests (default: run for --duration).
    #[arg(long, conflicts_with = "duration")]
    pub requests: Option<usize>,
    /// Seconds to run when --requests is not given.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Unmeasured requests first.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// API key.
    #[arg(long, env = "ACCEL_API_KEY", hide_env_values = true, value_parser = parse_key)]
    pub key: Option<ApiKey>,
    /// CA certificate to trust (PEM); turns TLS on.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark.
pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.concurrency == 0 || !a.duration.is_finite() || a.duration <= 0.0 {
        bail!("--concurrency and --duration must be positive");
    }
    let images = a
        .images
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _guard = runtime.enter();
    let client = Client::connect(ClientOptions {
        address: a.address.clone(),
        service: a.service.clone(),
        key: a.key.as_ref().map(|k| k.expose().to_string()),
        tls: a.ca.is_some(),
        ca: a.ca.clone(),
        timeout: Some(Duration::from_secs(60)),
        retries: 0,
    })?;
    let plan = BenchPlan {
        protocol: match a.protocol {
            ProtocolArg::TfsGrpc => BenchProtocol::TfsGrpc,
            ProtocolArg::KserveGrpc => BenchProtocol::KserveGrpc,
            ProtocolArg::KserveHttp => BenchProtocol::KserveHttp,
            ProtocolArg::TfsRest => BenchProtocol::TfsRest,
        },
        concurrency: a.concurrency,
        requests: a.requests,
        duration: Duration::from_secs_f64(a.duration),
        warmup: a.warmup,
        images,
        input: a.input.clone(),
    };
    let report = runtime.block_on(run_bench(&client, &plan))?;
    if a.json {
        return print_json(&report);
    }
    let l = &report.latency_ms;
    println!(
        "{} requests ({} errors) at concurrency {} in {:.2} s: {:.1} req/s",
        report.requests, report.errors, report.concurrency, report.wall_s, report.throughput_rps
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    if let Some(stages) = &report.server_timing_ms {
        let line: Vec<String> = stages
            .0
            .iter()
            .map(|(name, s)| format!("{name} {:.2}/{:.2}", s.p50, s.p99))
            .collect();
        println!("server ms (p50/p99): {}", line.join("  "));
    }
    for (status, n) in &report.errors_by_status {
        println!("errors {status}: {n}");
    }
    Ok(())
}

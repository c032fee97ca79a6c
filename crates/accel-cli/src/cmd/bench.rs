//! `accel bench ADDRESS --service NAME FILE...`: latency percentiles,
//! throughput and errors of a running service under closed-loop
//! concurrency, over any of the four protocols `accel serve` speaks (and
//! that Triton, KServe and TF Serving speak), with the server's own
//! per-stage times when it sends `server-timing`.
//!
//! Reliability runs add: `--rate` (open loop: a fixed offered load, shed
//! requests counted and timed apart from accepted ones), `--malformed`
//! (a share of inputs the server must refuse as invalid), `--check` /
//! `--expect-top1` (every answer for an image has the same top-1) and
//! `--interval` (p50/p99 per interval).

use super::serve::parse_key;
use crate::output::print_json;
use accel_client::bench::{run_with, BenchOptions, BenchPlan, BenchProtocol};
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
    /// Open loop: send this many requests a second whatever the answers (each on its own task); shed requests (RESOURCE_EXHAUSTED / 429) are counted and timed apart from accepted ones.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// Open loop: most requests awaiting an answer; one due beyond it is not sent (counted as client_dropped). Default: 10 × --concurrency.
    #[arg(long, requires = "rate")]
    pub max_in_flight: Option<usize>,
    /// Percent of measured requests that carry a malformed input (truncated image, random bytes, empty image, PNG header with absurd dimensions, chosen deterministically), which must be refused with INVALID_ARGUMENT / 400.
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    pub malformed: f64,
    /// Check answers: every good answer for an image must have the top-1 of the first one (or --expect-top1).
    #[arg(long)]
    pub check: bool,
    /// The expected top-1 index: one for every image, or one per image (comma-separated); implies --check.
    #[arg(long, value_delimiter = ',', value_name = "N")]
    pub expect_top1: Vec<usize>,
    /// Report p50/p99 for every interval of this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub interval: Option<f64>,
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark.
pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.concurrency == 0 || !a.duration.is_finite() || a.duration <= 0.0 {
        bail!("--concurrency and --duration must be positive");
    }
    if !(0.0..=100.0).contains(&a.malformed) {
        bail!("--malformed is a percentage, 0 to 100");
    }
    if a.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
        bail!("--rate must be positive");
    }
    if a.max_in_flight == Some(0) {
        bail!("--max-in-flight must be positive");
    }
    if a.interval.is_some_and(|s| !s.is_finite() || s <= 0.0) {
        bail!("--interval must be positive");
    }
    if a.expect_top1.len() > 1 && a.expect_top1.len() != a.images.len() {
        bail!(
            "--expect-top1 gives {} indices for {} images: give one, or one per image",
            a.expect_top1.len(),
            a.images.len()
        );
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
    let opts = BenchOptions {
        malformed_pct: a.malformed,
        check_answers: a.check,
        expect_top1: a.expect_top1.clone(),
        rate: a.rate,
        max_in_flight: a.max_in_flight,
        interval: a.interval.map(Duration::from_secs_f64),
    };
    let report = runtime.block_on(run_with(&client, &plan, &opts))?;
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
    if let Some(o) = &report.open_loop {
        let (al, sl, lag) = (&o.accepted_latency_ms, &o.shed_latency_ms, &o.send_lag_ms);
        println!(
            "open loop at {:.1} req/s: {} due, {} not sent (in flight ≥ {}); accepted {} ({:.1} req/s), shed {}, other errors {}",
            o.offered_rps, o.scheduled, o.client_dropped, o.max_in_flight, o.accepted, o.accepted_rps, o.shed, o.other_errors
        );
        println!(
            "accepted ms: p50 {:.2}  p99 {:.2}  max {:.2};  shed ms: p50 {:.2}  p99 {:.2}  max {:.2};  send lag ms: p99 {:.2}",
            al.p50, al.p99, al.max, sl.p50, sl.p99, sl.max, lag.p99
        );
    }
    if let Some(m) = &report.malformed {
        let statuses: Vec<String> = m
            .by_status
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!(
            "malformed: {} sent, {} refused as invalid, {} shed, {} unexpected ({})",
            m.sent,
            m.refused,
            m.shed,
            m.unexpected,
            statuses.join(", ")
        );
    }
    if let Some(c) = &report.answers {
        let refs: Vec<String> = c
            .reference_top1
            .iter()
            .map(|r| r.map_or("-".into(), |i| i.to_string()))
            .collect();
        println!(
            "answers: {} checked, {} wrong, {} unreadable (reference top-1: {})",
            c.checked,
            c.wrong,
            c.unreadable,
            refs.join(",")
        );
    }
    for i in report.intervals.iter().flatten() {
        println!(
            "interval {:>7.1} s: {} requests, {} ok, {} shed, {} errors, {} malformed; p50 {:.2}  p99 {:.2} ms",
            i.start_s, i.requests, i.ok, i.shed, i.errors, i.malformed, i.p50_ms, i.p99_ms
        );
    }
    Ok(())
}

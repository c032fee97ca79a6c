//! `accel score HOST:PORT --service NAME IMAGE...`: what Azure ML's
//! `PredictionClient.score_file` did, from the command line.

use super::serve::parse_key;
use crate::fixtures;
use crate::output::print_json;
use accel_client::{Client, ClientOptions};
use accel_runtime::pipeline::ClassScore;
use accel_runtime::postprocess::top_k;
use accel_server::auth::ApiKey;
use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `accel score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Server address, HOST:PORT (the gRPC port).
    pub address: String,
    /// Service name.
    #[arg(long, env = "ACCEL_SERVICE")]
    pub service: String,
    /// API key.
    #[arg(long, env = "ACCEL_API_KEY", hide_env_values = true, value_parser = parse_key)]
    pub key: Option<ApiKey>,
    /// Use TLS.
    #[arg(long)]
    pub tls: bool,
    /// CA certificate to trust (PEM); implies --tls.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Image files.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Classes to print.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Labels (JSON list or one per line); default: ImageNet's when the output has 1000 classes.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Per-call deadline in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Retries on UNAVAILABLE.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// JSON output (the shape of `accel predict --json`).
    #[arg(long)]
    pub json: bool,
}

/// One image's answer.
#[derive(Debug, serde::Serialize)]
pub struct ScoreResult {
    /// The file.
    pub image: String,
    /// Top-k classes.
    pub top: Vec<ClassScore>,
    /// Client-side timing.
    pub timings_ms: ScoreTimings,
}

/// Client-side timing of one call.
#[derive(Debug, serde::Serialize)]
pub struct ScoreTimings {
    /// From sending the request to having the answer.
    pub end_to_end_ms: f64,
}

/// Scores the files, one request each.
pub fn run(a: ScoreArgs) -> anyhow::Result<()> {
    if a.top == 0 {
        bail!("--top must be at least 1");
    }
    let labels: Option<Vec<String>> = match &a.labels {
        Some(p) => Some(super::models::read_labels(p)?),
        None => None,
    };
    let files: Vec<(PathBuf, Vec<u8>)> = a
        .images
        .iter()
        .map(|p| {
            Ok((
                p.clone(),
                std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let runtime = crate::output::current_thread_runtime()?;
    let _guard = runtime.enter();
    let client = Client::connect(ClientOptions {
        address: a.address.clone(),
        service: a.service.clone(),
        key: a.key.as_ref().map(|k| k.expose().to_string()),
        tls: a.tls || a.ca.is_some(),
        ca: a.ca.clone(),
        timeout: Some(Duration::from_millis(a.timeout_ms)),
        retries: a.retries,
    })?;
    let mut results = Vec::new();
    for (path, bytes) in files {
        let t0 = Instant::now();
        let out = runtime
            .block_on(client.score_images(std::slice::from_ref(&bytes)))
            .with_context(|| format!("{}", path.display()))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let imagenet;
        let labels = match &labels {
            Some(l) => Some(l.as_slice()),
            None if out.values.len() == 1000 => {
                imagenet = serde_json::from_str::<Vec<String>>(fixtures::LABELS_JSON)?;
                Some(imagenet.as_slice())
            }
            None => None,
        };
        let top = top_k(&out.values, a.top)
            .into_iter()
            .map(|(index, score)| ClassScore {
                index,
                label: labels.and_then(|l| l.get(index).cloned()),
                score,
            })
            .collect();
        results.push(ScoreResult {
            image: path.display().to_string(),
            top,
            timings_ms: ScoreTimings { end_to_end_ms: ms },
        });
    }
    if a.json {
        return print_json(
            &serde_json::json!({"service": a.service, "address": a.address, "results": results}),
        );
    }
    for r in &results {
        println!("{}", r.image);
        for c in &r.top {
            println!(
                "  {:>5}  {:<28} {:.4}",
                c.index,
                c.label.as_deref().unwrap_or("-"),
                c.score
            );
        }
        println!("  end-to-end {:.2} ms", r.timings_ms.end_to_end_ms);
    }
    Ok(())
}

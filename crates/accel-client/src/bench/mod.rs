//! A closed-loop load generator: `concurrency` workers each send one
//! request, wait for the answer, and send the next, for a number of
//! requests or a duration. Latencies are recorded per request, and the
//! server's per-stage `server-timing` (queue, preprocess, infer, total) when
//! it sends one.
//!
//! Requests are encoded once, before the clock starts; a worker only clones
//! a prepared message. gRPC workers share one HTTP/2 channel (as gRPC
//! clients do); HTTP workers each own one keep-alive HTTP/1.1 connection,
//! opened before the clock starts (as `perf_analyzer` and `wrk` do).

mod grpc;
mod http;
mod timing;

pub use timing::{parse_server_timing, StagePercentiles};

use crate::{Client, ClientError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timing::StageSamples;

/// Which wire protocol to load the server with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchProtocol {
    /// TensorFlow Serving gRPC Predict (as Azure's PredictionClient).
    TfsGrpc,
    /// KServe v2 gRPC ModelInfer with a BYTES input in raw_input_contents.
    KserveGrpc,
    /// KServe v2 REST `POST /v2/models/{service}/infer` with Triton's
    /// binary tensor data extension (a JSON header, then the length-prefixed
    /// image bytes).
    KserveHttp,
    /// TensorFlow Serving REST `POST /v1/models/{service}:predict` with
    /// `{"instances": [{"b64": "..."}]}`.
    TfsRest,
}

impl BenchProtocol {
    /// Whether it is spoken over HTTP/1.1 (else gRPC).
    pub fn is_http(self) -> bool {
        matches!(self, BenchProtocol::KserveHttp | BenchProtocol::TfsRest)
    }
}

/// The input name KServe requests use unless told otherwise (the name
/// Accel's metadata gives the image input of its bundled models, and the
/// usual one of KServe/Triton image models).
pub const DEFAULT_KSERVE_INPUT: &str = "input";

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// Protocol.
    pub protocol: BenchProtocol,
    /// Parallel closed-loop workers.
    pub concurrency: usize,
    /// Stop after this many measured requests (if set).
    pub requests: Option<usize>,
    /// Stop after this long (if `requests` is not set).
    pub duration: Duration,
    /// Unmeasured requests sent first.
    pub warmup: usize,
    /// Encoded images, used round-robin, one per request.
    pub images: Vec<Vec<u8>>,
    /// The input name: KServe protocols send it (default
    /// [`DEFAULT_KSERVE_INPUT`]); TF Serving REST names the instance's input
    /// with it (default: unnamed, the model's only input); TF Serving gRPC
    /// keys its input with it (default `images`, as Azure's client does).
    pub input: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// The protocol used.
    pub protocol: BenchProtocol,
    /// Measured requests sent.
    pub requests: usize,
    /// Of which failed.
    pub errors: usize,
    /// Failures by gRPC code name (`Unavailable`), HTTP status (`HTTP 429`),
    /// or transport failure (`connection error`, `timeout`).
    pub errors_by_status: BTreeMap<String, usize>,
    /// Successful requests per second of wall time.
    pub throughput_rps: f64,
    /// Latency percentiles of successful requests, in ms.
    pub latency_ms: Percentiles,
    /// The server's own per-stage times of successful requests, in ms, by
    /// stage name in the order the server lists them; absent when the
    /// server sent no `server-timing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_timing_ms: Option<StagePercentiles>,
    /// Wall time of the measured phase, in seconds.
    pub wall_s: f64,
    /// Concurrency used.
    pub concurrency: usize,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

/// Percentile `p` (0..=100) by nearest rank of sorted `v`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // The epsilon keeps 99.9 % of 1000 at rank 999 despite float rounding.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One request's result: the raw `server-timing` value on success (if
/// any), else the error's key in [`BenchReport::errors_by_status`].
type Outcome = Result<Option<String>, String>;

/// One closed-loop worker's way of sending a request.
enum Worker {
    Grpc(Box<grpc::GrpcWorker>),
    Http(http::HttpWorker),
}

impl Worker {
    async fn send(&mut self, image: usize) -> Outcome {
        match self {
            Worker::Grpc(w) => w.send(image).await,
            Worker::Http(w) => w.send(image).await,
        }
    }
}

/// What one measured request recorded.
struct Sample {
    result: Result<f64, String>,
    server_timing: Option<String>,
}

/// Runs `plan` against the service `client` points at (its address,
/// service, key, TLS settings and per-call timeout apply to every protocol).
pub async fn run(client: &Client, plan: &BenchPlan) -> Result<BenchReport, ClientError> {
    if plan.images.is_empty() {
        return Err(ClientError::Config("no images to send".into()));
    }
    let concurrency = plan.concurrency.max(1);
    let mut workers = Vec::with_capacity(concurrency);
    if plan.protocol.is_http() {
        let target = Arc::new(http::HttpTarget::new(client, plan)?);
        for _ in 0..concurrency {
            workers.push(Worker::Http(
                http::HttpWorker::connect(Arc::clone(&target)).await?,
            ));
        }
    } else {
        let target = grpc::GrpcTarget::new(client, plan)?;
        workers.extend((0..concurrency).map(|_| Worker::Grpc(Box::new(target.worker()))));
    }

    // Warm-up, shared among the workers so that every connection is warm.
    let mut warming = Vec::new();
    for (w, mut worker) in workers.into_iter().enumerate() {
        let share = (w..plan.warmup).step_by(concurrency).collect::<Vec<_>>();
        warming.push(tokio::spawn(async move {
            for i in share {
                let _ = worker.send(i).await;
            }
            worker
        }));
    }
    let mut workers = Vec::with_capacity(concurrency);
    for t in warming {
        workers.push(t.await.map_err(|e| ClientError::Response(e.to_string()))?);
    }

    let counter = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + plan.duration;
    let mut tasks = Vec::new();
    for mut worker in workers {
        let counter = Arc::clone(&counter);
        let limit = plan.requests;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                match limit {
                    Some(l) if n >= l => break,
                    None if Instant::now() >= deadline => break,
                    _ => {}
                }
                let t0 = Instant::now();
                let r = worker.send(n).await;
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                out.push(match r {
                    Ok(server_timing) => Sample {
                        result: Ok(ms),
                        server_timing,
                    },
                    Err(key) => Sample {
                        result: Err(key),
                        server_timing: None,
                    },
                });
            }
            out
        }));
    }
    let mut lat = Vec::new();
    let mut stages = StageSamples::default();
    let mut errors_by_status = BTreeMap::new();
    let mut total = 0;
    for t in tasks {
        for s in t.await.map_err(|e| ClientError::Response(e.to_string()))? {
            total += 1;
            match s.result {
                Ok(ms) => lat.push(ms),
                Err(key) => *errors_by_status.entry(key).or_insert(0) += 1,
            }
            if let Some(v) = s.server_timing {
                stages.add(&v);
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok(BenchReport {
        protocol: plan.protocol,
        requests: total,
        errors: total - lat.len(),
        errors_by_status,
        throughput_rps: lat.len() as f64 / wall,
        latency_ms: Percentiles {
            p50: percentile(&lat, 50.0),
            p90: percentile(&lat, 90.0),
            p99: percentile(&lat, 99.0),
            p999: percentile(&lat, 99.9),
            max: lat.last().copied().unwrap_or(f64::NAN),
        },
        server_timing_ms: stages.summary(),
        wall_s: wall,
        concurrency,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(super::percentile(&v, 50.0), 500.0);
        assert_eq!(super::percentile(&v, 99.9), 999.0);
        assert_eq!(super::percentile(&v, 100.0), 1000.0);
        assert!(super::percentile(&[], 50.0).is_nan());
    }
}

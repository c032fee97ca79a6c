//! A closed-loop load generator: `concurrency` workers each send one
//! request, wait for the answer, and send the next, for a number of
//! requests or a duration. Latencies are recorded per request, and the
//! server's per-stage `server-timing` (queue, preprocess, infer, total) when
//! it sends one.
//!
//! [`run_with`] adds, through [`BenchOptions`]: an open-loop mode (requests
//! sent at a fixed rate whatever the answers, each on its own task, shed
//! requests counted and timed apart from accepted ones), a deterministic
//! share of malformed requests that must be refused as invalid, a check
//! that every answer for an image has the same top-1, and per-interval
//! percentiles.
//!
//! Requests are encoded once, before the clock starts; a worker only clones
//! a prepared message. gRPC workers share one HTTP/2 channel (as gRPC
//! clients do); HTTP workers each own one keep-alive HTTP/1.1 connection,
//! opened before the clock starts (as `perf_analyzer` and `wrk` do).

mod answer;
mod grpc;
mod http;
mod mix;
mod tally;
mod timing;

pub use answer::argmax;
pub use mix::{malformed_input, MalformedKind, MALFORMED_KINDS};
pub use tally::{is_invalid_argument, is_shed, AnswerReport, IntervalReport, MalformedReport};
pub use timing::{parse_server_timing, StagePercentiles};

use crate::{Client, ClientError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally::{Outcome, Sample};

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

/// What [`run_with`] adds to a plan; the default adds nothing (what
/// [`run`] does).
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// Share of measured requests, in percent, that carry a malformed input
    /// (the kinds of [`MALFORMED_KINDS`], chosen by a hash of the request
    /// number) instead of a good image.
    pub malformed_pct: f64,
    /// Read each good answer's top-1 and compare it with the image's
    /// reference (see `expect_top1`).
    pub check_answers: bool,
    /// The reference top-1: one for every image, or one per image; empty:
    /// the first good answer of each image. Implies `check_answers`.
    pub expect_top1: Vec<usize>,
    /// Open loop: send this many requests a second, whatever the answers
    /// (`concurrency` then only sizes the warm-up and the default
    /// `max_in_flight`).
    pub rate: Option<f64>,
    /// Open loop: most requests awaiting an answer; a request due beyond it
    /// is not sent (counted as `client_dropped`). Default 10 × concurrency.
    pub max_in_flight: Option<usize>,
    /// Report p50/p99 for each interval of this length (by send time).
    pub interval: Option<Duration>,
}

/// What the open-loop mode saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpenLoopReport {
    /// The rate asked for, requests a second.
    pub offered_rps: f64,
    /// The in-flight bound.
    pub max_in_flight: usize,
    /// Requests due by the schedule.
    pub scheduled: usize,
    /// Of which not sent: the in-flight bound was reached.
    pub client_dropped: usize,
    /// Good requests answered.
    pub accepted: usize,
    /// Good requests shed: RESOURCE_EXHAUSTED / HTTP 429.
    pub shed: usize,
    /// Good requests failed otherwise.
    pub other_errors: usize,
    /// Accepted requests per second of wall time.
    pub accepted_rps: f64,
    /// Latency of accepted requests, ms.
    pub accepted_latency_ms: Percentiles,
    /// Latency of shed requests (until the refusal arrived), ms.
    pub shed_latency_ms: Percentiles,
    /// How late requests were sent against the schedule, ms (the load
    /// generator keeping up, or not).
    pub send_lag_ms: Percentiles,
}

/// What happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// The protocol used.
    pub protocol: BenchProtocol,
    /// Measured requests sent (malformed ones included).
    pub requests: usize,
    /// Of which good requests that failed (malformed ones are counted in
    /// `malformed`).
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
    /// Open loop (`rate`): accepted vs shed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoopReport>,
    /// Malformed requests (`malformed_pct` > 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malformed: Option<MalformedReport>,
    /// Checked answers (`check_answers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<AnswerReport>,
    /// Per-interval percentiles (`interval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intervals: Option<Vec<IntervalReport>>,
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

/// One closed-loop worker's way of sending a request.
enum Worker {
    Grpc(Box<grpc::GrpcWorker>),
    Http(http::HttpWorker),
}

impl Worker {
    /// Sends prepared request `index` (the good images, then the malformed
    /// inputs).
    async fn send(&mut self, index: usize) -> Outcome {
        match self {
            Worker::Grpc(w) => w.send(index).await,
            Worker::Http(w) => w.send(index).await,
        }
    }
}

/// The open loop's way of sending: any number of requests at once.
enum Sender {
    Grpc(Box<grpc::GrpcTarget>),
    /// Idle connections; a request takes one or opens a new one.
    Http(Arc<http::HttpTarget>, Mutex<Vec<http::HttpWorker>>),
}

impl Sender {
    async fn send(&self, index: usize) -> Outcome {
        match self {
            Sender::Grpc(t) => t.worker().send(index).await,
            Sender::Http(target, idle) => {
                let w = idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let mut w = w.unwrap_or_else(|| http::HttpWorker::lazy(Arc::clone(target)));
                let r = w.send(index).await;
                idle.lock().unwrap_or_else(|e| e.into_inner()).push(w);
                r
            }
        }
    }
}

/// Runs `plan` against the service `client` points at (its address,
/// service, key, TLS settings and per-call timeout apply to every protocol).
pub async fn run(client: &Client, plan: &BenchPlan) -> Result<BenchReport, ClientError> {
    run_with(client, plan, &BenchOptions::default()).await
}

/// [`run`], with what `opts` adds.
pub async fn run_with(
    client: &Client,
    plan: &BenchPlan,
    opts: &BenchOptions,
) -> Result<BenchReport, ClientError> {
    if plan.images.is_empty() {
        return Err(ClientError::Config("no images to send".into()));
    }
    if !(0.0..=100.0).contains(&opts.malformed_pct) {
        return Err(ClientError::Config(
            "the malformed share must be 0 to 100 %".into(),
        ));
    }
    if opts.expect_top1.len() > 1 && opts.expect_top1.len() != plan.images.len() {
        return Err(ClientError::Config(format!(
            "{} expected top-1 indices for {} images: give one, or one per image",
            opts.expect_top1.len(),
            plan.images.len()
        )));
    }
    if let Some(r) = opts.rate {
        if !r.is_finite() || r <= 0.0 {
            return Err(ClientError::Config("the rate must be positive".into()));
        }
    }
    let images = plan.images.len();
    let check = opts.check_answers || !opts.expect_top1.is_empty();
    // The prepared requests: the good images, then one of each malformed kind.
    let mut prepared = plan.clone();
    if opts.malformed_pct > 0.0 {
        prepared.images.extend(
            MALFORMED_KINDS
                .iter()
                .map(|&k| malformed_input(k, &plan.images[0])),
        );
    }
    let concurrency = plan.concurrency.max(1);
    let mut workers = Vec::with_capacity(concurrency);
    let mut http_target = None;
    let mut grpc_target = None;
    if plan.protocol.is_http() {
        let target = Arc::new(http::HttpTarget::new(client, &prepared, check)?);
        for _ in 0..concurrency {
            workers.push(Worker::Http(
                http::HttpWorker::connect(Arc::clone(&target)).await?,
            ));
        }
        http_target = Some(target);
    } else {
        let target = grpc::GrpcTarget::new(client, &prepared, check)?;
        workers.extend((0..concurrency).map(|_| Worker::Grpc(Box::new(target.worker()))));
        grpc_target = Some(target);
    }

    // Warm-up (good images only), shared among the workers so that every
    // connection is warm.
    let mut warming = Vec::new();
    for (w, mut worker) in workers.into_iter().enumerate() {
        let share = (w..plan.warmup).step_by(concurrency).collect::<Vec<_>>();
        warming.push(tokio::spawn(async move {
            for i in share {
                let _ = worker.send(i % images).await;
            }
            worker
        }));
    }
    let mut workers = Vec::with_capacity(concurrency);
    for t in warming {
        workers.push(t.await.map_err(|e| ClientError::Response(e.to_string()))?);
    }

    let start = Instant::now();
    let (samples, open) = match opts.rate {
        None => (closed_loop(plan, opts, workers, start).await?, None),
        Some(rate) => {
            let sender = match (grpc_target, http_target) {
                (Some(t), _) => Sender::Grpc(Box::new(t)),
                (None, Some(t)) => {
                    let idle = workers
                        .into_iter()
                        .filter_map(|w| match w {
                            Worker::Http(w) => Some(w),
                            Worker::Grpc(_) => None,
                        })
                        .collect();
                    Sender::Http(t, Mutex::new(idle))
                }
                (None, None) => unreachable!("one target is always made"),
            };
            let max_in_flight = opts.max_in_flight.unwrap_or(10 * concurrency).max(1);
            let (samples, scheduled, dropped) =
                open_loop(plan, opts, Arc::new(sender), rate, max_in_flight, start).await;
            (samples, Some((rate, max_in_flight, scheduled, dropped)))
        }
    };
    let wall = start.elapsed().as_secs_f64();
    let t = tally::tally(
        samples,
        images,
        &opts.expect_top1,
        opts.interval.map(|d| d.as_secs_f64()).filter(|s| *s > 0.0),
    );
    let open_loop = open.map(|(rate, max_in_flight, scheduled, dropped)| OpenLoopReport {
        offered_rps: rate,
        max_in_flight,
        scheduled,
        client_dropped: dropped,
        accepted: t.ok_ms.len(),
        shed: t.shed(),
        other_errors: t.errors() - t.shed(),
        accepted_rps: t.ok_ms.len() as f64 / wall,
        accepted_latency_ms: tally::percentiles(&t.ok_ms),
        shed_latency_ms: tally::percentiles(&t.shed_ms),
        send_lag_ms: tally::percentiles(&t.lag_ms),
    });
    Ok(BenchReport {
        protocol: plan.protocol,
        requests: t.total,
        errors: t.errors(),
        throughput_rps: t.ok_ms.len() as f64 / wall,
        latency_ms: tally::percentiles(&t.ok_ms),
        errors_by_status: t.errors_by_status,
        server_timing_ms: t.stages.summary(),
        wall_s: wall,
        concurrency,
        open_loop,
        malformed: (opts.malformed_pct > 0.0).then_some(t.malformed),
        answers: check.then_some(t.answers),
        intervals: opts.interval.is_some().then_some(t.intervals),
    })
}

/// `concurrency` workers, each sending its next request when the last is
/// answered, until the request count or the deadline.
async fn closed_loop(
    plan: &BenchPlan,
    opts: &BenchOptions,
    workers: Vec<Worker>,
    start: Instant,
) -> Result<Vec<Sample>, ClientError> {
    let images = plan.images.len();
    let counter = Arc::new(AtomicUsize::new(0));
    let deadline = start + plan.duration;
    let mut tasks = Vec::new();
    for mut worker in workers {
        let counter = Arc::clone(&counter);
        let limit = plan.requests;
        let pct = opts.malformed_pct;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                match limit {
                    Some(l) if n >= l => break,
                    None if Instant::now() >= deadline => break,
                    _ => {}
                }
                let slot = mix::slot(n, images, pct);
                let t0 = Instant::now();
                let result = worker.send(slot.index(images)).await;
                out.push(Sample {
                    slot,
                    start_s: t0.duration_since(start).as_secs_f64(),
                    ms: t0.elapsed().as_secs_f64() * 1e3,
                    result,
                    lag_ms: None,
                });
            }
            out
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.map_err(|e| ClientError::Response(e.to_string()))?);
    }
    Ok(samples)
}

/// Requests sent at `rate` a second, each on its own task, until the
/// request count or the deadline; then waits for the answers. Returns the
/// samples, the requests due and those not sent (in-flight bound).
async fn open_loop(
    plan: &BenchPlan,
    opts: &BenchOptions,
    sender: Arc<Sender>,
    rate: f64,
    max_in_flight: usize,
    start: Instant,
) -> (Vec<Sample>, usize, usize) {
    let images = plan.images.len();
    let deadline = start + plan.duration;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let (mut scheduled, mut dropped) = (0, 0);
    for n in 0.. {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        match plan.requests {
            Some(l) if n >= l => break,
            None if due >= deadline => break,
            _ => {}
        }
        tokio::time::sleep_until(due.into()).await;
        scheduled += 1;
        if in_flight.load(Ordering::Acquire) >= max_in_flight {
            dropped += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = mix::slot(n, images, opts.malformed_pct);
        let (sender, in_flight, samples) = (
            Arc::clone(&sender),
            Arc::clone(&in_flight),
            Arc::clone(&samples),
        );
        tokio::spawn(async move {
            let t0 = Instant::now();
            let result = sender.send(slot.index(images)).await;
            let sample = Sample {
                slot,
                start_s: t0.duration_since(start).as_secs_f64(),
                ms: t0.elapsed().as_secs_f64() * 1e3,
                result,
                lag_ms: Some(t0.saturating_duration_since(due).as_secs_f64() * 1e3),
            };
            samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sample);
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
    // Every request has its own timeout (the client's): this ends.
    while in_flight.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    (samples, scheduled, dropped)
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

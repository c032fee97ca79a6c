//! A closed-loop load generator: `concurrency` workers each send one
//! request, wait for the answer, and send the next, for a number of
//! requests or a duration. Latencies are recorded per request.

use crate::{Client, ClientError};
use accel_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use accel_proto::inference::{model_infer_request::InferInputTensor, ModelInferRequest};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Which wire protocol to load the server with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchProtocol {
    /// TensorFlow Serving gRPC Predict (as Azure's PredictionClient).
    TfsGrpc,
    /// KServe v2 gRPC ModelInfer with a BYTES input in raw_input_contents.
    KserveGrpc,
}

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
}

/// What happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Measured requests sent.
    pub requests: usize,
    /// Of which failed.
    pub errors: usize,
    /// Failures by gRPC code name.
    pub errors_by_status: BTreeMap<String, usize>,
    /// Successful requests per second of wall time.
    pub throughput_rps: f64,
    /// Latency percentiles of successful requests, in ms.
    pub latency_ms: Percentiles,
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

#[derive(Clone)]
enum Sender {
    Tfs(Client),
    Kserve(GrpcInferenceServiceClient<Channel>, String),
}

impl Sender {
    async fn send(&self, image: &[u8]) -> Result<(), tonic::Code> {
        match self {
            Sender::Tfs(c) => c
                .score_images(&[image.to_vec()])
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    ClientError::Status { code, .. } => code,
                    _ => tonic::Code::Unknown,
                }),
            Sender::Kserve(stub, model) => {
                let mut raw = (image.len() as u32).to_le_bytes().to_vec();
                raw.extend_from_slice(image);
                let req = ModelInferRequest {
                    model_name: model.clone(),
                    inputs: vec![InferInputTensor {
                        name: "input".into(),
                        datatype: "BYTES".into(),
                        shape: vec![1],
                        ..Default::default()
                    }],
                    raw_input_contents: vec![raw],
                    ..Default::default()
                };
                stub.clone()
                    .model_infer(req)
                    .await
                    .map(|_| ())
                    .map_err(|s| s.code())
            }
        }
    }
}

/// Runs `plan` against the service `client` points at.
pub async fn run(client: &Client, plan: &BenchPlan) -> Result<BenchReport, ClientError> {
    if plan.images.is_empty() {
        return Err(ClientError::Config("no images to send".into()));
    }
    let sender = match plan.protocol {
        BenchProtocol::TfsGrpc => Sender::Tfs(client.clone()),
        BenchProtocol::KserveGrpc => Sender::Kserve(
            GrpcInferenceServiceClient::new(client.channel()).max_decoding_message_size(64 << 20),
            client.service().to_string(),
        ),
    };
    for i in 0..plan.warmup {
        let _ = sender.send(&plan.images[i % plan.images.len()]).await;
    }
    let images = Arc::new(plan.images.clone());
    let counter = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + plan.duration;
    let mut tasks = Vec::new();
    for _ in 0..plan.concurrency.max(1) {
        let (sender, images, counter) = (sender.clone(), Arc::clone(&images), Arc::clone(&counter));
        let limit = plan.requests;
        tasks.push(tokio::spawn(async move {
            let mut out: Vec<Result<f64, tonic::Code>> = Vec::new();
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                match limit {
                    Some(l) if n >= l => break,
                    None if Instant::now() >= deadline => break,
                    _ => {}
                }
                let t0 = Instant::now();
                let r = sender.send(&images[n % images.len()]).await;
                out.push(r.map(|()| t0.elapsed().as_secs_f64() * 1e3));
            }
            out
        }));
    }
    let mut lat = Vec::new();
    let mut errors_by_status = BTreeMap::new();
    let mut total = 0;
    for t in tasks {
        for r in t.await.map_err(|e| ClientError::Response(e.to_string()))? {
            total += 1;
            match r {
                Ok(ms) => lat.push(ms),
                Err(code) => *errors_by_status.entry(format!("{code:?}")).or_insert(0) += 1,
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok(BenchReport {
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
        wall_s: wall,
        concurrency: plan.concurrency.max(1),
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

//! Prometheus metrics: one registry, one `accel_` prefix, `_seconds`
//! histograms whose buckets are defined here and nowhere else.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Latency buckets, in seconds: 0.5 ms to 10 s.
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
    0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Labels of per-service histograms.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// Service name.
    pub service: String,
}

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Service name (`unknown` when routing failed).
    pub service: String,
    /// `tfs_grpc`, `kserve_grpc`, `kserve_http` or `tfs_rest`.
    pub protocol: String,
    /// gRPC code name (`OK`, `INVALID_ARGUMENT`, ...).
    pub code: String,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    queue_wait: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    preprocess: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    inference: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    total: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    admission_limit: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Per-stage durations of one successful request.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// Waiting in the admission queue.
    pub queue_wait: Duration,
    /// Decoding and preprocessing.
    pub preprocess: Duration,
    /// The engine.
    pub inference: Duration,
    /// From arrival in the core to the answer.
    pub total: Duration,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("accel");
        let requests = Family::<RequestLabels, Counter>::default();
        let make = || {
            Family::<ServiceLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                histogram as fn() -> Histogram,
            )
        };
        let (queue_wait, preprocess, inference, total) = (make(), make(), make(), make());
        registry.register(
            "requests",
            "Requests answered, by service, protocol and gRPC code",
            requests.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time spent waiting for an engine worker",
            queue_wait.clone(),
        );
        registry.register(
            "preprocess_seconds",
            "Image decoding and preprocessing time",
            preprocess.clone(),
        );
        registry.register("inference_seconds", "Engine run time", inference.clone());
        registry.register(
            "request_duration_seconds",
            "Time from arrival in the request core to the answer, successful requests",
            total.clone(),
        );
        let (in_flight, admission_limit) = (Gauge::default(), Gauge::default());
        registry.register(
            "requests_in_flight",
            "Requests admitted and not yet answered",
            in_flight.clone(),
        );
        registry.register(
            "admission_limit",
            "The most requests admitted at once (workers + preprocess workers + queue); beyond it, RESOURCE_EXHAUSTED / 429",
            admission_limit.clone(),
        );
        Metrics {
            registry,
            requests,
            queue_wait,
            preprocess,
            inference,
            total,
            in_flight,
            admission_limit,
        }
    }

    /// Counts one answered request.
    pub fn count(&self, service: &str, protocol: &str, code: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                service: service.to_string(),
                protocol: protocol.to_string(),
                code: code.to_string(),
            })
            .inc();
    }

    /// Records the stage times of a successful request.
    pub fn observe(&self, service: &str, t: &StageTimes) {
        let l = ServiceLabels {
            service: service.to_string(),
        };
        self.queue_wait
            .get_or_create(&l)
            .observe(t.queue_wait.as_secs_f64());
        self.preprocess
            .get_or_create(&l)
            .observe(t.preprocess.as_secs_f64());
        self.inference
            .get_or_create(&l)
            .observe(t.inference.as_secs_f64());
        self.total.get_or_create(&l).observe(t.total.as_secs_f64());
    }

    /// Sets the admission gauges (read when the metrics are rendered).
    pub fn set_admission(&self, in_flight: usize, limit: usize) {
        self.in_flight
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        self.admission_limit
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

//! What every transport turns its wire request into, and what it gets back.

use crate::auth::ApiKey;
use crate::metrics::StageTimes;
use accel_core::Tensor;
use accel_runtime::pipeline::NamedOutput;
use std::time::{Duration, Instant};

/// The transports, for routing decisions and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TensorFlow Serving gRPC `PredictionService`.
    TfsGrpc,
    /// KServe v2 gRPC `GRPCInferenceService`.
    KserveGrpc,
    /// KServe v2 REST.
    KserveHttp,
    /// TensorFlow Serving REST.
    TfsRest,
}

impl Protocol {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::TfsGrpc => "tfs_grpc",
            Protocol::KserveGrpc => "kserve_grpc",
            Protocol::KserveHttp => "kserve_http",
            Protocol::TfsRest => "tfs_rest",
        }
    }
}

/// Which service a request is for, as far as its wire format says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// An explicit model/service name (`model_spec.name`, KServe model name).
    pub name: Option<String>,
    /// An explicit version.
    pub version: Option<u64>,
    /// The `x-ms-aml-grpc-service-route` header (`/api/v1/service/<name>`).
    pub route: Option<String>,
}

/// One named input tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedInput {
    /// The name the client used.
    pub name: String,
    /// The values.
    pub tensor: Tensor,
}

/// A transport-neutral inference request.
#[derive(Debug, Clone)]
pub struct InferRequest {
    /// Transport.
    pub protocol: Protocol,
    /// Routing information.
    pub target: Target,
    /// The presented API key, if any.
    pub api_key: Option<ApiKey>,
    /// Inputs.
    pub inputs: Vec<NamedInput>,
    /// Requested outputs (by name or alias); empty = all.
    pub output_filter: Vec<String>,
    /// Relative deadline from arrival, if the client set one.
    pub timeout: Option<Duration>,
}

/// A transport-neutral answer.
#[derive(Debug, Clone)]
pub struct InferResponse {
    /// The service that answered.
    pub service: String,
    /// The model version that answered.
    pub version: u32,
    /// The outputs asked for, each with the name the client used (or the
    /// model's own name when none was asked for).
    pub outputs: Vec<(String, NamedOutput)>,
    /// Arrival time (for logging).
    pub arrived: Instant,
    /// How long each stage took (also answered as `server-timing`).
    pub times: StageTimes,
}

/// The header (HTTP) and initial metadata key (gRPC) that carries
/// [`InferResponse::server_timing`].
pub const SERVER_TIMING: &str = "server-timing";

impl InferResponse {
    /// The stage times as a W3C `Server-Timing` value, in milliseconds:
    /// `queue;dur=0.050, preprocess;dur=2.100, infer;dur=25.300, total;dur=27.600`.
    pub fn server_timing(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let t = &self.times;
        format!(
            "queue;dur={:.3}, preprocess;dur={:.3}, infer;dur={:.3}, total;dur={:.3}",
            ms(t.queue_wait),
            ms(t.preprocess),
            ms(t.inference),
            ms(t.total)
        )
    }
}

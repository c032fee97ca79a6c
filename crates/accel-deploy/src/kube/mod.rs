//! Kubernetes: manifests for one `accel serve` service, server-side apply,
//! rollout wait, status, and delete by labels.
//!
//! - [`KubeDeployment`] says what to deploy; [`manifests`] turns it into a
//!   Secret (with `--auth`), a Deployment, a Service and a
//!   HorizontalPodAutoscaler (with `--autoscale`), in apply order;
//!   [`to_yaml_stream`] prints them as one multi-document YAML stream.
//! - [`connect`] builds a client from a kubeconfig (optional context and
//!   namespace); [`apply`] sends each object as a server-side apply patch
//!   (field manager [`FIELD_MANAGER`], conflicts forced); [`wait`] follows the
//!   Deployment's rollout; [`status`] reports it; [`delete`] removes what
//!   carries this service's labels (HPA, Service, Deployment, Secret).
//!
//! The container runs the image's entrypoint (`accel serve …`) configured
//! through its environment: `ACCEL_HOST=0.0.0.0`, `ACCEL_GRPC_PORT`,
//! `ACCEL_HTTP_PORT`, `ACCEL_THREADS` (the CPU limit, rounded up) and, with
//! auth, `ACCEL_API_KEYS` from the Secret (serve's `--key`, comma-separated).
//! Probes use the KServe v2 health endpoints `/v2/health/live` (liveness and
//! startup) and `/v2/health/ready` (readiness) on the HTTP port.
//!
//! The client functions are async: call them inside a Tokio runtime.

mod api;
mod manifests;

pub use api::{
    apply, connect, delete, rollout_status, status, wait, wait_with_interval, Condition,
    ConnectOptions, KubeTarget, ObjectRef, RolloutStatus, ServiceStatus, FIELD_MANAGER,
};
pub use manifests::{
    from_yaml_stream, manifests, selector, to_yaml_stream, Autoscale, KubeDeployment, Manifest,
    Resources, API_KEYS_ENV, API_KEYS_SECRET_KEY, DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT,
    DEFAULT_USER, HEALTH_LIVE_PATH, HEALTH_READY_PATH, LABEL_INSTANCE, LABEL_MANAGED_BY,
    LABEL_NAME, LABEL_SERVICE,
};

/// The client library, re-exported so that callers use the same version.
pub use ::kube::Client;

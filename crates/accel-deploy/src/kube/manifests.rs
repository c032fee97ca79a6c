//! What to deploy ([`KubeDeployment`]) and the Kubernetes objects for it.

use crate::DeployError;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceFieldSelector, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::str::FromStr;

/// `app.kubernetes.io/name`: always `accel`.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the service name.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`: always `accel`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `accel.dev/service`: the service name.
pub const LABEL_SERVICE: &str = "accel.dev/service";
/// The value of [`LABEL_NAME`] and [`LABEL_MANAGED_BY`].
const APP: &str = "accel";

/// The container's gRPC port unless overridden (TF Serving's).
pub const DEFAULT_GRPC_PORT: u16 = 8500;
/// The container's HTTP port unless overridden (the image's, as `accel
/// images create` sets it: TF Serving's REST port).
pub const DEFAULT_HTTP_PORT: u16 = 8501;
/// The image's non-root user (uid and gid) unless overridden.
pub const DEFAULT_USER: i64 = 10001;
/// The server's liveness endpoint (KServe v2; 200 once the listener is up).
pub const HEALTH_LIVE_PATH: &str = "/v2/health/live";
/// The server's readiness endpoint (KServe v2; 503 until every model is ready).
pub const HEALTH_READY_PATH: &str = "/v2/health/ready";
/// The environment variable `accel serve` reads its `--key`s from (comma-separated).
pub const API_KEYS_ENV: &str = "ACCEL_API_KEYS";
/// The key, in the Secret, that holds the comma-separated API keys.
pub const API_KEYS_SECRET_KEY: &str = "api-keys";
/// Pod-template annotation: the keys' sha256, so that new keys roll the pods.
const KEYS_HASH_ANNOTATION: &str = "accel.dev/api-keys-sha256";
/// The container's name.
const CONTAINER: &str = "accel";
/// Environment variables this module sets itself.
const RESERVED_ENV: [&str; 5] = [
    "ACCEL_HOST",
    "ACCEL_GRPC_PORT",
    "ACCEL_HTTP_PORT",
    "ACCEL_THREADS",
    API_KEYS_ENV,
];

/// Horizontal autoscaling on CPU utilization (`--autoscale MIN:MAX:CPU%`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Autoscale {
    /// Fewest replicas (at least 1).
    pub min: i32,
    /// Most replicas (at least `min`).
    pub max: i32,
    /// Target average CPU utilization, percent of the CPU request.
    pub cpu_percent: i32,
}

impl FromStr for Autoscale {
    type Err = DeployError;

    /// Parses `MIN:MAX:CPU` (a trailing `%` on CPU is accepted).
    fn from_str(s: &str) -> Result<Self, DeployError> {
        let bad = || {
            DeployError::InvalidArgument(format!(
                "autoscale {s:?}: expected MIN:MAX:CPU%, e.g. 2:5:70"
            ))
        };
        let parts: Vec<&str> = s.split(':').collect();
        let [min, max, cpu] = parts.as_slice() else {
            return Err(bad());
        };
        let num = |t: &str| t.trim().parse::<i32>().map_err(|_| bad());
        let a = Autoscale {
            min: num(min)?,
            max: num(max)?,
            cpu_percent: num(cpu.trim().trim_end_matches('%'))?,
        };
        a.validate()?;
        Ok(a)
    }
}

impl Autoscale {
    fn validate(&self) -> Result<(), DeployError> {
        if self.min < 1 {
            return Err(DeployError::InvalidArgument(format!(
                "autoscale: the minimum replica count must be at least 1, not {}",
                self.min
            )));
        }
        if self.max < self.min {
            return Err(DeployError::InvalidArgument(format!(
                "autoscale: the maximum ({}) is below the minimum ({})",
                self.max, self.min
            )));
        }
        if !(1..=1000).contains(&self.cpu_percent) {
            return Err(DeployError::InvalidArgument(format!(
                "autoscale: the CPU target must be 1..1000 percent of the request, not {}",
                self.cpu_percent
            )));
        }
        Ok(())
    }
}

/// Container resource requests and limits, as Kubernetes quantities by
/// resource name (`cpu`, `memory`, `nvidia.com/gpu`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    /// What the scheduler reserves (default: `cpu: 500m`, `memory: 512Mi`).
    pub requests: BTreeMap<String, String>,
    /// The ceiling (default: `cpu: 2`, `memory: 2Gi`).
    pub limits: BTreeMap<String, String>,
}

impl Default for Resources {
    fn default() -> Self {
        let map = |pairs: [(&str, &str); 2]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Resources {
            requests: map([("cpu", "500m"), ("memory", "512Mi")]),
            limits: map([("cpu", "2"), ("memory", "2Gi")]),
        }
    }
}

/// One `accel serve` service on Kubernetes: everything [`manifests`] needs.
///
/// Construct with [`KubeDeployment::new`], then set fields.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KubeDeployment {
    /// The service name: names the Deployment, Service and HPA (`<service>`)
    /// and the Secret (`<service>-api-keys`). An RFC 1035 label.
    pub service: String,
    /// The namespace of every object.
    pub namespace: String,
    /// The image, `REGISTRY/REPOSITORY:TAG` or `REGISTRY/REPOSITORY@sha256:…`.
    pub image: String,
    /// Replicas (ignored with `autoscale`: the Deployment then leaves
    /// `spec.replicas` to the HPA, so that re-applying does not undo scaling).
    pub replicas: i32,
    /// Horizontal autoscaling (adds a HorizontalPodAutoscaler).
    pub autoscale: Option<Autoscale>,
    /// API keys the server requires (non-empty = auth: adds a Secret whose
    /// `api-keys` feeds `ACCEL_API_KEYS`). Generated by the caller.
    pub api_keys: Vec<String>,
    /// The container's (and Service's) gRPC port.
    pub grpc_port: u16,
    /// The container's (and Service's) HTTP port, also used by the probes.
    pub http_port: u16,
    /// Requests and limits of the container.
    pub resources: Resources,
    /// Arguments after the image's entrypoint (empty: the image's own CMD).
    pub args: Vec<String>,
    /// Extra environment variables (e.g. `ACCEL_WORKERS`); the ones this
    /// module sets (`ACCEL_HOST`, ports, threads, keys) are refused.
    pub env: BTreeMap<String, String>,
    /// The uid and gid the container runs as (the image's user).
    pub run_as_user: i64,
    /// Mount the root filesystem read-only (default). `/tmp` is a writable
    /// emptyDir either way: the image's `ACCEL_HOME` is `/tmp/accel`, and a
    /// serve of the image's bundle with `--key` never opens a registry.
    /// Turn off for an image that writes elsewhere.
    pub read_only_root_filesystem: bool,
    /// The name of an existing `kubernetes.io/dockerconfigjson` Secret for
    /// pulling from a private registry.
    pub image_pull_secret: Option<String>,
}

impl std::fmt::Debug for KubeDeployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDeployment")
            .field("service", &self.service)
            .field("namespace", &self.namespace)
            .field("image", &self.image)
            .field("replicas", &self.replicas)
            .field("autoscale", &self.autoscale)
            .field("api_keys", &format!("<{} redacted>", self.api_keys.len()))
            .field("grpc_port", &self.grpc_port)
            .field("http_port", &self.http_port)
            .field("resources", &self.resources)
            .field("args", &self.args)
            .field("env", &self.env)
            .field("run_as_user", &self.run_as_user)
            .field("read_only_root_filesystem", &self.read_only_root_filesystem)
            .field("image_pull_secret", &self.image_pull_secret)
            .finish()
    }
}

impl KubeDeployment {
    /// One replica, no autoscaling, no auth, default ports, resources and
    /// user, read-only root filesystem.
    pub fn new(
        service: impl Into<String>,
        namespace: impl Into<String>,
        image: impl Into<String>,
    ) -> Self {
        KubeDeployment {
            service: service.into(),
            namespace: namespace.into(),
            image: image.into(),
            replicas: 1,
            autoscale: None,
            api_keys: Vec::new(),
            grpc_port: DEFAULT_GRPC_PORT,
            http_port: DEFAULT_HTTP_PORT,
            resources: Resources::default(),
            args: Vec::new(),
            env: BTreeMap::new(),
            run_as_user: DEFAULT_USER,
            read_only_root_filesystem: true,
            image_pull_secret: None,
        }
    }

    /// Whether the server requires API keys (some are given).
    pub fn auth(&self) -> bool {
        !self.api_keys.is_empty()
    }

    /// The Secret's name: `<service>-api-keys`.
    pub fn secret_name(&self) -> String {
        format!("{}-api-keys", self.service)
    }

    /// Every object's labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        labels(&self.service)
    }

    /// Checks every field; the first problem is InvalidArgument.
    pub fn validate(&self) -> Result<(), DeployError> {
        validate_label_name("service name", &self.service, true)?;
        validate_label_name("namespace", &self.namespace, false)?;
        validate_image_ref(&self.image)?;
        if self.replicas < 0 {
            return Err(invalid(format!(
                "replicas must not be negative, not {}",
                self.replicas
            )));
        }
        if let Some(a) = &self.autoscale {
            a.validate()?;
            if !self.resources.requests.contains_key("cpu") {
                return Err(invalid(
                    "autoscaling on CPU utilization needs a CPU request".to_string(),
                ));
            }
        }
        for key in &self.api_keys {
            if key.is_empty()
                || key.contains(',')
                || key.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    "an API key must be non-empty, without commas, whitespace or control characters"
                        .to_string(),
                ));
            }
        }
        if self.grpc_port == 0 || self.http_port == 0 || self.grpc_port == self.http_port {
            return Err(invalid(format!(
                "the gRPC and HTTP ports must be two different non-zero ports, not {} and {}",
                self.grpc_port, self.http_port
            )));
        }
        for (which, map) in [
            ("request", &self.resources.requests),
            ("limit", &self.resources.limits),
        ] {
            for (name, q) in map {
                if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
                    return Err(invalid(format!("resource name {name:?} is not valid")));
                }
                parse_quantity(q).ok_or_else(|| {
                    invalid(format!(
                        "resource {which} {name}={q:?} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1Gi)"
                    ))
                })?;
            }
        }
        for (name, req) in &self.resources.requests {
            if let Some(lim) = self.resources.limits.get(name) {
                if parse_quantity(req) > parse_quantity(lim) {
                    return Err(invalid(format!(
                        "resource {name}: the request {req} exceeds the limit {lim}"
                    )));
                }
            }
        }
        for name in self.env.keys() {
            let ok = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok {
                return Err(invalid(format!(
                    "environment variable name {name:?} is not valid"
                )));
            }
            if RESERVED_ENV.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "environment variable {name} is set by the deployment itself"
                )));
            }
        }
        if self.run_as_user <= 0 {
            return Err(invalid(format!(
                "run_as_user must be a non-root uid, not {}",
                self.run_as_user
            )));
        }
        if let Some(s) = &self.image_pull_secret {
            validate_label_name("image pull secret", s, false)
                .or_else(|_| validate_subdomain("image pull secret", s))?;
        }
        Ok(())
    }
}

/// One object of a deployment, in its typed form. Serializes as the plain
/// Kubernetes object (`apiVersion`, `kind`, `metadata`, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum Manifest {
    /// `v1/Secret` with the API keys.
    Secret(Secret),
    /// `apps/v1/Deployment` running `accel serve`.
    Deployment(Deployment),
    /// `v1/Service`, ClusterIP, gRPC and HTTP ports.
    Service(Service),
    /// `autoscaling/v2/HorizontalPodAutoscaler` on CPU utilization.
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
}

impl Manifest {
    /// The object's kind (`Deployment`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::Secret(_) => "Secret",
            Manifest::Deployment(_) => "Deployment",
            Manifest::Service(_) => "Service",
            Manifest::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Manifest::Secret(o) => &o.metadata,
            Manifest::Deployment(o) => &o.metadata,
            Manifest::Service(o) => &o.metadata,
            Manifest::HorizontalPodAutoscaler(o) => &o.metadata,
        }
    }

    /// The object's name (empty if unset).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// The object's namespace (empty if unset).
    pub fn namespace(&self) -> &str {
        self.metadata().namespace.as_deref().unwrap_or("")
    }

    /// The object as JSON.
    pub fn to_value(&self) -> serde_json::Value {
        // Serializing these types to a JSON value cannot fail (string keys,
        // no non-finite floats).
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// The label selector (`k=v,…`) that finds every object of `service`.
pub fn selector(service: &str) -> String {
    labels(service)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels(service: &str) -> BTreeMap<String, String> {
    [
        (LABEL_NAME, APP),
        (LABEL_INSTANCE, service),
        (LABEL_MANAGED_BY, APP),
        (LABEL_SERVICE, service),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The labels pods are selected by (a Deployment's selector is immutable:
/// keep it to the two stable ones).
fn pod_selector(service: &str) -> BTreeMap<String, String> {
    [(LABEL_NAME, APP), (LABEL_INSTANCE, service)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The objects for `d`, in apply order: Secret (with auth), Deployment,
/// Service, HorizontalPodAutoscaler (with autoscale).
pub fn manifests(d: &KubeDeployment) -> Result<Vec<Manifest>, DeployError> {
    d.validate()?;
    let mut out = Vec::new();
    if d.auth() {
        out.push(Manifest::Secret(secret(d)));
    }
    out.push(Manifest::Deployment(deployment(d)));
    out.push(Manifest::Service(service(d)));
    if let Some(a) = &d.autoscale {
        out.push(Manifest::HorizontalPodAutoscaler(hpa(d, a)));
    }
    Ok(out)
}

fn meta(d: &KubeDeployment, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(d.namespace.clone()),
        labels: Some(d.labels()),
        ..ObjectMeta::default()
    }
}

fn keys_joined(d: &KubeDeployment) -> String {
    d.api_keys.join(",")
}

fn secret(d: &KubeDeployment) -> Secret {
    Secret {
        metadata: meta(d, d.secret_name()),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            API_KEYS_SECRET_KEY.to_string(),
            ByteString(keys_joined(d).into_bytes()),
        )])),
        ..Secret::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn http_probe(path: &str, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

fn quantities(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!map.is_empty()).then(|| {
        map.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

fn deployment(d: &KubeDeployment) -> Deployment {
    let mut envs = vec![
        env("ACCEL_HOST", "0.0.0.0"),
        env("ACCEL_GRPC_PORT", d.grpc_port.to_string()),
        env("ACCEL_HTTP_PORT", d.http_port.to_string()),
        // Engine threads = the CPU limit rounded up (the node's allocatable
        // CPUs without a limit), not every core of the node.
        EnvVar {
            name: "ACCEL_THREADS".into(),
            value: None,
            value_from: Some(EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    container_name: Some(CONTAINER.into()),
                    resource: "limits.cpu".into(),
                    divisor: Some(Quantity("1".into())),
                }),
                ..EnvVarSource::default()
            }),
        },
    ];
    let mut annotations = BTreeMap::new();
    if d.auth() {
        envs.push(EnvVar {
            name: API_KEYS_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: d.secret_name(),
                    key: API_KEYS_SECRET_KEY.into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        });
        annotations.insert(
            KEYS_HASH_ANNOTATION.to_string(),
            hex::encode(Sha256::digest(keys_joined(d).as_bytes())),
        );
    }
    envs.extend(d.env.iter().map(|(k, v)| env(k, v.clone())));

    let container = Container {
        name: CONTAINER.into(),
        image: Some(d.image.clone()),
        args: (!d.args.is_empty()).then(|| d.args.clone()),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: d.grpc_port.into(),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".into()),
                container_port: d.http_port.into(),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        env: Some(envs),
        resources: Some(ResourceRequirements {
            requests: quantities(&d.resources.requests),
            limits: quantities(&d.resources.limits),
            ..ResourceRequirements::default()
        }),
        // Models load before the listeners open: give loading up to 5
        // minutes before liveness takes over.
        startup_probe: Some(http_probe(HEALTH_LIVE_PATH, 5, 3, 60)),
        liveness_probe: Some(http_probe(HEALTH_LIVE_PATH, 10, 5, 3)),
        readiness_probe: Some(http_probe(HEALTH_READY_PATH, 5, 3, 3)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            read_only_root_filesystem: Some(d.read_only_root_filesystem),
            run_as_non_root: Some(true),
            run_as_user: Some(d.run_as_user),
            run_as_group: Some(d.run_as_user),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };

    Deployment {
        metadata: meta(d, d.service.clone()),
        spec: Some(DeploymentSpec {
            replicas: d.autoscale.is_none().then_some(d.replicas),
            selector: LabelSelector {
                match_labels: Some(pod_selector(&d.service)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                // Keep full serving capacity during a rollout.
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(d.labels()),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // The server never talks to the API server.
                    automount_service_account_token: Some(false),
                    // No `<SERVICE>_PORT…` variables next to serve's ACCEL_*.
                    enable_service_links: Some(false),
                    image_pull_secrets: d
                        .image_pull_secret
                        .as_ref()
                        .map(|n| vec![LocalObjectReference { name: n.clone() }]),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(d.run_as_user),
                        run_as_group: Some(d.run_as_user),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn service(d: &KubeDeployment) -> Service {
    Service {
        metadata: meta(d, d.service.clone()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(pod_selector(&d.service)),
            ports: Some(vec![
                ServicePort {
                    name: Some("grpc".into()),
                    port: d.grpc_port.into(),
                    target_port: Some(IntOrString::String("grpc".into())),
                    protocol: Some("TCP".into()),
                    // gRPC over cleartext HTTP/2.
                    app_protocol: Some("kubernetes.io/h2c".into()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("http".into()),
                    port: d.http_port.into(),
                    target_port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    app_protocol: Some("http".into()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn hpa(d: &KubeDeployment, a: &Autoscale) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: meta(d, d.service.clone()),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: d.service.clone(),
            },
            min_replicas: Some(a.min),
            max_replicas: a.max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.cpu_percent),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        }),
        status: None,
    }
}

/// The objects as one multi-document YAML stream (`---` between documents),
/// as `kubectl apply -f -` reads it.
pub fn to_yaml_stream(objects: &[Manifest]) -> Result<String, DeployError> {
    // No folded/literal block scalars: long values (base64 keys) stay on one
    // line, as kubectl prints them.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    serde_saphyr::to_string_multiple_with_options(objects, options).map_err(|e| {
        DeployError::InvalidArgument(format!("cannot write the manifests as YAML: {e}"))
    })
}

/// Parses a multi-document YAML stream of the kinds [`Manifest`] holds.
pub fn from_yaml_stream(yaml: &str) -> Result<Vec<Manifest>, DeployError> {
    serde_saphyr::from_multiple(yaml)
        .map_err(|e| DeployError::InvalidArgument(format!("cannot read the manifests: {e}")))
}

fn invalid(msg: String) -> DeployError {
    DeployError::InvalidArgument(msg)
}

/// An RFC 1123 label (`rfc1035`: RFC 1035, must start with a letter).
pub(crate) fn validate_label_name(
    what: &str,
    name: &str,
    rfc1035: bool,
) -> Result<(), DeployError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && (!rfc1035 || name.starts_with(|c: char| c.is_ascii_lowercase()));
    if ok {
        Ok(())
    } else {
        let first = if rfc1035 {
            "a letter"
        } else {
            "a letter or digit"
        };
        Err(invalid(format!(
            "{what} {name:?} is not valid for Kubernetes: at most 63 lower-case letters, digits and '-', starting with {first} and ending with a letter or digit"
        )))
    }
}

fn validate_subdomain(what: &str, name: &str) -> Result<(), DeployError> {
    let ok = name.len() <= 253
        && name
            .split('.')
            .all(|l| validate_label_name(what, l, false).is_ok());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} {name:?} is not a valid Kubernetes object name"
        )))
    }
}

/// `[HOST[:PORT]/]PATH[:TAG][@ALGO:HEX]`, with a tag or a digest.
fn validate_image_ref(image: &str) -> Result<(), DeployError> {
    let bad = |why: &str| {
        invalid(format!(
            "image reference {image:?} {why}: expected REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST"
        ))
    };
    if image.is_empty() || image.len() > 4096 {
        return Err(bad("has no usable length"));
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace"));
    }
    let (name_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return Err(bad("has a malformed digest"));
        };
        let hex_ok = |n: usize| {
            hex.len() == n
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        };
        let ok = match algo {
            "sha256" => hex_ok(64),
            "sha512" => hex_ok(128),
            _ => false,
        };
        if !ok {
            return Err(bad("has a malformed digest"));
        }
    }
    // The tag follows the last ':' after the last '/' (a ':' before it is
    // the registry's port).
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && !tag.starts_with(['.', '-']);
        if !ok {
            return Err(bad("has a malformed tag"));
        }
    }
    if tag.is_none() && digest.is_none() {
        return Err(bad("has neither a tag nor a digest"));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 {
        let host = parts[0];
        if host.contains(['.', ':']) || host == "localhost" {
            let ok = host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !ok {
                return Err(bad("has a malformed registry host"));
            }
            parts.remove(0);
        }
    }
    let path_ok = !parts.is_empty()
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
                && p.starts_with(|c: char| c.is_ascii_alphanumeric())
                && p.ends_with(|c: char| c.is_ascii_alphanumeric())
        });
    if !path_ok {
        return Err(bad(
            "has a malformed repository path (lower-case letters, digits, '.', '_', '-')",
        ));
    }
    Ok(())
}

/// A Kubernetes quantity's value (for comparisons), or None if malformed.
fn parse_quantity(q: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 16] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("", 1.0),
    ];
    let q = q.trim_start_matches('+');
    let num_end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    if let Some((_, mult)) = SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        return Some(value * mult);
    }
    // Decimal exponent: 1e3, 5E-2.
    let exp = suffix.strip_prefix(['e', 'E'])?;
    let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(value * 10f64.powi(exp.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1Gi"), Some(1_073_741_824.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("0.5"), Some(0.5));
        for bad in ["", "m", "1x", "1..2", "Gi", "1e", "-1"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn image_refs() {
        for ok in [
            "registry.example:5000/team/accel-resnet:1",
            "localhost/accel:latest",
            "docker.io/library/accel:v1.2.3",
            "accel:1",
            "127.0.0.1:5000/accel@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "reg.io/a/b:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            validate_image_ref(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "reg.io/accel",
            "reg.io/Accel:1",
            "reg.io/accel:",
            "reg.io/accel:1 ",
            "reg.io/accel@sha256:12",
            "reg.io//accel:1",
            "reg.io/accel:-x",
        ] {
            assert!(validate_image_ref(bad).is_err(), "{bad:?} accepted");
        }
    }
}

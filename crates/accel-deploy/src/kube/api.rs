//! Talking to the API server: connect, server-side apply, rollout wait,
//! status, delete by labels.

use super::manifests::{selector, validate_label_name, Manifest};
use crate::DeployError;
use ::kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::{Client, Config, Resource, ResourceExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::NamespaceResourceScope;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The server-side apply field manager of every object this module writes.
pub const FIELD_MANAGER: &str = "accel";

/// Where to connect: a kubeconfig (default: `$KUBECONFIG` or
/// `~/.kube/config`, else the in-cluster service account), a context in it
/// (default: its current context) and a namespace (default: the context's,
/// else `default`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// An explicit kubeconfig file.
    pub kubeconfig: Option<PathBuf>,
    /// The context to use (`--context`).
    pub context: Option<String>,
    /// The namespace to use (`--namespace`).
    pub namespace: Option<String>,
}

/// A client and the namespace to work in.
#[derive(Clone)]
pub struct KubeTarget {
    /// The API client.
    pub client: Client,
    /// The namespace (from the options, else the context's, else `default`).
    pub namespace: String,
    /// The API server's URL, for messages.
    pub cluster_url: String,
}

impl fmt::Debug for KubeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeTarget")
            .field("namespace", &self.namespace)
            .field("cluster_url", &self.cluster_url)
            .finish()
    }
}

/// Builds a client from the kubeconfig (see [`ConnectOptions`]). Nothing is
/// sent yet: an unreachable server shows on the first request, as
/// Unavailable. Must run inside a Tokio runtime.
pub async fn connect(opts: &ConnectOptions) -> Result<KubeTarget, DeployError> {
    let kopts = KubeConfigOptions {
        context: opts.context.clone(),
        cluster: None,
        user: None,
    };
    let config = match (&opts.kubeconfig, &opts.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| {
                DeployError::InvalidArgument(format!(
                    "cannot read kubeconfig {}: {}",
                    path.display(),
                    chain(&e)
                ))
            })?;
            Config::from_custom_kubeconfig(kc, &kopts)
                .await
                .map_err(|e| {
                    DeployError::InvalidArgument(format!(
                        "kubeconfig {}: {}",
                        path.display(),
                        chain(&e)
                    ))
                })?
        }
        (None, Some(ctx)) => Config::from_kubeconfig(&kopts).await.map_err(|e| {
            DeployError::InvalidArgument(format!("kubeconfig context {ctx:?}: {}", chain(&e)))
        })?,
        (None, None) => Config::infer().await.map_err(|e| {
            DeployError::FailedPrecondition(format!(
                "no Kubernetes configuration (kubeconfig or in-cluster): {}",
                chain(&e)
            ))
        })?,
    };
    let namespace = opts
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    validate_label_name("namespace", &namespace, false)?;
    let cluster_url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| {
        DeployError::InvalidArgument(format!(
            "cannot build a client for {cluster_url}: {}",
            chain(&e)
        ))
    })?;
    Ok(KubeTarget {
        client,
        namespace,
        cluster_url,
    })
}

/// One object on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// `Deployment`, `Service`, `HorizontalPodAutoscaler` or `Secret`.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    /// `kind/namespace/name`, e.g. `Deployment/default/resnet`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

fn object_ref<K: Resource<DynamicType = ()>>(obj: &K, fallback_ns: &str) -> ObjectRef {
    ObjectRef {
        kind: K::kind(&()).into_owned(),
        namespace: obj.namespace().unwrap_or_else(|| fallback_ns.to_string()),
        name: obj.name_any(),
    }
}

/// Server-side applies each object in order (PATCH with
/// `application/apply-patch+yaml`, `fieldManager=accel`, `force=true`: accel
/// owns the fields it sets, taking them over from other managers). Returns
/// what the server now holds, in order.
pub async fn apply(client: &Client, objects: &[Manifest]) -> Result<Vec<ObjectRef>, DeployError> {
    let mut out = Vec::with_capacity(objects.len());
    for obj in objects {
        let (ns, name) = (obj.namespace(), obj.name());
        if ns.is_empty() || name.is_empty() {
            return Err(DeployError::InvalidArgument(format!(
                "a {} without a name or namespace cannot be applied",
                obj.kind()
            )));
        }
        let applied = match obj {
            Manifest::Secret(o) => apply_one(client, ns, name, o).await?,
            Manifest::Deployment(o) => apply_one(client, ns, name, o).await?,
            Manifest::Service(o) => apply_one(client, ns, name, o).await?,
            Manifest::HorizontalPodAutoscaler(o) => apply_one(client, ns, name, o).await?,
        };
        tracing::info!(object = %applied, "applied");
        out.push(applied);
    }
    Ok(out)
}

async fn apply_one<K>(
    client: &Client,
    ns: &str,
    name: &str,
    obj: &K,
) -> Result<ObjectRef, DeployError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let what = format!("applying {} {ns}/{name}", K::kind(&()));
    let got = api
        .patch(name, &params, &Patch::Apply(obj))
        .await
        .map_err(|e| api_error(&what, e))?;
    Ok(object_ref(&got, ns))
}

/// One condition of a Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// `Available`, `Progressing`, `ReplicaFailure`.
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A machine-readable reason (`NewReplicaSetAvailable`,
    /// `ProgressDeadlineExceeded`, `MinimumReplicasUnavailable`, ...).
    pub reason: String,
    /// The controller's message.
    pub message: String,
}

/// Where a Deployment's rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutStatus {
    /// The namespace.
    pub namespace: String,
    /// The Deployment's name.
    pub name: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration`: the controller has seen the spec when it
    /// reaches `generation`.
    pub observed_generation: i64,
    /// `spec.replicas` (1 when unset).
    pub desired: i32,
    /// `status.replicas`: pods of every revision.
    pub replicas: i32,
    /// `status.updatedReplicas`: pods of the current revision.
    pub updated: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// `status.unavailableReplicas`.
    pub unavailable: i32,
    /// `status.conditions`.
    pub conditions: Vec<Condition>,
    /// The rollout finished: every desired pod updated and available, no
    /// old pod left.
    pub complete: bool,
    /// The rollout failed: `Progressing` is `False` with
    /// `ProgressDeadlineExceeded`.
    pub failed: bool,
    /// What it waits for, or that it finished (as `kubectl rollout status`
    /// says it).
    pub message: String,
}

impl RolloutStatus {
    /// Derived from a Deployment as the API server returns it, with the
    /// rules of `kubectl rollout status`.
    pub fn from_deployment(d: &Deployment) -> RolloutStatus {
        let st = d.status.clone().unwrap_or_default();
        let generation = d.metadata.generation.unwrap_or(0);
        let observed_generation = st.observed_generation.unwrap_or(0);
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let replicas = st.replicas.unwrap_or(0);
        let updated = st.updated_replicas.unwrap_or(0);
        let available = st.available_replicas.unwrap_or(0);
        let conditions: Vec<Condition> = st
            .conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| Condition {
                kind: c.type_,
                status: c.status,
                reason: c.reason.unwrap_or_default(),
                message: c.message.unwrap_or_default(),
            })
            .collect();
        let name = d.metadata.name.clone().unwrap_or_default();
        let failed = conditions
            .iter()
            .any(|c| c.kind == "Progressing" && c.reason == "ProgressDeadlineExceeded");
        let (complete, message) = if generation > observed_generation {
            (
                false,
                "waiting for the deployment spec update to be observed".to_string(),
            )
        } else if failed {
            (
                false,
                format!("deployment {name:?} exceeded its progress deadline"),
            )
        } else if updated < desired {
            (
                false,
                format!("{updated} of {desired} new replicas have been updated"),
            )
        } else if replicas > updated {
            (
                false,
                format!(
                    "{} old replicas are pending termination",
                    replicas - updated
                ),
            )
        } else if available < updated {
            (
                false,
                format!("{available} of {updated} updated replicas are available"),
            )
        } else {
            (true, format!("deployment {name:?} successfully rolled out"))
        };
        RolloutStatus {
            namespace: d.metadata.namespace.clone().unwrap_or_default(),
            name,
            generation,
            observed_generation,
            desired,
            replicas,
            updated,
            ready: st.ready_replicas.unwrap_or(0),
            available,
            unavailable: st.unavailable_replicas.unwrap_or(0),
            conditions,
            complete,
            failed,
            message,
        }
    }
}

impl fmt::Display for RolloutStatus {
    /// The message, the replica counts and each condition with its reason
    /// and message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (replicas: {} desired, {} updated, {} ready, {} available)",
            self.message, self.desired, self.updated, self.ready, self.available
        )?;
        for c in &self.conditions {
            write!(f, "; {}={}", c.kind, c.status)?;
            if !c.reason.is_empty() {
                write!(f, " {}", c.reason)?;
            }
            if !c.message.is_empty() {
                write!(f, ": {}", c.message)?;
            }
        }
        Ok(())
    }
}

/// The rollout of Deployment `namespace/name` now (one GET).
pub async fn rollout_status(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<RolloutStatus, DeployError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let d = api
        .get(name)
        .await
        .map_err(|e| api_error(&format!("reading Deployment {namespace}/{name}"), e))?;
    Ok(RolloutStatus::from_deployment(&d))
}

/// Follows the rollout of Deployment `namespace/name` until it completes
/// (polling every 2 s). FailedPrecondition, with every condition's reason
/// and message, when the rollout fails (`ProgressDeadlineExceeded`) or
/// `timeout` passes first; NotFound when there is no such Deployment.
pub async fn wait(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<RolloutStatus, DeployError> {
    wait_with_interval(client, namespace, name, timeout, Duration::from_secs(2)).await
}

/// [`wait`] polling every `interval`. An unreachable server is retried
/// until the timeout.
pub async fn wait_with_interval(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    interval: Duration,
) -> Result<RolloutStatus, DeployError> {
    let start = Instant::now();
    loop {
        match rollout_status(client, namespace, name).await {
            Ok(st) if st.complete => return Ok(st),
            Ok(st) if st.failed => {
                return Err(DeployError::FailedPrecondition(format!(
                    "rollout of Deployment {namespace}/{name} failed: {st}"
                )))
            }
            Ok(st) => {
                if start.elapsed() >= timeout {
                    return Err(DeployError::FailedPrecondition(format!(
                        "rollout of Deployment {namespace}/{name} did not finish within {} s: {st}",
                        timeout.as_secs_f64()
                    )));
                }
                tracing::debug!(status = %st, "waiting for the rollout");
            }
            Err(DeployError::Unavailable(msg)) if start.elapsed() < timeout => {
                tracing::warn!("{msg}; retrying");
            }
            Err(e) => return Err(e),
        }
        let left = timeout.saturating_sub(start.elapsed());
        tokio::time::sleep(interval.min(left).max(Duration::from_millis(1))).await;
    }
}

/// Everything of one service on the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStatus {
    /// The namespace.
    pub namespace: String,
    /// The service name.
    pub service: String,
    /// The objects carrying the service's labels, in apply order.
    pub objects: Vec<ObjectRef>,
    /// The Deployment's rollout (None without a Deployment).
    pub rollout: Option<RolloutStatus>,
    /// The HPA's (current, desired) replicas, if there is one.
    pub autoscaler: Option<(i32, i32)>,
    /// In-cluster addresses `NAME.NAMESPACE.svc:PORT` by Service port name
    /// (`grpc`, `http`).
    pub endpoints: Vec<(String, String)>,
}

/// The objects labelled for `service` in `namespace` and their state.
/// NotFound when there is none.
pub async fn status(
    client: &Client,
    namespace: &str,
    service: &str,
) -> Result<ServiceStatus, DeployError> {
    let sel = selector(service);
    let secrets: Vec<Secret> = list(client, namespace, &sel).await?;
    let deployments: Vec<Deployment> = list(client, namespace, &sel).await?;
    let services: Vec<Service> = list(client, namespace, &sel).await?;
    let hpas: Vec<HorizontalPodAutoscaler> = list(client, namespace, &sel).await?;
    let mut objects = Vec::new();
    objects.extend(secrets.iter().map(|o| object_ref(o, namespace)));
    objects.extend(deployments.iter().map(|o| object_ref(o, namespace)));
    objects.extend(services.iter().map(|o| object_ref(o, namespace)));
    objects.extend(hpas.iter().map(|o| object_ref(o, namespace)));
    if objects.is_empty() {
        return Err(DeployError::NotFound(format!(
            "no objects of service {service:?} in namespace {namespace:?} (selector {sel})"
        )));
    }
    let endpoints = services
        .iter()
        .flat_map(|s| {
            let host = format!("{}.{namespace}.svc", s.name_any());
            s.spec
                .iter()
                .flat_map(|spec| spec.ports.iter().flatten())
                .map(move |p| {
                    (
                        p.name.clone().unwrap_or_default(),
                        format!("{host}:{}", p.port),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(ServiceStatus {
        namespace: namespace.to_string(),
        service: service.to_string(),
        rollout: deployments.first().map(RolloutStatus::from_deployment),
        autoscaler: hpas.first().map(|h| {
            let st = h.status.clone().unwrap_or_default();
            (st.current_replicas.unwrap_or(0), st.desired_replicas)
        }),
        objects,
        endpoints,
    })
}

/// Deletes every object labelled for `service` in `namespace` — the
/// HorizontalPodAutoscaler, Service, Deployment, then Secret (the keys go
/// last, after the pods that read them) — and returns what went, in that
/// order. Objects without all four labels are never touched. An already
/// deleted service gives an empty list.
pub async fn delete(
    client: &Client,
    namespace: &str,
    service: &str,
) -> Result<Vec<ObjectRef>, DeployError> {
    let sel = selector(service);
    let mut gone = Vec::new();
    gone.extend(delete_kind::<HorizontalPodAutoscaler>(client, namespace, &sel).await?);
    gone.extend(delete_kind::<Service>(client, namespace, &sel).await?);
    gone.extend(delete_kind::<Deployment>(client, namespace, &sel).await?);
    gone.extend(delete_kind::<Secret>(client, namespace, &sel).await?);
    Ok(gone)
}

async fn list<K>(client: &Client, namespace: &str, sel: &str) -> Result<Vec<K>, DeployError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + fmt::Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels(sel))
        .await
        .map_err(|e| {
            api_error(
                &format!("listing {} in {namespace} by {sel}", K::plural(&())),
                e,
            )
        })?;
    Ok(list.items)
}

async fn delete_kind<K>(
    client: &Client,
    namespace: &str,
    sel: &str,
) -> Result<Vec<ObjectRef>, DeployError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + fmt::Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut gone = Vec::new();
    for obj in list::<K>(client, namespace, sel).await? {
        let r = object_ref(&obj, namespace);
        // Background: the garbage collector removes a Deployment's
        // ReplicaSets and pods.
        match api.delete(&r.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(::kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(api_error(&format!("deleting {r}"), e)),
        }
        tracing::info!(object = %r, "deleted");
        gone.push(r);
    }
    Ok(gone)
}

/// The API server's answer as a DeployError: its Status message as Remote
/// (NotFound for 404), an unreachable server as Unavailable.
fn api_error(what: &str, e: ::kube::Error) -> DeployError {
    match e {
        ::kube::Error::Api(s) if s.code == 404 => {
            DeployError::NotFound(format!("{what}: {}", status_text(&s)))
        }
        ::kube::Error::Api(s) => DeployError::Remote(format!(
            "{what}: the API server refused: {}",
            status_text(&s)
        )),
        e @ (::kube::Error::HyperError(_) | ::kube::Error::Service(_)) => {
            DeployError::Unavailable(format!(
                "{what}: cannot reach the Kubernetes API server: {}",
                chain(&e)
            ))
        }
        e => DeployError::Remote(format!("{what}: {}", chain(&e))),
    }
}

fn status_text(s: &::kube::core::Status) -> String {
    let mut out = format!("{} {}", s.code, s.reason);
    if !s.message.is_empty() {
        out.push_str(": ");
        out.push_str(&s.message);
    }
    out
}

/// An error and its sources, `a: b: c`, without repeats.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

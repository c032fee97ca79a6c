//! Kubernetes: the manifests, and the apply / wait / status / delete path
//! against a local stand-in for the API server.
//!
//! What the stand-in proves: the requests we send are the ones a real API
//! server expects — paths (core `/api/v1` vs `/apis/GROUP/VERSION`,
//! namespaced, plural resource names), verbs (PATCH for server-side apply,
//! GET, LIST with `labelSelector`, DELETE with a background propagation
//! policy), the content type `application/apply-patch+yaml`, the query
//! `fieldManager=accel&force=true`, the bodies (exactly the manifests), the
//! order (Secret before the Deployment that reads it; HPA, Service,
//! Deployment, Secret on delete), that `wait` follows `observedGeneration`,
//! updated and available replicas and reports the conditions, that delete
//! touches only objects carrying all four labels, that a kubeconfig's
//! context, namespace, cluster CA (TLS over rustls) and bearer token are
//! used, and that the API server's Status messages, an untrusted
//! certificate and an unreachable server become the right errors.
//!
//! What it cannot prove: that a real API server accepts the objects
//! (schema validation is `interop/tests/test_kubernetes.py` against the
//! official schemas; admission webhooks, Pod Security admission, quotas and
//! defaulting are not modelled), scheduling, image pulls, probes passing,
//! real rollout timing and conditions produced by the Deployment controller,
//! HPA behaviour, garbage collection of ReplicaSets and pods, server-side
//! apply's field-ownership merging and conflicts, RBAC and authentication
//! (the stand-in only sees that the token is sent; exec/OIDC credential
//! plugins and client certificates are not exercised).

use accel_deploy::kube::{
    self as k, Autoscale, ConnectOptions, KubeDeployment, Manifest, API_KEYS_ENV,
    API_KEYS_SECRET_KEY, FIELD_MANAGER, HEALTH_LIVE_PATH, HEALTH_READY_PATH,
};
use accel_deploy::DeployError;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::{rustls, TlsAcceptor};

const NS: &str = "ml";
const IMAGE: &str = "registry.example:5000/team/resnet:3";

fn full_deployment() -> KubeDeployment {
    let mut d = KubeDeployment::new("resnet", NS, IMAGE);
    d.replicas = 2;
    d.autoscale = Some("2:5:70".parse().unwrap());
    d.api_keys = vec!["key-one".into(), "key-two".into()];
    d
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(v["metadata"]["labels"].clone()).unwrap()
}

fn expected_labels(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "accel".into()),
        ("app.kubernetes.io/instance".into(), service.into()),
        ("app.kubernetes.io/managed-by".into(), "accel".into()),
        ("accel.dev/service".into(), service.into()),
    ])
}

fn values(objects: &[Manifest]) -> Vec<Value> {
    objects.iter().map(Manifest::to_value).collect()
}

// ------------------------------------------------------------ manifests

#[test]
fn manifests_with_auth_and_autoscale() {
    let objects = k::manifests(&full_deployment()).unwrap();
    let kinds: Vec<&str> = objects.iter().map(Manifest::kind).collect();
    assert_eq!(
        kinds,
        ["Secret", "Deployment", "Service", "HorizontalPodAutoscaler"]
    );
    let v = values(&objects);
    let api: Vec<&str> = v
        .iter()
        .map(|o| o["apiVersion"].as_str().unwrap())
        .collect();
    assert_eq!(api, ["v1", "apps/v1", "v1", "autoscaling/v2"]);
    for o in &v {
        assert_eq!(labels_of(o), expected_labels("resnet"), "{o}");
        assert_eq!(o["metadata"]["namespace"], NS);
    }
    let (secret, deploy, service, hpa) = (&v[0], &v[1], &v[2], &v[3]);

    // Secret: the keys, comma-separated (serve's ACCEL_API_KEYS), base64.
    assert_eq!(secret["metadata"]["name"], "resnet-api-keys");
    assert_eq!(secret["type"], "Opaque");
    let Manifest::Secret(s) = &objects[0] else {
        unreachable!()
    };
    let data = s.data.as_ref().unwrap();
    assert_eq!(data[API_KEYS_SECRET_KEY].0, b"key-one,key-two");
    assert_eq!(secret["data"][API_KEYS_SECRET_KEY], "a2V5LW9uZSxrZXktdHdv");

    // Deployment: selector ⊂ pod labels, no replicas (the HPA owns them).
    assert_eq!(deploy["metadata"]["name"], "resnet");
    let spec = &deploy["spec"];
    assert!(spec.get("replicas").is_none(), "{spec}");
    let match_labels = &spec["selector"]["matchLabels"];
    assert_eq!(
        match_labels,
        &json!({"app.kubernetes.io/name": "accel", "app.kubernetes.io/instance": "resnet"})
    );
    let pod = &spec["template"];
    let pod_labels = labels_of(pod);
    assert_eq!(pod_labels, expected_labels("resnet"));
    for (key, val) in match_labels.as_object().unwrap() {
        assert_eq!(pod_labels[key], val.as_str().unwrap());
    }
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let keys_hash = pod["metadata"]["annotations"]["accel.dev/api-keys-sha256"]
        .as_str()
        .unwrap();
    assert_eq!(keys_hash.len(), 64);

    let pspec = &pod["spec"];
    assert_eq!(pspec["automountServiceAccountToken"], false);
    assert_eq!(pspec["enableServiceLinks"], false);
    assert_eq!(
        pspec["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(pspec["volumes"], json!([{"name": "tmp", "emptyDir": {}}]));
    let containers = pspec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["name"], "accel");
    assert_eq!(c["image"], IMAGE);
    assert!(c.get("args").is_none(), "the image's CMD is kept");
    assert_eq!(
        c["ports"],
        json!([{"name": "grpc", "containerPort": 8500, "protocol": "TCP"},
               {"name": "http", "containerPort": 8501, "protocol": "TCP"}])
    );
    assert_eq!(
        c["securityContext"],
        json!({"allowPrivilegeEscalation": false, "privileged": false,
               "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true,
               "runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "tmp", "mountPath": "/tmp"}])
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "500m", "memory": "512Mi"},
               "limits": {"cpu": "2", "memory": "2Gi"}})
    );
    // Probes: KServe v2 health on the named HTTP port.
    for (probe, path) in [
        ("startupProbe", HEALTH_LIVE_PATH),
        ("livenessProbe", HEALTH_LIVE_PATH),
        ("readinessProbe", HEALTH_READY_PATH),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "http", "{probe}");
        assert_eq!(get["scheme"], "HTTP", "{probe}");
    }
    assert_eq!(HEALTH_LIVE_PATH, "/v2/health/live");
    assert_eq!(HEALTH_READY_PATH, "/v2/health/ready");
    // The server's configuration through its environment.
    let env: BTreeMap<String, Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    assert_eq!(env["ACCEL_HOST"]["value"], "0.0.0.0");
    assert_eq!(env["ACCEL_GRPC_PORT"]["value"], "8500");
    assert_eq!(env["ACCEL_HTTP_PORT"]["value"], "8501");
    assert_eq!(
        env["ACCEL_THREADS"]["valueFrom"]["resourceFieldRef"],
        json!({"containerName": "accel", "resource": "limits.cpu", "divisor": "1"})
    );
    assert_eq!(
        env[API_KEYS_ENV]["valueFrom"]["secretKeyRef"],
        json!({"name": "resnet-api-keys", "key": "api-keys", "optional": false})
    );

    // Service: ClusterIP, both ports, the Deployment's selector.
    assert_eq!(service["metadata"]["name"], "resnet");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(&service["spec"]["selector"], match_labels);
    assert_eq!(
        service["spec"]["ports"],
        json!([
            {"name": "grpc", "port": 8500, "targetPort": "grpc", "protocol": "TCP",
             "appProtocol": "kubernetes.io/h2c"},
            {"name": "http", "port": 8501, "targetPort": "http", "protocol": "TCP",
             "appProtocol": "http"},
        ])
    );

    // HPA: autoscaling/v2 on CPU utilization of the Deployment.
    assert_eq!(
        hpa["spec"],
        json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "resnet"},
            "minReplicas": 2, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70}}}],
        })
    );
}

#[test]
fn manifests_without_auth_or_autoscale() {
    let mut d = KubeDeployment::new(
        "plain",
        "default",
        "reg.io/accel@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    d.replicas = 3;
    d.args = vec!["serve".into(), "--model".into(), "resnet:2".into()];
    d.run_as_user = 20002;
    d.read_only_root_filesystem = false;
    d.grpc_port = 9500;
    d.http_port = 9000;
    d.resources
        .limits
        .insert("nvidia.com/gpu".into(), "1".into());
    d.env.insert("ACCEL_WORKERS".into(), "2".into());
    let v = values(&k::manifests(&d).unwrap());
    let kinds: Vec<&str> = v.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Deployment", "Service"], "no Secret, no HPA");
    let spec = &v[0]["spec"];
    assert_eq!(spec["replicas"], 3);
    let pod = &spec["template"];
    assert!(pod["metadata"].get("annotations").is_none());
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["args"], json!(["serve", "--model", "resnet:2"]));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], false);
    assert_eq!(c["securityContext"]["runAsUser"], 20002);
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 20002);
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
    let names: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "ACCEL_HOST",
            "ACCEL_GRPC_PORT",
            "ACCEL_HTTP_PORT",
            "ACCEL_THREADS",
            "ACCEL_WORKERS"
        ]
    );
    assert_eq!(c["ports"][0]["containerPort"], 9500);
    assert_eq!(v[1]["spec"]["ports"][1]["port"], 9000);
    for o in &v {
        assert_eq!(labels_of(o), expected_labels("plain"));
    }
}

#[test]
fn yaml_stream_parses_back_into_the_same_objects() {
    let objects = k::manifests(&full_deployment()).unwrap();
    let yaml = k::to_yaml_stream(&objects).unwrap();
    assert_eq!(yaml.matches("\n---\n").count(), 3, "{yaml}");
    assert!(yaml.contains("kind: HorizontalPodAutoscaler"), "{yaml}");
    // Typed, and as plain documents.
    assert_eq!(k::from_yaml_stream(&yaml).unwrap(), objects);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    assert_eq!(docs, values(&objects));
    // Strings that YAML 1.1 readers (PyYAML, kubectl) would take for
    // numbers stay strings.
    assert!(yaml.contains("value: \"8500\""), "{yaml}");
    assert!(yaml.contains("cpu: \"2\""), "{yaml}");
}

#[test]
fn bad_inputs_are_invalid_arguments() {
    type Change = Box<dyn Fn(&mut KubeDeployment)>;
    let cases: Vec<(&str, Change)> = vec![
        ("service name", Box::new(|d| d.service = "Res_Net".into())),
        ("service name", Box::new(|d| d.service = "1resnet".into())),
        ("service name", Box::new(|d| d.service = "a".repeat(64))),
        ("namespace", Box::new(|d| d.namespace = "ML".into())),
        (
            "tag nor a digest",
            Box::new(|d| d.image = "reg.io/resnet".into()),
        ),
        (
            "repository path",
            Box::new(|d| d.image = "reg.io/ResNet:1".into()),
        ),
        ("replicas", Box::new(|d| d.replicas = -1)),
        ("API key", Box::new(|d| d.api_keys = vec!["a,b".into()])),
        ("API key", Box::new(|d| d.api_keys = vec!["".into()])),
        ("ports", Box::new(|d| d.http_port = d.grpc_port)),
        (
            "quantity",
            Box::new(|d| {
                d.resources.requests.insert("memory".into(), "lots".into());
            }),
        ),
        (
            "exceeds the limit",
            Box::new(|d| {
                d.resources.requests.insert("cpu".into(), "3".into());
            }),
        ),
        (
            "CPU request",
            Box::new(|d| {
                d.resources.requests.remove("cpu");
            }),
        ),
        (
            "set by the deployment",
            Box::new(|d| {
                d.env.insert("ACCEL_HOST".into(), "::".into());
            }),
        ),
        ("non-root", Box::new(|d| d.run_as_user = 0)),
    ];
    for (needle, change) in cases {
        let mut d = full_deployment();
        change(&mut d);
        match k::manifests(&d) {
            Err(DeployError::InvalidArgument(msg)) => {
                assert!(msg.contains(needle), "{msg:?} lacks {needle:?}")
            }
            other => panic!("{needle}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[test]
fn autoscale_parses_min_max_cpu() {
    assert_eq!(
        "2:5:70".parse::<Autoscale>().unwrap(),
        Autoscale {
            min: 2,
            max: 5,
            cpu_percent: 70
        }
    );
    assert_eq!("1:1:80%".parse::<Autoscale>().unwrap().cpu_percent, 80);
    for bad in ["", "2:5", "2:5:70:1", "0:5:70", "5:2:70", "2:5:0", "a:5:70"] {
        assert!(
            matches!(
                bad.parse::<Autoscale>(),
                Err(DeployError::InvalidArgument(_))
            ),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn debug_output_redacts_keys() {
    let text = format!("{:?}", full_deployment());
    assert!(!text.contains("key-one"), "{text}");
    assert!(text.contains("<2 redacted>"), "{text}");
}

// ------------------------------------------------- stand-in API server

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    /// Decoded query pairs, in order.
    query: Vec<(String, String)>,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Option<Value>,
}

impl Recorded {
    /// `METHOD PATH` for sequence assertions.
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// How the stand-in behaves.
#[derive(Default)]
struct Script {
    /// GETs of a Deployment that see it not yet rolled out (the first also
    /// not yet observed); the next one sees it available.
    not_ready_polls: u32,
    /// Every GET of a Deployment reports ProgressDeadlineExceeded.
    deadline_exceeded: bool,
    /// PATCHes of this kind are refused with 422 Invalid.
    reject_kind: Option<&'static str>,
}

#[derive(Default)]
struct StandIn {
    script: Script,
    /// By (collection path, name).
    objects: BTreeMap<(String, String), Value>,
    requests: Vec<Recorded>,
    deployment_gets: u32,
    resource_version: u64,
}

type Shared = Arc<Mutex<StandIn>>;

/// `/api/v1/namespaces/NS/PLURAL[/NAME]` or
/// `/apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME]` → (collection path,
/// namespace, plural, name).
fn split_path(path: &str) -> Option<(String, String, String, Option<String>)> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let at = segs.iter().position(|s| *s == "namespaces")?;
    let prefix_ok = match segs[0] {
        "api" => at == 2 && segs[1] == "v1",
        "apis" => at == 3,
        _ => false,
    };
    if !prefix_ok || segs.len() < at + 3 || segs.len() > at + 4 {
        return None;
    }
    let collection = format!("/{}", segs[..at + 3].join("/"));
    Some((
        collection,
        segs[at + 1].to_string(),
        segs[at + 2].to_string(),
        segs.get(at + 3).map(|s| s.to_string()),
    ))
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn status_body(code: u16, reason: &str, message: String) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
           "status": if code < 300 { "Success" } else { "Failure" },
           "message": message, "reason": reason, "code": code})
}

fn respond(code: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Equality-based label selector `k=v,k=v` (all must match), as the API
/// server evaluates it.
fn selector_matches(sel: &str, obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    sel.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').expect("equality selector");
        labels[k].as_str() == Some(v)
    })
}

/// The Deployment's status on this GET, as the controller would have set it.
fn rollout(st: &mut StandIn, obj: &mut Value) {
    st.deployment_gets += 1;
    let n = st.deployment_gets;
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let desired = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = if st.script.deadline_exceeded {
        json!({"observedGeneration": generation, "replicas": desired, "updatedReplicas": desired,
               "unavailableReplicas": desired, "conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
             "message": "Deployment does not have minimum availability."},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet \"resnet-7c9d\" has timed out progressing."}]})
    } else if n == 1 && st.script.not_ready_polls > 0 {
        json!({})
    } else if n <= st.script.not_ready_polls {
        json!({"observedGeneration": generation, "replicas": desired, "updatedReplicas": desired,
               "unavailableReplicas": desired, "conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
             "message": "Deployment does not have minimum availability."},
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
             "message": "ReplicaSet \"resnet-7c9d\" is progressing."}]})
    } else {
        json!({"observedGeneration": generation, "replicas": desired, "updatedReplicas": desired,
               "readyReplicas": desired, "availableReplicas": desired, "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": "ReplicaSet \"resnet-7c9d\" has successfully progressed."}]})
    };
    obj["status"] = status;
}

async fn handle(st: Shared, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let content_type = req
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    let raw = req.into_body().collect().await.unwrap().to_bytes();
    let body: Option<Value> = (!raw.is_empty()).then(|| serde_json::from_slice(&raw).unwrap());
    let mut st = st.lock().unwrap();
    st.requests.push(Recorded {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        authorization,
        body: body.clone(),
    });
    let Some((collection, ns, plural, name)) = split_path(&path) else {
        return Ok(respond(
            404,
            &status_body(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            ),
        ));
    };
    let q = |k: &str| query.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
    match (method.as_str(), name) {
        ("PATCH", Some(name)) => {
            if content_type.as_deref() != Some("application/apply-patch+yaml") {
                return Ok(respond(
                    415,
                    &status_body(
                        415,
                        "UnsupportedMediaType",
                        "apply needs application/apply-patch+yaml".into(),
                    ),
                ));
            }
            if q("fieldManager").is_none() {
                return Ok(respond(
                    422,
                    &status_body(
                        422,
                        "Invalid",
                        "fieldManager is required for apply requests".into(),
                    ),
                ));
            }
            let mut obj = body.expect("apply body");
            let kind = obj["kind"].as_str().unwrap_or("").to_string();
            if st.script.reject_kind == Some(kind.as_str()) {
                let msg = format!("{kind}.apps \"{name}\" is invalid: spec.template.spec.containers[0].image: Required value");
                return Ok(respond(422, &status_body(422, "Invalid", msg)));
            }
            if obj["metadata"]["name"] != name.as_str()
                || obj["metadata"]["namespace"] != ns.as_str()
            {
                return Ok(respond(
                    400,
                    &status_body(
                        400,
                        "BadRequest",
                        "the name or namespace of the object does not match the request".into(),
                    ),
                ));
            }
            st.resource_version += 1;
            let key = (collection, name.clone());
            let previous = st.objects.get(&key).cloned();
            let generation = previous
                .as_ref()
                .and_then(|p| p["metadata"]["generation"].as_i64())
                .map_or(1, |g| g + 1);
            let meta = obj["metadata"].as_object_mut().unwrap();
            meta.insert("uid".into(), json!(format!("uid-{plural}-{name}")));
            meta.insert(
                "resourceVersion".into(),
                json!(st.resource_version.to_string()),
            );
            meta.insert("generation".into(), json!(generation));
            meta.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
            if plural == "deployments" && obj["spec"].get("replicas").is_none() {
                obj["spec"]["replicas"] = json!(1); // the API server's default
            }
            st.objects.insert(key, obj.clone());
            Ok(respond(if previous.is_some() { 200 } else { 201 }, &obj))
        }
        ("GET", Some(name)) => {
            let key = (collection, name.clone());
            let Some(mut obj) = st.objects.get(&key).cloned() else {
                return Ok(respond(
                    404,
                    &status_body(404, "NotFound", format!("{plural} \"{name}\" not found")),
                ));
            };
            if plural == "deployments" {
                // The controller's progress, kept for later LISTs too.
                rollout(&mut st, &mut obj);
                st.objects.insert(key, obj.clone());
            }
            Ok(respond(200, &obj))
        }
        ("GET", None) => {
            let sel = q("labelSelector").unwrap_or_default();
            let mut kind = String::new();
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|((c, _), o)| *c == collection && selector_matches(&sel, o))
                .map(|(_, o)| {
                    kind = o["kind"].as_str().unwrap().to_string();
                    let mut item = o.clone();
                    // Items of a real list carry no apiVersion/kind.
                    item.as_object_mut().unwrap().remove("apiVersion");
                    item.as_object_mut().unwrap().remove("kind");
                    item
                })
                .collect();
            let list = json!({"kind": format!("{kind}List"), "apiVersion": "v1",
                              "metadata": {"resourceVersion": st.resource_version.to_string()},
                              "items": items});
            Ok(respond(200, &list))
        }
        ("DELETE", Some(name)) => {
            let key = (collection, name.clone());
            match st.objects.remove(&key) {
                Some(_) => Ok(respond(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "details": {"name": name, "kind": plural}}),
                )),
                None => Ok(respond(
                    404,
                    &status_body(404, "NotFound", format!("{plural} \"{name}\" not found")),
                )),
            }
        }
        _ => Ok(respond(
            405,
            &status_body(405, "MethodNotAllowed", format!("{method} {path}")),
        )),
    }
}

async fn start_stand_in(script: Script) -> (Shared, SocketAddr) {
    start_stand_in_with(script, None).await
}

/// The stand-in, over TLS when `tls` is given.
async fn start_stand_in_with(script: Script, tls: Option<TlsAcceptor>) -> (Shared, SocketAddr) {
    let st: Shared = Arc::new(Mutex::new(StandIn {
        script,
        ..StandIn::default()
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_state = Arc::clone(&st);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let st = Arc::clone(&server_state);
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(Arc::clone(&st), req));
                let conn = http1::Builder::new();
                match tls {
                    None => {
                        let _ = conn.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = conn.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                }
            });
        }
    });
    (st, addr)
}

/// A CA (PEM) and a TLS acceptor whose certificate it signed, for 127.0.0.1.
fn tls_material() -> (String, TlsAcceptor) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "stand-in CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca.pem(), TlsAcceptor::from(Arc::new(server)))
}

/// A kubeconfig with two contexts; `stand-in` points at `addr` (plain
/// HTTP, no credentials) with namespace `ml`.
fn write_kubeconfig(dir: &std::path::Path, addr: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1
kind: Config
current-context: elsewhere
clusters:
- name: stand-in
  cluster:
    server: http://{addr}
- name: elsewhere
  cluster:
    server: http://127.0.0.1:9
contexts:
- name: stand-in
  context:
    cluster: stand-in
    user: nobody
    namespace: {NS}
- name: elsewhere
  context:
    cluster: elsewhere
    user: nobody
users:
- name: nobody
  user: {{}}
"
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn client_for(addr: SocketAddr) -> (k::KubeTarget, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let target = k::connect(&ConnectOptions {
        kubeconfig: Some(write_kubeconfig(dir.path(), addr)),
        context: Some("stand-in".into()),
        namespace: None,
    })
    .await
    .unwrap();
    (target, dir)
}

fn requests(st: &Shared) -> Vec<Recorded> {
    std::mem::take(&mut st.lock().unwrap().requests)
}

/// Objects the stand-in holds, as `plural/name`.
fn held(st: &Shared) -> Vec<String> {
    st.lock()
        .unwrap()
        .objects
        .keys()
        .map(|(c, n)| format!("{}/{n}", c.rsplit('/').next().unwrap()))
        .collect()
}

/// Objects that are not ours: another accel service in the same
/// namespace, and a Secret sharing only some of our labels.
fn seed_neighbours(st: &Shared) {
    let mut st = st.lock().unwrap();
    let mut other = expected_labels("other");
    other.insert("extra".into(), "x".into());
    st.objects.insert(
        (
            format!("/apis/apps/v1/namespaces/{NS}/deployments"),
            "other".into(),
        ),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "other", "namespace": NS, "labels": other, "generation": 1},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "other"}},
                        "template": {"metadata": {"labels": {"app": "other"}},
                                     "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}),
    );
    st.objects.insert(
        (
            format!("/api/v1/namespaces/{NS}/secrets"),
            "resnet-config".into(),
        ),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "resnet-config", "namespace": NS,
                            "labels": {"app.kubernetes.io/instance": "resnet",
                                       "accel.dev/service": "resnet"}}}),
    );
}

const SECRETS: &str = "/api/v1/namespaces/ml/secrets";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/ml/deployments";
const SERVICES: &str = "/api/v1/namespaces/ml/services";
const HPAS: &str = "/apis/autoscaling/v2/namespaces/ml/horizontalpodautoscalers";

#[tokio::test]
async fn apply_wait_status_delete_against_a_stand_in_api_server() {
    let (st, addr) = start_stand_in(Script {
        not_ready_polls: 3,
        ..Script::default()
    })
    .await;
    seed_neighbours(&st);
    let (target, _dir) = client_for(addr).await;
    assert_eq!(target.namespace, NS, "the context's namespace");
    let client = &target.client;
    let objects = k::manifests(&full_deployment()).unwrap();

    // Apply: one server-side apply PATCH per object, Secret first.
    let applied = k::apply(client, &objects).await.unwrap();
    let applied: Vec<String> = applied.iter().map(ToString::to_string).collect();
    assert_eq!(
        applied,
        [
            "Secret/ml/resnet-api-keys",
            "Deployment/ml/resnet",
            "Service/ml/resnet",
            "HorizontalPodAutoscaler/ml/resnet"
        ]
    );
    let reqs = requests(&st);
    let lines: Vec<String> = reqs.iter().map(Recorded::line).collect();
    assert_eq!(
        lines,
        [
            format!("PATCH {SECRETS}/resnet-api-keys"),
            format!("PATCH {DEPLOYMENTS}/resnet"),
            format!("PATCH {SERVICES}/resnet"),
            format!("PATCH {HPAS}/resnet"),
        ]
    );
    for (r, obj) in reqs.iter().zip(&objects) {
        // Query parameter order means nothing to the API server.
        let mut query = r.query.clone();
        query.sort();
        assert_eq!(
            query,
            [
                ("fieldManager".to_string(), FIELD_MANAGER.to_string()),
                ("force".to_string(), "true".to_string())
            ],
            "{}",
            r.line()
        );
        assert_eq!(FIELD_MANAGER, "accel");
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        // The body is exactly the manifest (JSON is YAML).
        assert_eq!(r.body.as_ref(), Some(&obj.to_value()), "{}", r.line());
    }

    // Wait: polls the Deployment until observed, updated and available.
    let done = k::wait_with_interval(
        client,
        NS,
        "resnet",
        Duration::from_secs(20),
        Duration::from_millis(10),
    )
    .await
    .unwrap();
    assert!(done.complete && !done.failed, "{done}");
    assert_eq!((done.desired, done.updated, done.available), (1, 1, 1));
    assert_eq!(done.observed_generation, done.generation);
    assert!(done
        .conditions
        .iter()
        .any(|c| c.kind == "Available" && c.status == "True"));
    let lines: Vec<String> = requests(&st).iter().map(Recorded::line).collect();
    assert_eq!(
        lines,
        vec![format!("GET {DEPLOYMENTS}/resnet"); 4],
        "3 not ready, then ready"
    );

    // Status: LIST each kind by the service's labels.
    let status = k::status(client, NS, "resnet").await.unwrap();
    let objs: Vec<String> = status.objects.iter().map(ToString::to_string).collect();
    assert_eq!(objs, applied);
    assert!(status.rollout.as_ref().is_some_and(|r| r.complete));
    assert_eq!(
        status.endpoints,
        [
            ("grpc".to_string(), "resnet.ml.svc:8500".to_string()),
            ("http".to_string(), "resnet.ml.svc:8501".to_string())
        ]
    );
    let reqs = requests(&st);
    let sel = k::selector("resnet");
    assert_eq!(
        sel,
        "accel.dev/service=resnet,app.kubernetes.io/instance=resnet,app.kubernetes.io/managed-by=accel,app.kubernetes.io/name=accel"
    );
    for r in &reqs {
        assert_eq!(r.method, "GET");
        assert_eq!(r.query, [("labelSelector".to_string(), sel.clone())]);
    }
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, [SECRETS, DEPLOYMENTS, SERVICES, HPAS]);

    // Delete: HPA, Service, Deployment, Secret — only the labelled ones.
    let gone = k::delete(client, NS, "resnet").await.unwrap();
    let gone: Vec<String> = gone.iter().map(ToString::to_string).collect();
    assert_eq!(
        gone,
        [
            "HorizontalPodAutoscaler/ml/resnet",
            "Service/ml/resnet",
            "Deployment/ml/resnet",
            "Secret/ml/resnet-api-keys"
        ]
    );
    let reqs = requests(&st);
    let lines: Vec<String> = reqs.iter().map(Recorded::line).collect();
    assert_eq!(
        lines,
        [
            format!("GET {HPAS}"),
            format!("DELETE {HPAS}/resnet"),
            format!("GET {SERVICES}"),
            format!("DELETE {SERVICES}/resnet"),
            format!("GET {DEPLOYMENTS}"),
            format!("DELETE {DEPLOYMENTS}/resnet"),
            format!("GET {SECRETS}"),
            format!("DELETE {SECRETS}/resnet-api-keys"),
        ]
    );
    for r in reqs.iter().filter(|r| r.method == "DELETE") {
        let body = r.body.as_ref().expect("DeleteOptions body");
        assert_eq!(body["propagationPolicy"], "Background", "{}", r.line());
    }
    // The neighbours are still there; nothing of ours is.
    assert_eq!(held(&st), ["secrets/resnet-config", "deployments/other"]);

    // Deleting again finds nothing and deletes nothing.
    assert!(k::delete(client, NS, "resnet").await.unwrap().is_empty());
    assert!(requests(&st).iter().all(|r| r.method == "GET"));
    match k::status(client, NS, "resnet").await {
        Err(DeployError::NotFound(msg)) => assert!(msg.contains("resnet"), "{msg}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn reapply_without_autoscale_updates_in_place() {
    let (st, addr) = start_stand_in(Script::default()).await;
    let (target, _dir) = client_for(addr).await;
    let mut d = KubeDeployment::new("resnet", NS, IMAGE);
    d.replicas = 2;
    k::apply(&target.client, &k::manifests(&d).unwrap())
        .await
        .unwrap();
    d.image = "registry.example:5000/team/resnet:4".into();
    k::apply(&target.client, &k::manifests(&d).unwrap())
        .await
        .unwrap();
    let st = st.lock().unwrap();
    let deploy = &st.objects[&(DEPLOYMENTS.to_string(), "resnet".to_string())];
    assert_eq!(deploy["metadata"]["generation"], 2);
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example:5000/team/resnet:4"
    );
    assert_eq!(st.objects.len(), 2, "Deployment and Service only");
}

#[tokio::test]
async fn wait_reports_conditions_on_failure_and_timeout() {
    // ProgressDeadlineExceeded: fails at once with the reason and message.
    let (st, addr) = start_stand_in(Script {
        deadline_exceeded: true,
        ..Script::default()
    })
    .await;
    let (target, _dir) = client_for(addr).await;
    let d = KubeDeployment::new("resnet", NS, IMAGE);
    k::apply(&target.client, &k::manifests(&d).unwrap())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    match k::wait(&target.client, NS, "resnet", Duration::from_secs(60)).await {
        Err(DeployError::FailedPrecondition(msg)) => {
            assert!(msg.contains("ProgressDeadlineExceeded"), "{msg}");
            assert!(msg.contains("has timed out progressing"), "{msg}");
            assert!(msg.contains("MinimumReplicasUnavailable"), "{msg}");
        }
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(st.lock().unwrap().deployment_gets, 1);

    // Never available: times out with the last conditions.
    let (_st, addr) = start_stand_in(Script {
        not_ready_polls: u32::MAX,
        ..Script::default()
    })
    .await;
    let (target, _dir) = client_for(addr).await;
    k::apply(&target.client, &k::manifests(&d).unwrap())
        .await
        .unwrap();
    match k::wait_with_interval(
        &target.client,
        NS,
        "resnet",
        Duration::from_millis(300),
        Duration::from_millis(20),
    )
    .await
    {
        Err(DeployError::FailedPrecondition(msg)) => {
            assert!(msg.contains("did not finish within"), "{msg}");
            assert!(
                msg.contains("0 of 1 updated replicas are available"),
                "{msg}"
            );
            assert!(
                msg.contains("Available=False MinimumReplicasUnavailable: Deployment does not have minimum availability."),
                "{msg}"
            );
        }
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }

    // No such Deployment.
    match k::wait(&target.client, NS, "nosuch", Duration::from_secs(5)).await {
        Err(DeployError::NotFound(msg)) => assert!(msg.contains("nosuch"), "{msg}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn api_server_refusals_and_unreachable_servers_are_errors() {
    let (st, addr) = start_stand_in(Script {
        reject_kind: Some("Deployment"),
        ..Script::default()
    })
    .await;
    let (target, _dir) = client_for(addr).await;
    let d = KubeDeployment::new("resnet", NS, IMAGE);
    match k::apply(&target.client, &k::manifests(&d).unwrap()).await {
        Err(DeployError::Remote(msg)) => {
            assert!(msg.contains("422"), "{msg}");
            assert!(
                msg.contains("spec.template.spec.containers[0].image: Required value"),
                "{msg}"
            );
        }
        other => panic!("expected Remote, got {other:?}"),
    }
    // It stopped at the refused object.
    assert_eq!(requests(&st).len(), 1);

    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (target, _dir) = client_for(closed).await;
    match k::apply(&target.client, &k::manifests(&d).unwrap()).await {
        Err(DeployError::Unavailable(msg)) => {
            assert!(msg.contains("cannot reach"), "{msg}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn connect_reads_contexts_and_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_kubeconfig(dir.path(), "127.0.0.1:1".parse().unwrap());
    // The current context (no namespace in it): `default`.
    let t = k::connect(&ConnectOptions {
        kubeconfig: Some(path.clone()),
        ..ConnectOptions::default()
    })
    .await
    .unwrap();
    assert_eq!(t.namespace, "default");
    assert!(t.cluster_url.contains("127.0.0.1:9"), "{}", t.cluster_url);
    // An explicit namespace wins over the context's.
    let t = k::connect(&ConnectOptions {
        kubeconfig: Some(path.clone()),
        context: Some("stand-in".into()),
        namespace: Some("other".into()),
    })
    .await
    .unwrap();
    assert_eq!(t.namespace, "other");
    // An unknown context, an unreadable file.
    for opts in [
        ConnectOptions {
            kubeconfig: Some(path.clone()),
            context: Some("nosuch".into()),
            namespace: None,
        },
        ConnectOptions {
            kubeconfig: Some(dir.path().join("missing")),
            ..ConnectOptions::default()
        },
    ] {
        match k::connect(&opts).await {
            Err(DeployError::InvalidArgument(_)) => {}
            other => panic!("{opts:?}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn tls_with_a_cluster_ca_and_a_bearer_token() {
    let (ca_pem, acceptor) = tls_material();
    let (st, addr) = start_stand_in_with(Script::default(), Some(acceptor)).await;
    let dir = tempfile::tempdir().unwrap();
    // kubeconfig's certificate-authority-data is base64, as ByteString
    // serializes.
    let ca_b64 = serde_json::to_value(k8s_openapi::ByteString(ca_pem.into_bytes())).unwrap();
    let ca_b64 = ca_b64.as_str().unwrap();
    let kubeconfig = |with_ca: bool| {
        let ca_line = if with_ca {
            format!("\n    certificate-authority-data: {ca_b64}")
        } else {
            String::new()
        };
        format!(
            "apiVersion: v1
kind: Config
current-context: tls
clusters:
- name: tls
  cluster:
    server: https://{addr}{ca_line}
contexts:
- name: tls
  context:
    cluster: tls
    user: robot
users:
- name: robot
  user:
    token: s3cret-token
"
        )
    };
    let d = KubeDeployment::new("resnet", NS, IMAGE);

    let path = dir.path().join("with-ca");
    std::fs::write(&path, kubeconfig(true)).unwrap();
    let target = k::connect(&ConnectOptions {
        kubeconfig: Some(path),
        namespace: Some(NS.into()),
        ..ConnectOptions::default()
    })
    .await
    .unwrap();
    assert!(target.cluster_url.starts_with("https://"), "{target:?}");
    k::apply(&target.client, &k::manifests(&d).unwrap())
        .await
        .unwrap();
    let reqs = requests(&st);
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(
            r.authorization.as_deref(),
            Some("Bearer s3cret-token"),
            "{}",
            r.line()
        );
    }

    // Without the CA the server's certificate is not trusted.
    let path = dir.path().join("without-ca");
    std::fs::write(&path, kubeconfig(false)).unwrap();
    let target = k::connect(&ConnectOptions {
        kubeconfig: Some(path),
        namespace: Some(NS.into()),
        ..ConnectOptions::default()
    })
    .await
    .unwrap();
    match k::apply(&target.client, &k::manifests(&d).unwrap()).await {
        Err(DeployError::Unavailable(msg)) => {
            assert!(msg.to_lowercase().contains("certificate"), "{msg}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(requests(&st).is_empty());
}

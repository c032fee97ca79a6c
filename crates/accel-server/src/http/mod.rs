//! The HTTP adapters: KServe v2 REST (with Triton's binary tensor data
//! extension), TensorFlow Serving REST, and `GET /metrics`. They translate
//! bodies to and from [`InferRequest`](crate::request::InferRequest) and
//! leave everything else to the [`RequestCore`].
//!
//! Every error answer is `{"error": "<message>"}` with the status
//! [`http_status`](crate::status::http_status) gives its kind (plus 413 for
//! bodies over the limit, 404/405 for unknown routes and methods).

mod binary;
mod common;
pub(crate) mod kserve;
mod meta;
pub(crate) mod tfs;
mod values;

use crate::core::RequestCore;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::{AppState, HttpError};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, StatusCode, Uri};
use std::sync::Arc;

/// Limits of the HTTP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
}

/// The Prometheus text format's content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every HTTP route, served from `core`.
pub fn router(core: Arc<RequestCore>, limits: HttpLimits) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .merge(kserve::routes())
        .merge(tfs::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(AppState { core, limits })
}

async fn metrics(State(st): State<AppState>) -> Response {
    let mut resp = (StatusCode::OK, st.core.render_metrics()).into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
    resp
}

async fn no_route(method: Method, uri: Uri) -> HttpError {
    HttpError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "no route for {method} {}; this server speaks KServe v2 (/v2/...) and TF Serving REST (/v1/models/...)",
            uri.path()
        ),
    }
}

async fn wrong_method(method: Method, uri: Uri) -> HttpError {
    HttpError::method_not_allowed(&method, uri.path())
}

#[cfg(test)]
mod tests {
    //! The router end to end over a socket, with a fake engine that doubles
    //! its float input.

    use super::*;
    use serde_json::{json, Value};
    use std::collections::HashMap;
    use std::io::{Read, Write};

    use crate::testing::{core, KEY};

    struct Reply {
        status: u16,
        headers: HashMap<String, String>,
        body: Vec<u8>,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
        }
        fn error(&self) -> String {
            assert_eq!(self.headers["content-type"], "application/json");
            self.json()["error"]
                .as_str()
                .expect("{\"error\": ...}")
                .to_string()
        }
    }

    /// Serves a router on a loopback port for the test's lifetime.
    struct TestServer {
        addr: std::net::SocketAddr,
        _rt: tokio::runtime::Runtime,
    }

    impl TestServer {
        fn start(core: Arc<RequestCore>) -> Self {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let addr = listener.local_addr().unwrap();
            let app = router(
                core,
                HttpLimits {
                    max_body_bytes: 4096,
                },
            );
            rt.spawn(async move { axum::serve(listener, app).await });
            TestServer { addr, _rt: rt }
        }

        fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
            let mut s = std::net::TcpStream::connect(self.addr).unwrap();
            let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(body).unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).unwrap();
            let split = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("end of headers");
            let head = String::from_utf8(raw[..split].to_vec()).unwrap();
            let mut lines = head.lines();
            let status = lines
                .next()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            Reply {
                status,
                headers,
                body: raw[split + 4..].to_vec(),
            }
        }

        fn get(&self, path: &str) -> Reply {
            self.send(
                "GET",
                path,
                &[("Authorization", &format!("Bearer {KEY}"))],
                b"",
            )
        }

        fn post(&self, path: &str, body: &Value) -> Reply {
            self.send(
                "POST",
                path,
                &[("Authorization", &format!("Bearer {KEY}"))],
                body.to_string().as_bytes(),
            )
        }
    }

    #[test]
    fn kserve_json_infer_and_auth() {
        let srv = TestServer::start(core(true));
        let body = json!({"id": "7", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [[1, 2.5]]}]});
        let r = srv.post("/v2/models/svc/infer", &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.json(),
            json!({"id": "7", "model_name": "svc", "model_version": "1",
                   "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [2.0, 5.0]}]})
        );
        assert_server_timing(&r.headers["server-timing"]);
        let mut asked = body.clone();
        asked["outputs"] = json!([{"name": "y:0"}]);
        let r = srv.post("/v2/models/svc/versions/1/infer", &asked);
        assert_eq!(r.json()["outputs"][0]["name"], "y:0");

        let r = srv.send(
            "POST",
            "/v2/models/svc/infer",
            &[],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 401);
        assert!(r.error().contains("API key"));
        let r = srv.post("/v2/models/svc/versions/7/infer", &body);
        assert_eq!(r.status, 404);
        assert!(r.error().contains('7'));
        let r = srv.post("/v2/models/nosuch/infer", &body);
        assert_eq!((r.status, r.error().contains("nosuch")), (404, true));
        let r = srv.send("POST", "/v2/models/svc/infer", &[], b"{not json");
        assert_eq!(r.status, 400);
        r.error();
    }

    #[test]
    fn kserve_binary_infer() {
        let srv = TestServer::start(core(true));
        let header = json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
            "parameters": {"binary_data_size": 8}}], "parameters": {"binary_data_output": true}})
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend([1.0f32, -3.0].iter().flat_map(|v| v.to_le_bytes()));
        let len = header.len().to_string();
        let auth = format!("Bearer {KEY}");
        let r = srv.send(
            "POST",
            "/v2/models/svc/infer",
            &[
                ("Authorization", &auth),
                ("Inference-Header-Content-Length", &len),
            ],
            &body,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.headers["content-type"], "application/octet-stream");
        let n: usize = r.headers["inference-header-content-length"]
            .parse()
            .unwrap();
        let head: Value = serde_json::from_slice(&r.body[..n]).unwrap();
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
        let values: Vec<f32> = r.body[n..]
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(values, vec![2.0, -6.0]);
        assert_server_timing(&r.headers["server-timing"]);
    }

    /// `queue;dur=X, preprocess;dur=X, infer;dur=X, total;dur=X` with
    /// non-negative milliseconds, the stages adding up to at most the total.
    fn assert_server_timing(value: &str) {
        let stages: Vec<(&str, f64)> = value
            .split(", ")
            .map(|m| {
                let (name, dur) = m.split_once(";dur=").expect("NAME;dur=MS");
                (name, dur.parse().expect("milliseconds"))
            })
            .collect();
        let names: Vec<&str> = stages.iter().map(|s| s.0).collect();
        assert_eq!(names, ["queue", "preprocess", "infer", "total"], "{value}");
        assert!(stages.iter().all(|s| s.1 >= 0.0), "{value}");
        let parts: f64 = stages[..3].iter().map(|s| s.1).sum();
        assert!(parts <= stages[3].1 + 0.01, "{value}");
    }

    #[test]
    fn kserve_health_and_metadata() {
        let srv = TestServer::start(core(true));
        assert_eq!(srv.get("/v2/health/live").json(), json!({"live": true}));
        assert_eq!(srv.get("/v2/health/ready").status, 200);
        assert_eq!(srv.get("/v2/models/svc/ready").status, 200);
        assert_eq!(srv.get("/v2/models/svc/versions/1/ready").status, 200);
        assert_eq!(srv.get("/v2/models/nosuch/ready").status, 404);
        assert_eq!(
            srv.get("/v2").json()["extensions"],
            json!(["binary_tensor_data"])
        );
        let md = srv.get("/v2/models/svc").json();
        assert_eq!(
            md,
            json!({"name": "svc", "versions": ["1"], "platform": "tract_onnx",
                   "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
                   "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]})
        );
        assert_eq!(srv.get("/v2/models/svc/versions/7").status, 404);
        assert_eq!(srv.send("GET", "/v2/models/svc", &[], b"").status, 401);

        let cold = TestServer::start(core(false));
        assert_eq!(cold.get("/v2/health/ready").status, 503);
        assert_eq!(cold.get("/v2/models/svc/ready").status, 503);
        assert_eq!(
            cold.get("/v1/models/svc").json()["model_version_status"][0]["state"],
            "LOADING"
        );
    }

    #[test]
    fn tfs_predict_status_and_metadata() {
        let srv = TestServer::start(core(true));
        let r = srv.post(
            "/v1/models/svc:predict",
            &json!({"instances": [[1, 2], [3, 4]]}),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json(), json!({"predictions": [[2.0, 4.0], [6.0, 8.0]]}));
        assert_server_timing(&r.headers["server-timing"]);
        let r = srv.post(
            "/v1/models/svc/versions/1:predict",
            &json!({"inputs": {"x_alias": [[1, 2]]}}),
        );
        assert_eq!(r.json(), json!({"outputs": [[2.0, 4.0]]}));
        let r = srv.post(
            "/v1/models/svc/versions/7:predict",
            &json!({"instances": [[1, 2]]}),
        );
        assert_eq!(r.status, 404);
        r.error();
        let r = srv.post(
            "/v1/models/svc:predict",
            &json!({"instances": [{"b64": "aGk="}]}),
        );
        assert_eq!(r.status, 400);
        assert!(
            r.error().contains("float32"),
            "the core's dtype check answers"
        );
        assert_eq!(srv.post("/v1/models/svc:classify", &json!({})).status, 501);

        assert_eq!(
            srv.get("/v1/models/svc").json(),
            json!({"model_version_status": [{"version": "1", "state": "AVAILABLE",
                   "status": {"error_code": "OK", "error_message": ""}}]})
        );
        assert_eq!(srv.get("/v1/models/nosuch").status, 404);
        let md = srv.get("/v1/models/svc/versions/1/metadata").json();
        let sig = &md["metadata"]["signature_def"]["signature_def"]["serving_default"];
        assert_eq!(sig["inputs"]["x_alias"]["name"], "x");
        assert_eq!(sig["outputs"]["y:0"]["dtype"], "DT_FLOAT");
        assert_eq!(srv.get("/v1/models/svc:predict").status, 405);
    }

    #[test]
    fn transport_errors_are_json() {
        let srv = TestServer::start(core(true));
        let big = json!({"instances": [vec![0.5; 2000]]});
        let r = srv.post("/v1/models/svc:predict", &big);
        assert_eq!(r.status, 413);
        assert!(r.error().contains("4096"));
        let r = srv.get("/nowhere");
        assert_eq!(r.status, 404);
        assert!(r.error().contains("/nowhere"));
        let r = srv.get("/v2/models/svc/infer");
        assert_eq!(r.status, 405);
        r.error();

        let body =
            json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})
                .to_string();
        let auth = format!("Bearer {KEY}");
        let with_timeout = |ms: &str| {
            srv.send(
                "POST",
                "/v2/models/svc/infer",
                &[("Authorization", &auth), ("X-Accel-Timeout-Ms", ms)],
                body.as_bytes(),
            )
        };
        assert_eq!(with_timeout("0").status, 504);
        assert_eq!(with_timeout("soon").status, 400);
        assert_eq!(with_timeout("60000").status, 200);
    }

    #[test]
    fn metrics_text() {
        let srv = TestServer::start(core(true));
        srv.post("/v1/models/svc:predict", &json!({"instances": [[1, 2]]}));
        let r = srv.send("GET", "/metrics", &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], METRICS_CONTENT_TYPE);
        let text = String::from_utf8(r.body).unwrap();
        assert!(text.contains("protocol=\"tfs_rest\""), "{text}");
        // One engine worker and 4 places to wait; the request was answered.
        assert!(text.contains("\naccel_admission_limit 5\n"), "{text}");
        assert!(text.contains("\naccel_requests_in_flight 0\n"), "{text}");
    }
}

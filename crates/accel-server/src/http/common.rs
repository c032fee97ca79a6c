//! What every HTTP route shares: the state, JSON error answers, the API key
//! and deadline headers, model paths, and reading bodies under the limit.

use super::HttpLimits;
use crate::auth::{bearer, ApiKey};
use crate::core::RequestCore;
use crate::error::ServeError;
use crate::request::{InferResponse, Target, SERVER_TIMING};
use crate::status::http_status;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequestParts, Path};
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The deadline header: milliseconds from arrival, `0` = already expired.
pub(crate) const TIMEOUT_HEADER: &str = "x-accel-timeout-ms";

/// How much of an over-limit body is still read (and dropped) before the
/// 413 goes out, so the client sees the answer instead of a reset
/// connection; and for how long at most.
const DRAIN_MAX_BYTES: usize = 64 << 20;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub core: Arc<RequestCore>,
    pub limits: HttpLimits,
}

/// An error answer: a status and `{"error": "<message>"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    /// A body over the configured limit (a transport condition, not an
    /// error kind of the core).
    pub fn too_large(limit: usize) -> Self {
        HttpError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "request body is larger than the limit of {limit} bytes (--max-message-bytes)"
            ),
        }
    }

    /// A path that exists with another method.
    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        HttpError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("{method} is not allowed on {path}"),
        }
    }
}

impl From<ServeError> for HttpError {
    fn from(e: ServeError) -> Self {
        HttpError {
            status: http_status(e.kind),
            message: e.message,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        json_response(
            self.status,
            serde_json::to_vec(&body).expect("JSON serializes"),
        )
    }
}

/// An answer with a JSON body.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `resp` with the answer's stage times in a `Server-Timing` header.
pub(crate) fn with_server_timing(mut resp: Response, answer: &InferResponse) -> Response {
    if let Ok(v) = HeaderValue::try_from(answer.server_timing()) {
        resp.headers_mut().insert(SERVER_TIMING, v);
    }
    resp
}

/// Serializes `value` as a 200 JSON answer.
pub(crate) fn json_ok<T: serde::Serialize>(value: &T) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(value).expect("JSON serializes"),
    )
}

/// The presented API key (`Authorization: Bearer <key>`), if any. A value
/// that is not text counts as no key.
pub(crate) fn api_key(headers: &HeaderMap) -> Option<ApiKey> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
}

/// The deadline of `X-Accel-Timeout-Ms`, if set.
pub(crate) fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, ServeError> {
    let Some(value) = headers.get(TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    text.parse::<u64>()
        .map(|ms| Some(Duration::from_millis(ms)))
        .map_err(|_| {
            ServeError::invalid(format!(
                "X-Accel-Timeout-Ms must be a whole number of milliseconds, got {:?}",
                String::from_utf8_lossy(value.as_bytes())
            ))
        })
}

/// Refuses compressed request bodies (none of our clients send them unasked).
pub(crate) fn identity_encoding(headers: &HeaderMap) -> Result<(), ServeError> {
    match headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim())
    {
        None | Some("") => Ok(()),
        Some(e) if e.eq_ignore_ascii_case("identity") => Ok(()),
        Some(e) => Err(ServeError::invalid(format!(
            "Content-Encoding {e:?} is not supported; send the body uncompressed"
        ))),
    }
}

/// A model version from a URL: a positive number.
pub(crate) fn parse_version(model: &str, version: &str) -> Result<u64, ServeError> {
    version.parse::<u64>().map_err(|_| {
        ServeError::not_found(format!(
            "no version {version:?} of model {model:?}: versions are whole numbers"
        ))
    })
}

/// The model named by the URL.
pub(crate) fn target(model: &str, version: Option<&str>) -> Result<Target, ServeError> {
    Ok(Target {
        name: Some(model.to_string()),
        version: version.map(|v| parse_version(model, v)).transpose()?,
        route: None,
    })
}

/// `{model}` and optional `{version}` of a KServe path.
pub(crate) struct ModelPath {
    pub model: String,
    pub version: Option<String>,
}

impl ModelPath {
    pub fn target(&self) -> Result<Target, ServeError> {
        target(&self.model, self.version.as_deref())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ModelPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ServeError::invalid(e.body_text()))?;
        Ok(ModelPath {
            model: params.remove("model").unwrap_or_default(),
            version: params.remove("version"),
        })
    }
}

/// Reads the whole body, refusing more than `limit` bytes with a 413. An
/// over-limit body is still drained (up to a bound) before answering.
pub(crate) async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, HttpError> {
    let hint = body.size_hint();
    if hint.lower() as usize > limit {
        drain(body).await;
        return Err(HttpError::too_large(limit));
    }
    let mut buf = Vec::with_capacity((hint.lower() as usize).min(limit));
    while let Some(frame) = next_frame(&mut body).await {
        let frame =
            frame.map_err(|e| ServeError::invalid(format!("cannot read the request body: {e}")))?;
        if let Some(data) = frame {
            if buf.len() + data.len() > limit {
                drain(body).await;
                return Err(HttpError::too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// The next frame's data (`None` inside for trailers), `None` at the end.
async fn next_frame(body: &mut Body) -> Option<Result<Option<Bytes>, axum::Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
        .await
        .map(|frame| frame.map(|f| f.into_data().ok()))
}

async fn drain(mut body: Body) {
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = next_frame(&mut body).await {
            if let Some(data) = frame {
                seen += data.len();
                if seen > DRAIN_MAX_BYTES {
                    break;
                }
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_header() {
        let mut h = HeaderMap::new();
        assert_eq!(timeout(&h).unwrap(), None);
        h.insert(TIMEOUT_HEADER, HeaderValue::from_static("250"));
        assert_eq!(timeout(&h).unwrap(), Some(Duration::from_millis(250)));
        h.insert(TIMEOUT_HEADER, HeaderValue::from_static("0"));
        assert_eq!(timeout(&h).unwrap(), Some(Duration::ZERO));
        h.insert(TIMEOUT_HEADER, HeaderValue::from_static("soon"));
        let e = timeout(&h).unwrap_err();
        assert_eq!(e.kind, accel_core::ErrorKind::InvalidArgument);
        assert!(e.message.contains("soon"), "{}", e.message);
    }

    #[test]
    fn bearer_key_and_versions() {
        let mut h = HeaderMap::new();
        assert!(api_key(&h).is_none());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer k-123"));
        assert_eq!(api_key(&h).unwrap().expose(), "k-123");
        let t = target("m", Some("3")).unwrap();
        assert_eq!(
            (t.name.as_deref(), t.version, t.route),
            (Some("m"), Some(3), None)
        );
        let e = target("m", Some("v3")).unwrap_err();
        assert_eq!(e.kind, accel_core::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn body_limit() {
        let ok = read_body(Body::from(vec![7u8; 10]), 10).await.unwrap();
        assert_eq!(ok, vec![7u8; 10]);
        let e = read_body(Body::from(vec![7u8; 11]), 10).await.unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("10 bytes"), "{}", e.message);
        let resp = e.into_response();
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["error"].as_str().unwrap().contains("limit"));
    }
}

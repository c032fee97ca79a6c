//! The HTTP protocols over a lean HTTP/1.1 client (hyper's connection
//! level: no pool, no redirects): each worker owns one keep-alive
//! connection, reopened only if the server closes it or a request fails.
//!
//! - KServe v2 REST with Triton's binary tensor data extension: a JSON
//!   header `{"inputs": [{"name": INPUT, "shape": [1], "datatype": "BYTES",
//!   "parameters": {"binary_data_size": N}}]}`, then the image as 4-byte
//!   little-endian length + bytes; `Inference-Header-Content-Length` says
//!   where the JSON ends. What `tritonclient.http` and `perf_analyzer` send.
//! - TF Serving REST: `{"instances": [{"b64": "..."}]}` (or
//!   `[{INPUT: {"b64": "..."}}]` when an input name is given).

use super::tally::{Answer, Outcome};
use super::{answer, BenchPlan, BenchProtocol, DEFAULT_KSERVE_INPUT};
use crate::{Client, ClientError};
use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Where `tritonclient.http` says how long the JSON part of a body is.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// The error key of a request the transport failed (connection refused,
/// reset, closed mid-answer).
const CONNECTION_ERROR: &str = "connection error";

/// One prepared request body.
struct Body {
    bytes: Bytes,
    /// The binary extension's JSON length, for KServe.
    header_length: Option<HeaderValue>,
}

/// Everything the workers share: where to connect and what to send.
pub(super) struct HttpTarget {
    address: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    path: http::Uri,
    headers: HeaderMap,
    bodies: Vec<Body>,
    timeout: Option<Duration>,
    /// Read each answer's top-1.
    check: bool,
}

impl HttpTarget {
    pub(super) fn new(
        client: &Client,
        plan: &BenchPlan,
        check: bool,
    ) -> Result<HttpTarget, ClientError> {
        let opts = client.options();
        let service = &opts.service;
        let mut headers = HeaderMap::new();
        headers.insert(
            HOST,
            HeaderValue::try_from(opts.address.as_str())
                .map_err(|_| ClientError::Config(format!("bad address {:?}", opts.address)))?,
        );
        if let Some(bearer) = client.bearer()? {
            let mut v = HeaderValue::try_from(bearer)
                .map_err(|_| ClientError::Config("bad API key".into()))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let (path, content_type, bodies) = match plan.protocol {
            BenchProtocol::KserveHttp => {
                let input = plan.input.as_deref().unwrap_or(DEFAULT_KSERVE_INPUT);
                let bodies = plan.images.iter().map(|i| kserve_body(input, i)).collect();
                (
                    format!("/v2/models/{service}/infer"),
                    "application/octet-stream",
                    bodies,
                )
            }
            BenchProtocol::TfsRest => {
                let input = plan.input.as_deref();
                let bodies = plan.images.iter().map(|i| tfs_body(input, i)).collect();
                (
                    format!("/v1/models/{service}:predict"),
                    "application/json",
                    bodies,
                )
            }
            p => {
                return Err(ClientError::Config(format!(
                    "{p:?} is not an HTTP protocol"
                )))
            }
        };
        let path = match path.parse::<http::Uri>() {
            Ok(uri) if uri.query().is_none() && uri.path() == path => uri,
            _ => {
                return Err(ClientError::Config(format!(
                    "the service name {service:?} cannot go in a URL path"
                )))
            }
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        let tls = if opts.tls {
            Some(tls_connector(client)?)
        } else {
            None
        };
        Ok(HttpTarget {
            address: opts.address.clone(),
            tls,
            path,
            headers,
            bodies,
            timeout: opts.timeout,
            check,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                handshake(tls).await
            }
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

fn tls_connector(
    client: &Client,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    ),
    ClientError,
> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let opts = client.options();
    let Some(ca) = &opts.ca else {
        return Err(ClientError::Config(
            "HTTP over TLS needs the CA certificate to trust (--ca)".into(),
        ));
    };
    let pem = std::fs::read(ca).map_err(|source| ClientError::Io {
        path: ca.clone(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| ClientError::Config(format!("{}: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Config(format!("{}: {e}", ca.display())))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Config(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let host = opts
        .address
        .rsplit_once(':')
        .map_or(opts.address.as_str(), |(h, _)| h)
        .trim_matches(['[', ']']);
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| ClientError::Config(format!("TLS server name {host:?}: {e}")))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

fn kserve_body(input: &str, image: &[u8]) -> Body {
    let header = serde_json::json!({"inputs": [{
        "name": input,
        "shape": [1],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": image.len() + 4},
    }]})
    .to_string();
    let mut bytes = Vec::with_capacity(header.len() + 4 + image.len());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&(image.len() as u32).to_le_bytes());
    bytes.extend_from_slice(image);
    Body {
        bytes: bytes.into(),
        header_length: Some(HeaderValue::from(header.len())),
    }
}

fn tfs_body(input: Option<&str>, image: &[u8]) -> Body {
    let b64 = serde_json::json!({"b64": base64::engine::general_purpose::STANDARD.encode(image)});
    let instance = match input {
        Some(name) => serde_json::json!({ name: b64 }),
        None => b64,
    };
    Body {
        bytes: serde_json::json!({"instances": [instance]})
            .to_string()
            .into(),
        header_length: None,
    }
}

/// One worker and its connection (a closed-loop worker, or an idle
/// connection of the open loop).
pub(super) struct HttpWorker {
    target: Arc<HttpTarget>,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl HttpWorker {
    /// A worker with its connection open (so that connecting is not
    /// measured, and a wrong address fails at once).
    pub(super) async fn connect(target: Arc<HttpTarget>) -> Result<HttpWorker, ClientError> {
        let conn = target
            .connect()
            .await
            .map_err(|message| ClientError::Connect {
                addr: target.address.clone(),
                message,
            })?;
        Ok(HttpWorker {
            target,
            conn: Some(conn),
        })
    }

    /// A worker that connects on its first request.
    pub(super) fn lazy(target: Arc<HttpTarget>) -> HttpWorker {
        HttpWorker { target, conn: None }
    }

    pub(super) async fn send(&mut self, n: usize) -> Outcome {
        let result = match self.target.timeout {
            Some(t) => tokio::time::timeout(t, self.exchange(n))
                .await
                .unwrap_or_else(|_| Err("timeout".into())),
            None => self.exchange(n).await,
        };
        if result.is_err() {
            // A failed or abandoned exchange leaves the connection in an
            // unknown state: the next request opens a fresh one, unless
            // the server answered cleanly (an HTTP error status).
            if !matches!(&result, Err(k) if k.starts_with("HTTP ")) {
                self.conn = None;
            }
        }
        result
    }

    async fn exchange(&mut self, n: usize) -> Outcome {
        let target = Arc::clone(&self.target);
        let conn = match &mut self.conn {
            Some(c) if !c.is_closed() => c,
            slot => slot.insert(
                target
                    .connect()
                    .await
                    .map_err(|_| CONNECTION_ERROR.to_string())?,
            ),
        };
        conn.ready()
            .await
            .map_err(|_| CONNECTION_ERROR.to_string())?;
        let body = &target.bodies[n % target.bodies.len()];
        let mut req = Request::new(Full::new(body.bytes.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = target.path.clone();
        let headers = req.headers_mut();
        headers.clone_from(&target.headers);
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.bytes.len()));
        if let Some(len) = &body.header_length {
            headers.insert(HEADER_LENGTH, len.clone());
        }
        let resp = conn
            .send_request(req)
            .await
            .map_err(|_| CONNECTION_ERROR.to_string())?;
        let status = resp.status();
        let timing = resp
            .headers()
            .get_all("server-timing")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let json_length = resp
            .headers()
            .get(HEADER_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        // Read the whole answer: the connection is reused for the next one.
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|_| CONNECTION_ERROR.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let top1 = if target.check {
            // With the binary extension, the JSON part comes first.
            let json = &body[..json_length.unwrap_or(body.len()).min(body.len())];
            answer::json_top1(json)
        } else {
            None
        };
        Ok(Answer {
            server_timing: Some(timing).filter(|t| !t.is_empty()),
            top1,
        })
    }
}

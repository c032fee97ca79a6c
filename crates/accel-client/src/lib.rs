//! A client for Accel services, mirroring Azure ML's `PredictionClient`:
//! TensorFlow Serving gRPC `Predict` with the image file's bytes as a
//! `DT_STRING` tensor of shape `[N]`, no `model_spec`, and the metadata
//! `authorization: Bearer <key>` and
//! `x-ms-aml-grpc-service-route: /api/v1/service/<name>`.
//! Retries with exponential backoff on `UNAVAILABLE`, never on caller errors.
//!
//! [`bench`] is the closed-loop load generator behind `accel bench`: it
//! speaks both gRPC protocols and both HTTP ones (KServe v2 REST, TF Serving
//! REST) and reads the server's per-stage `server-timing`.
#![deny(missing_docs)]

pub mod bench;

use accel_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use accel_proto::tensorflow::serving::PredictRequest;
use accel_proto::tensorflow::{tensor_shape_proto::Dim, DataType, TensorProto, TensorShapeProto};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address or TLS settings are unusable.
    #[error("{0}")]
    Config(String),
    /// The connection could not be made.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The server answered with an error status.
    #[error("{code:?}: {message}")]
    Status {
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The answer is not what a classifier returns.
    #[error("unexpected response: {0}")]
    Response(String),
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How to reach a service.
#[derive(Clone, Default)]
pub struct ClientOptions {
    /// `HOST:PORT`.
    pub address: String,
    /// Service name (sent in the routing header).
    pub service: String,
    /// API key, if the service needs one.
    pub key: Option<String>,
    /// Use TLS; with a CA file, trust it (else the system roots).
    pub tls: bool,
    /// PEM file of the CA to trust.
    pub ca: Option<PathBuf>,
    /// Per-call deadline.
    pub timeout: Option<Duration>,
    /// Retries on `UNAVAILABLE` (0 = none).
    pub retries: u32,
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("address", &self.address)
            .field("service", &self.service)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("ca", &self.ca)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// One output tensor of a prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The key the server used.
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Float values (from `float_val` or `tensor_content`).
    pub values: Vec<f32>,
}

/// A connected client.
#[derive(Debug, Clone)]
pub struct Client {
    stub: PredictionServiceClient<Channel>,
    channel: Channel,
    opts: ClientOptions,
}

impl Client {
    /// Connects (lazily: the first call opens the connection).
    pub fn connect(opts: ClientOptions) -> Result<Client, ClientError> {
        let scheme = if opts.tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", opts.address))
            .map_err(|e| ClientError::Config(format!("bad address {:?}: {e}", opts.address)))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if opts.tls {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &opts.ca {
                let pem = std::fs::read(ca).map_err(|source| ClientError::Io {
                    path: ca.clone(),
                    source,
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            let host = opts
                .address
                .rsplit_once(':')
                .map_or(opts.address.as_str(), |(h, _)| h);
            endpoint = endpoint
                .tls_config(tls.domain_name(host.trim_matches(['[', ']'])))
                .map_err(|e| ClientError::Config(format!("TLS: {e}")))?;
        }
        let channel = endpoint.connect_lazy();
        Ok(Client {
            stub: PredictionServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            channel,
            opts,
        })
    }

    fn request(&self, images: &[Vec<u8>]) -> Result<tonic::Request<PredictRequest>, ClientError> {
        let tensor = TensorProto {
            dtype: DataType::DtString as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![Dim {
                    size: images.len() as i64,
                    name: String::new(),
                }],
                unknown_rank: false,
            }),
            string_val: images.to_vec(),
            ..Default::default()
        };
        let mut req = tonic::Request::new(PredictRequest {
            inputs: [("images".to_string(), tensor)].into_iter().collect(),
            ..Default::default()
        });
        *req.metadata_mut() = self.metadata(true)?;
        if let Some(t) = self.opts.timeout {
            req.set_timeout(t);
        }
        Ok(req)
    }

    /// The metadata every call carries: `authorization: Bearer <key>` when
    /// there is a key, and with `route`, Azure's routing header.
    pub(crate) fn metadata(&self, route: bool) -> Result<MetadataMap, ClientError> {
        let mut md = MetadataMap::new();
        if route {
            let route = format!("/api/v1/service/{}", self.opts.service);
            md.insert(
                "x-ms-aml-grpc-service-route",
                MetadataValue::try_from(route.as_str())
                    .map_err(|_| ClientError::Config("bad service name".into()))?,
            );
        }
        if let Some(v) = self.bearer()? {
            let mut v = MetadataValue::try_from(v).map_err(|_| bad_key())?;
            v.set_sensitive(true);
            md.insert("authorization", v);
        }
        Ok(md)
    }

    /// `Bearer <key>`, when there is a key.
    pub(crate) fn bearer(&self) -> Result<Option<String>, ClientError> {
        match &self.opts.key {
            Some(key) if key.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) => {
                Ok(Some(format!("Bearer {key}")))
            }
            Some(_) => Err(bad_key()),
            None => Ok(None),
        }
    }

    /// The options it was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// Scores encoded images (JPEG/PNG bytes); returns the output tensor
    /// (the only one the service answers with).
    pub async fn score_images(&self, images: &[Vec<u8>]) -> Result<Output, ClientError> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            let mut stub = self.stub.clone();
            match stub.predict(self.request(images)?).await {
                Ok(resp) => return first_output(resp.into_inner()),
                Err(s) if s.code() == tonic::Code::Unavailable && attempt < self.opts.retries => {
                    tracing::debug!(attempt, "UNAVAILABLE, retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                Err(s) => {
                    return Err(ClientError::Status {
                        code: s.code(),
                        message: s.message().to_string(),
                    })
                }
            }
        }
    }

    /// The underlying channel (shared by other stubs).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.opts.service
    }

    /// Scores one image file.
    pub async fn score_file(&self, path: &Path) -> Result<Output, ClientError> {
        let bytes = std::fs::read(path).map_err(|source| ClientError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.score_images(&[bytes]).await
    }
}

fn bad_key() -> ClientError {
    ClientError::Config("the API key has characters a header cannot carry".into())
}

fn first_output(
    resp: accel_proto::tensorflow::serving::PredictResponse,
) -> Result<Output, ClientError> {
    let (name, t) = resp
        .outputs
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Response("no outputs".into()))?;
    if t.dtype != DataType::DtFloat as i32 {
        return Err(ClientError::Response(format!(
            "output {name:?} is not float32"
        )));
    }
    let values = if !t.tensor_content.is_empty() {
        t.tensor_content
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        t.float_val
    };
    let shape = t
        .tensor_shape
        .map(|s| s.dim.iter().map(|d| d.size).collect())
        .unwrap_or_default();
    Ok(Output {
        name,
        shape,
        values,
    })
}

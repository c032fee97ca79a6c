//! Starting and stopping the listeners: gRPC (both services) and HTTP, each
//! on its own port, plaintext or TLS (rustls), in one process.

use crate::core::RequestCore;
use crate::error::StartError;
use crate::grpc::{kserve::KserveService, tfs::TfsService};
use crate::http::{router, HttpLimits};
use accel_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use accel_proto::tensorflow::serving::prediction_service_server::PredictionServiceServer;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// TLS certificate chain and private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Host or IP to bind.
    pub host: String,
    /// gRPC port (0 = any free port).
    pub grpc_port: u16,
    /// HTTP port (0 = any free port).
    pub http_port: u16,
    /// TLS for both listeners.
    pub tls: Option<TlsFiles>,
    /// Largest accepted request message / body, in bytes.
    pub max_message_bytes: usize,
}

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(host: &str, port: u16) -> Result<TcpListener, StartError> {
    TcpListener::bind((host, port))
        .await
        .map_err(|source| StartError::Bind {
            addr: format!("{host}:{port}"),
            source,
        })
}

fn read(path: &PathBuf) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|e| StartError::Tls(format!("cannot read {}: {e}", path.display())))
}

fn rustls_config(tls: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, StartError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(&read(&tls.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError::Tls(format!("{}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "{} holds no certificate",
            tls.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&tls.key)?)
        .map_err(|e| StartError::Tls(format!("{}: {e}", tls.key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StartError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| StartError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds both listeners and starts serving `core`.
pub async fn start(
    core: Arc<RequestCore>,
    opts: &ListenOptions,
) -> Result<RunningServer, StartError> {
    let grpc_listener = bind(&opts.host, opts.grpc_port).await?;
    let http_listener = bind(&opts.host, opts.http_port).await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: opts.host.clone(),
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: opts.host.clone(),
            source,
        })?;
    let (stop, stop_rx) = watch::channel(false);

    let max = opts.max_message_bytes;
    let tfs = PredictionServiceServer::new(TfsService::new(Arc::clone(&core)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX);
    let kserve = GrpcInferenceServiceServer::new(KserveService::new(Arc::clone(&core)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &opts.tls {
        let identity = tonic::transport::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| StartError::Tls(e.to_string()))?;
    }
    let grpc_router = builder.add_service(tfs).add_service(kserve);
    let incoming =
        tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let mut rx = stop_rx.clone();
    let grpc_task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = grpc_router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });

    let app = router(
        Arc::clone(&core),
        HttpLimits {
            max_body_bytes: max,
        },
    );
    let rx = stop_rx.clone();
    let http_task = match &opts.tls {
        None => tokio::spawn(async move {
            let mut rx = rx;
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(http_listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        }),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(rustls_config(tls)?);
            tokio::spawn(serve_https(http_listener, acceptor, app, rx))
        }
    };
    Ok(RunningServer {
        grpc_addr,
        http_addr,
        stop,
        tasks: vec![grpc_task, http_task],
    })
}

async fn serve_https(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // A plaintext client fails the handshake here and is dropped.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

impl RunningServer {
    /// Stops accepting connections, lets in-flight requests finish, then
    /// stops the engine workers.
    pub async fn shutdown(self, core: &RequestCore) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        core.shutdown();
    }
}

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
///
/// Both listeners are served by the same hyper connection loop (HTTP/1.1
/// and HTTP/2, plaintext or TLS): the gRPC services are tonic services
/// mounted on a router, not tonic's own transport, so the `grpc-timeout`
/// deadline is enforced by the request core alone and an expired deadline
/// is answered `DEADLINE_EXCEEDED` (tonic's transport would answer
/// `CANCELLED`).
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
    let acceptor = match &opts.tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(rustls_config(tls)?)),
        None => None,
    };
    let (stop, stop_rx) = watch::channel(false);

    let max = opts.max_message_bytes;
    let tfs = PredictionServiceServer::new(TfsService::new(Arc::clone(&core)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX);
    let kserve = GrpcInferenceServiceServer::new(KserveService::new(Arc::clone(&core)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX);
    let grpc_app = tonic::service::Routes::new(tfs)
        .add_service(kserve)
        .prepare()
        .into_axum_router();
    let http_app = router(
        Arc::clone(&core),
        HttpLimits {
            max_body_bytes: max,
        },
    );
    let tasks = vec![
        tokio::spawn(serve(
            grpc_listener,
            acceptor.clone(),
            grpc_app,
            stop_rx.clone(),
        )),
        tokio::spawn(serve(http_listener, acceptor, http_app, stop_rx)),
    ];
    Ok(RunningServer {
        grpc_addr,
        http_addr,
        stop,
        tasks,
    })
}

/// How long shutdown waits for open connections to finish their requests.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn serve(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            match acceptor {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(acceptor) => {
                    // A plaintext client fails the handshake here and is dropped.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    // Stop accepting; let open connections finish what they are doing.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
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

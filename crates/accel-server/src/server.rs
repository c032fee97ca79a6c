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
    /// A new connection must send its first bytes (and finish its TLS
    /// handshake), and an HTTP/1 request its headers, within this time;
    /// otherwise it is closed. Defends against clients that hold
    /// connections open without sending (slowloris).
    pub header_timeout: std::time::Duration,
}

/// The default of [`ListenOptions::header_timeout`] (hyper's for HTTP/1 headers).
pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
            Connections {
                acceptor: acceptor.clone(),
                header_timeout: opts.header_timeout,
            },
            grpc_app,
            stop_rx.clone(),
        )),
        tokio::spawn(serve(
            http_listener,
            Connections {
                acceptor,
                header_timeout: opts.header_timeout,
            },
            http_app,
            stop_rx,
        )),
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

/// How a listener treats each new connection.
#[derive(Clone)]
struct Connections {
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    header_timeout: std::time::Duration,
}

async fn serve(
    listener: TcpListener,
    connections: Connections,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
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
        let connections = connections.clone();
        tokio::spawn(async move {
            use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
            use hyper_util::server::conn::auto::Builder;
            let timeout = connections.header_timeout;
            // A client that connects and sends nothing is dropped.
            let first = tokio::time::timeout(timeout, tcp.peek(&mut [0u8; 1])).await;
            if !matches!(first, Ok(Ok(_))) {
                return;
            }
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
            match connections.acceptor {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(acceptor) => {
                    // A plaintext client fails the handshake here and is
                    // dropped, as is one that does not finish it in time.
                    let Ok(Ok(tls)) = tokio::time::timeout(timeout, acceptor.accept(tcp)).await
                    else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    /// Reads until the server closes the connection; how long that took.
    fn closed_after(mut s: TcpStream) -> Duration {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return t.elapsed(),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return t.elapsed(),
                Err(e) => panic!("the server kept the connection open: {e}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_and_slow_clients_are_dropped_after_the_header_timeout() {
        let core = crate::testing::core(true);
        let opts = ListenOptions {
            host: "127.0.0.1".into(),
            grpc_port: 0,
            http_port: 0,
            tls: None,
            max_message_bytes: 1 << 20,
            header_timeout: Duration::from_millis(500),
        };
        let server = start(Arc::clone(&core), &opts).await.unwrap();
        let (http, grpc) = (server.http_addr, server.grpc_addr);
        tokio::task::spawn_blocking(move || {
            let in_time = |d: Duration, what: &str| {
                assert!(
                    d >= Duration::from_millis(400) && d < Duration::from_secs(5),
                    "{what}: closed after {d:?}, expected about 500 ms"
                );
            };
            // Connects and sends nothing, on either listener.
            for addr in [http, grpc] {
                in_time(closed_after(TcpStream::connect(addr).unwrap()), "silent");
            }
            // HTTP/1 headers begun and never finished.
            let mut s = TcpStream::connect(http).unwrap();
            s.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            in_time(closed_after(s), "slow headers");
            // A prompt client is answered.
            let mut s = TcpStream::connect(http).unwrap();
            s.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        })
        .await
        .unwrap();
        server.shutdown(&core).await;
    }
}

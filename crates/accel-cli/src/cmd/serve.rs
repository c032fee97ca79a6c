//! `accel serve`: load models, start gRPC and HTTP listeners, print one
//! `ready grpc=HOST:PORT http=HOST:PORT` line, serve until SIGTERM/SIGINT,
//! then drain in-flight requests and exit.
//!
//! Models come from the registry (`--model`, `--config`) or from model
//! bundle directories (`--bundle`, written by `accel models bundle`). A
//! serve of bundles only, with `--key` or no keys, never opens the registry:
//! it runs from a read-only image with an unwritable `ACCEL_HOME`.

use super::load::{load_model, LoadRequest, ModelSource};
use crate::context::GlobalArgs;
use accel_core::name::NameRef;
use accel_registry::Registry;
use accel_runtime::engine::EngineChoice;
use accel_runtime::Limits;
use accel_server::admission::Admission;
use accel_server::auth::{ApiKey, KeyHash, KeySource, ServiceKeys};
use accel_server::executor::Executor;
use accel_server::metrics::Metrics;
use accel_server::server::{start, ListenOptions, TlsFiles, DEFAULT_HEADER_TIMEOUT};
use accel_server::{RequestCore, Service};
use anyhow::{bail, Context};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `accel serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A model to serve, NAME or NAME:VERSION (repeatable; pairs with --service by position).
    #[arg(long = "model", env = "ACCEL_MODELS", value_delimiter = ',')]
    pub models: Vec<String>,
    /// A model bundle directory to serve, as `accel models bundle` writes it
    /// (repeatable; needs no registry). Its services come after those of
    /// --model: the --service names pair with every --model, then every
    /// --bundle, by position.
    #[arg(long = "bundle", env = "ACCEL_BUNDLES", value_delimiter = ',')]
    pub bundles: Vec<PathBuf>,
    /// The service name of the --model (then --bundle) at the same position
    /// (default: the model name).
    #[arg(long = "service", env = "ACCEL_SERVICES", value_delimiter = ',')]
    pub services: Vec<String>,
    /// A TOML file of services: `[[service]]` tables with `model`, and optional `name`, `keys`, `auth`.
    #[arg(long, env = "ACCEL_SERVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// An accepted API key for every service given by --model or --bundle (repeatable; config-file services use their own `keys`).
    #[arg(long = "key", env = "ACCEL_API_KEYS", value_delimiter = ',', hide_env_values = true, value_parser = parse_key)]
    pub keys: Vec<ApiKey>,
    /// Require the keys stored in the registry (`accel services keys regenerate`), for --bundle services too (the registry must then exist).
    #[arg(long, env = "ACCEL_AUTH")]
    pub auth: bool,
    /// Address to bind.
    #[arg(long, env = "ACCEL_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// gRPC port (0 = any free port).
    #[arg(long, env = "ACCEL_GRPC_PORT", default_value_t = 0)]
    pub grpc_port: u16,
    /// HTTP port (0 = any free port).
    #[arg(long, env = "ACCEL_HTTP_PORT", default_value_t = 0)]
    pub http_port: u16,
    /// TLS certificate chain (PEM) for both listeners.
    #[arg(long, env = "ACCEL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "ACCEL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Requests allowed to wait beyond those the workers are running; beyond
    /// it, RESOURCE_EXHAUSTED / 429 at once. 0 admits a request only when a
    /// worker of each stage can take it (the least latency under overload).
    #[arg(long, env = "ACCEL_QUEUE", default_value_t = 64)]
    pub queue: usize,
    /// Engine worker threads (each runs one request at a time).
    #[arg(long, env = "ACCEL_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Threads that decode and preprocess images ahead of the engine
    /// workers (a two-stage pipeline); 0 decodes on the engine workers.
    #[arg(long, env = "ACCEL_PREPROCESS_WORKERS", default_value_t = 1)]
    pub preprocess_workers: usize,
    /// Largest batch per request.
    #[arg(long, env = "ACCEL_MAX_BATCH", default_value_t = Limits::default().max_batch)]
    pub max_batch: usize,
    /// Largest image, in pixels (checked against the header before decoding).
    #[arg(long, env = "ACCEL_MAX_IMAGE_PIXELS", default_value_t = Limits::default().max_image_pixels)]
    pub max_image_pixels: u64,
    /// Largest request message (gRPC) or body (HTTP), in bytes.
    #[arg(long, env = "ACCEL_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Seconds a new connection has to send its first bytes (and finish its
    /// TLS handshake), and an HTTP/1 request its headers; then it is closed.
    #[arg(long, env = "ACCEL_HEADER_TIMEOUT_SECONDS", default_value_t = DEFAULT_HEADER_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_seconds: u64,
    /// auto, onnxruntime or tract.
    #[arg(long, env = "ACCEL_ENGINE", default_value = "auto")]
    pub engine: String,
    /// Intra-op threads per model (0 = all cores).
    #[arg(long, env = "ACCEL_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Whether idle engine threads spin-wait (true, ONNX Runtime's default:
    /// lowest latency) or sleep (false: leaves the cores to image decoding
    /// under load).
    #[arg(long, env = "ACCEL_ENGINE_SPIN")]
    pub engine_spin: Option<bool>,
    /// Look for new versions every this many seconds (0 = only on SIGHUP):
    /// a service started from a registered model without a version moves
    /// to the model's latest version under load, as TensorFlow Serving
    /// follows new version directories. The new version is loaded and
    /// warmed up before it takes requests; in-flight requests finish on
    /// the old one.
    #[arg(long, env = "ACCEL_POLL_SECONDS", default_value_t = 0)]
    pub poll_seconds: u64,
}

/// Parses an API key flag (kept redacted in Debug output).
pub fn parse_key(s: &str) -> Result<ApiKey, String> {
    if s.trim().is_empty() {
        return Err("an API key must not be empty".into());
    }
    Ok(ApiKey::new(s.trim()))
}

/// One service to start.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    model: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    auth: bool,
    /// Given by --model/--bundle/--service (gets --key), not by the config file.
    #[serde(skip)]
    from_flags: bool,
    /// A bundle directory (--bundle): loaded without the registry; `model`
    /// is then only its display.
    #[serde(skip)]
    bundle: Option<PathBuf>,
}

impl std::fmt::Debug for ServiceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceEntry")
            .field("model", &self.model)
            .field("bundle", &self.bundle)
            .field("name", &self.name)
            .field("keys", &format!("<{} redacted>", self.keys.len()))
            .field("auth", &self.auth)
            .finish()
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    service: Vec<ServiceEntry>,
}

/// Keys stored (hashed) in the registry, re-read by the server so that
/// regenerated keys take effect without a restart.
struct RegistryKeys(Arc<Registry>);

impl KeySource for RegistryKeys {
    fn key_hashes(&self, service: &str) -> Result<Vec<KeyHash>, String> {
        let keys = self.0.service_keys(service).map_err(|e| e.to_string())?;
        Ok(keys
            .iter()
            .filter_map(|k| KeyHash::from_hex(&k.sha256))
            .collect())
    }
}

fn entries(a: &ServeArgs) -> anyhow::Result<Vec<ServiceEntry>> {
    let mut out = Vec::new();
    if let Some(path) = &a.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // The parser's own message quotes the offending line, which may hold
        // a key: report only its message and the line number.
        let cfg: ConfigFile = toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(0, |sp| {
                text[..sp.start.min(text.len())].lines().count().max(1)
            });
            anyhow::anyhow!("{} line {line}: {}", path.display(), e.message())
        })?;
        out.extend(cfg.service);
    }
    if a.services.len() > a.models.len() + a.bundles.len() {
        bail!(
            "{} --service names for {} --model and {} --bundle flags",
            a.services.len(),
            a.models.len(),
            a.bundles.len()
        );
    }
    // Services by position: every --model, then every --bundle.
    let flagged = a
        .models
        .iter()
        .map(|m| (m.clone(), None))
        .chain(a.bundles.iter().map(|b| (b.display().to_string(), Some(b))));
    for (i, (model, bundle)) in flagged.enumerate() {
        out.push(ServiceEntry {
            model,
            name: a.services.get(i).cloned(),
            keys: vec![],
            auth: a.auth,
            from_flags: true,
            bundle: bundle.cloned(),
        });
    }
    if out.is_empty() {
        bail!("nothing to serve: give --model NAME[:VERSION], --bundle DIR or --config FILE");
    }
    Ok(out)
}

/// Opens the registry when a service needs it: a registered model, or
/// `--auth` (keys stored in the registry). Bundles with fixed keys (or none)
/// do not: opening creates files, and an image's home may be read-only.
fn open_registry(
    global: &GlobalArgs,
    entries: &[ServiceEntry],
) -> anyhow::Result<Option<Arc<Registry>>> {
    if entries.iter().any(|e| e.bundle.is_none()) {
        return Ok(Some(Arc::new(global.registry()?)));
    }
    if !entries.iter().any(|e| e.auth) {
        return Ok(None);
    }
    // Only for the keys of --auth: an existing registry, not a new empty one.
    let home = global.home()?;
    let db = home.join("registry.db");
    if !db.is_file() {
        bail!(
            "--auth reads the service keys from the registry, and there is none in {} (set ACCEL_HOME to the home that holds the keys, or give the keys with --key)",
            home.display()
        );
    }
    let registry = global.registry().with_context(|| {
        format!(
            "--auth reads the service keys from the registry in {}",
            home.display()
        )
    })?;
    Ok(Some(Arc::new(registry)))
}

/// Runs the server until a signal.
pub fn run(global: &GlobalArgs, a: ServeArgs) -> anyhow::Result<()> {
    let engine: EngineChoice = a.engine.parse()?;
    let entries = entries(&a)?;
    let registry = open_registry(global, &entries)?;
    let limits = Limits {
        max_image_pixels: a.max_image_pixels,
        max_batch: a.max_batch,
        ..Limits::default()
    };
    let load = Loader {
        global,
        registry: registry.clone(),
        engine,
        threads: a.threads,
        spin: a.engine_spin,
        limits,
        keys: a.keys.clone(),
    };
    let mut services = Vec::new();
    let mut followed = Vec::new();
    for entry in entries {
        let service = load.service(&entry, None)?;
        if services.iter().any(|s: &Service| s.name == service.name) {
            bail!("service {:?} is given twice", service.name);
        }
        if let Some(source) = entry
            .bundle
            .is_none()
            .then(|| entry.model.parse::<NameRef>())
        {
            if source?.version.is_none() {
                followed.push((entry, service.name.clone()));
            }
        }
        services.push(service);
    }
    // One bound on the requests inside the server, checked on arrival; the
    // pools' queues are sized to it, so an admitted request is never refused.
    let admission = Admission::new(a.workers.max(1) + a.preprocess_workers, a.queue);
    let mut core = RequestCore::new(
        services,
        Executor::new(a.workers, admission.limit()),
        Arc::new(Metrics::new()),
    )
    .with_admission(Arc::clone(&admission));
    if a.preprocess_workers > 0 {
        core = core.with_preprocess_pool(Executor::named(
            "accel-preprocess",
            a.preprocess_workers,
            admission.limit(),
        ));
    }
    let core = Arc::new(core);
    let t_warm = std::time::Instant::now();
    core.warm_up()?;
    tracing::debug!(
        warm_up_ms = t_warm.elapsed().as_secs_f64() * 1e3,
        "warmed up"
    );
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let opts = ListenOptions {
        host: a.host.clone(),
        grpc_port: a.grpc_port,
        http_port: a.http_port,
        tls,
        max_message_bytes: a.max_message_bytes,
        header_timeout: Duration::from_secs(a.header_timeout_seconds),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("accel-io")
        .build()?;
    runtime.block_on(async {
        let server = start(Arc::clone(&core), &opts).await?;
        println!("ready grpc={} http={}", server.grpc_addr, server.http_addr);
        std::io::stdout().flush()?;
        let interval = (a.poll_seconds > 0).then(|| Duration::from_secs(a.poll_seconds));
        tokio::select! {
            _ = wait_for_signal() => {}
            _ = follow_versions(&load, &core, &followed, interval) => {}
        }
        eprintln!("shutting down: draining in-flight requests");
        server.shutdown(&core).await;
        anyhow::Ok(())
    })
}

/// Loads services: what `run` needs to build one, at start or on reload.
struct Loader<'a> {
    global: &'a GlobalArgs,
    registry: Option<Arc<Registry>>,
    engine: EngineChoice,
    threads: usize,
    spin: Option<bool>,
    limits: Limits,
    /// --key values (for services given by flags).
    keys: Vec<ApiKey>,
}

impl Loader<'_> {
    /// Loads `entry`'s model (`version` pinned, else as the entry names it)
    /// into a service with its keys.
    fn service(&self, entry: &ServiceEntry, version: Option<u32>) -> anyhow::Result<Service> {
        let model = match &entry.bundle {
            Some(dir) => ModelSource::Bundle(dir.clone()),
            None => {
                let mut r: NameRef = entry.model.parse()?;
                if version.is_some() {
                    r.version = version;
                }
                ModelSource::Registry(r)
            }
        };
        let loaded = load_model(
            self.global,
            self.registry.as_deref(),
            &LoadRequest {
                model,
                engine: self.engine,
                threads: self.threads,
                spin: self.spin,
                limits: self.limits,
            },
        )?;
        if let Some(note) = &loaded.engine_note {
            eprintln!("note: {note}");
        }
        let name = entry
            .name
            .clone()
            .unwrap_or_else(|| loaded.record.name.clone());
        accel_core::name::validate_name(&name)?;
        let fixed: Vec<ApiKey> = if entry.from_flags {
            self.keys.clone()
        } else {
            entry.keys.iter().map(ApiKey::new).collect()
        };
        let source: Option<Arc<dyn KeySource>> = match (&self.registry, entry.auth) {
            (_, false) => None,
            (Some(registry), true) => {
                if version.is_none() && registry.service_keys(&name)?.is_empty() {
                    eprintln!("warning: service {name:?} requires keys but has none yet; run `accel services keys regenerate {name}`");
                }
                Some(Arc::new(RegistryKeys(Arc::clone(registry))))
            }
            (None, true) => bail!("--auth for service {name:?} needs the registry"),
        };
        tracing::info!(service = %name, model = %loaded.record.reference(), engine = %loaded.pipeline.plan().engine(), "loaded");
        Ok(Service {
            keys: ServiceKeys::new(&name, &fixed, source),
            name,
            model_name: loaded.record.name.clone(),
            version: loaded.record.version,
            pipeline: Arc::new(loaded.pipeline),
        })
    }
}

/// Moves each followed service to its model's latest version, on SIGHUP
/// and every `interval`. Never returns; a failed load is logged and the
/// service keeps its version.
async fn follow_versions(
    load: &Loader<'_>,
    core: &RequestCore,
    followed: &[(ServiceEntry, String)],
    interval: Option<Duration>,
) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: looking for new model versions");
            }
            _ = async { match interval { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
        }
        for (entry, name) in followed {
            // Loading compiles a model: not on the async workers.
            let outcome = tokio::task::block_in_place(|| update(load, core, entry, name));
            if let Err(e) = outcome {
                tracing::warn!(service = %name, error = %format!("{e:#}"), "keeping the current version");
                eprintln!("warning: service {name:?} keeps its current version: {e:#}");
            }
        }
    }
}

/// Loads the latest version of a followed service's model if it is not the
/// one served, and swaps it in.
fn update(
    load: &Loader<'_>,
    core: &RequestCore,
    entry: &ServiceEntry,
    name: &str,
) -> anyhow::Result<()> {
    let Some(registry) = &load.registry else {
        return Ok(());
    };
    let latest = registry.get_model(&entry.model.parse()?)?;
    let current = core
        .services()
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.version);
    if current == Some(latest.version) {
        return Ok(());
    }
    let service = load.service(entry, Some(latest.version))?;
    let old = core.replace(service)?;
    eprintln!(
        "service {name:?} now serves {}:{} (was version {})",
        latest.name, latest.version, old.version
    );
    // Requests routed before the swap still hold the old service: wait for
    // them (bounded), so that its memory is free when it is handed back.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while Arc::strong_count(&old) > 1 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(old);
    release_freed_memory();
    Ok(())
}

/// Hands memory freed by an unloaded model back to the system (glibc keeps
/// freed heap in its arenas otherwise, and the process would look as if it
/// still held the old model).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

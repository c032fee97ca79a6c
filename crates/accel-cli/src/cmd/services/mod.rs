//! `accel services ...`: deploy images as services, follow and remove them,
//! and manage their API keys.
//!
//! Module map: `keys` (`services keys regenerate|list`), `local` (the
//! `local` target: a supervised `accel serve` on this machine, and the
//! hidden `services supervise` that does the supervising), `kubernetes` (the
//! `kubernetes` target: manifests, server-side apply, rollout wait, delete).

pub mod keys;
pub mod kubernetes;
pub mod local;

use crate::context::GlobalArgs;
use accel_registry::{Dependents, DeploymentRecord, Registry};
use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};

/// Service subcommands.
#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// Deploy an image as a service (`--target local`: a supervised `accel
    /// serve` on this machine, restarted when it dies).
    Deploy(Box<DeployArgs>),
    /// List the deployments and their states.
    List(ListArgs),
    /// Show one deployment: its record, state and where to reach it.
    Show(NameArgs),
    /// Print a deployment's server log.
    Logs(LogsArgs),
    /// Wait until a deployment is running.
    Wait(WaitArgs),
    /// Stop a deployment and remove it, its files and its record.
    Delete(NameArgs),
    /// Manage a service's API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Run the supervisor of a local deployment (started by `deploy`).
    #[command(hide = true)]
    Supervise(SuperviseArgs),
}

/// Where a service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// This machine: a supervised `accel serve`.
    Local,
    /// A Kubernetes cluster.
    Kubernetes,
}

/// `accel services deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The service name (also the deployment's name).
    pub name: String,
    /// The image to deploy, NAME or NAME:VERSION (it must have succeeded).
    #[arg(long)]
    pub image: Option<String>,
    /// Where it runs.
    #[arg(long, value_enum, default_value = "local")]
    pub target: Target,
    /// local: the gRPC port (default: a free port, kept for the deployment's
    /// life so that its scoring URI stays valid across restarts).
    #[arg(long)]
    pub port: Option<u16>,
    /// local: the HTTP port (default: a free port, kept likewise).
    #[arg(long)]
    pub http_port: Option<u16>,
    /// local: the address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Require an API key: one is generated, stored hashed, and printed once.
    #[arg(long)]
    pub auth: bool,
    /// local: the accelerator device the service holds (one model per
    /// device; default: none, CPU-only services share the CPU).
    #[arg(long)]
    pub device: Option<String>,
    /// Take over a busy --device, or the name of an existing deployment: the
    /// deployment holding it is stopped and removed first.
    #[arg(long)]
    pub replace: bool,
    /// kubernetes: the image reference the cluster pulls (REGISTRY/REPO:TAG
    /// or @sha256:…; default: where --image was last pushed).
    #[arg(long)]
    pub image_ref: Option<String>,
    /// kubernetes: replicas (the HPA's minimum with --autoscale).
    #[arg(long, default_value_t = 1)]
    pub replicas: i32,
    /// kubernetes: MIN:MAX:CPU% (a HorizontalPodAutoscaler on CPU).
    #[arg(long)]
    pub autoscale: Option<String>,
    /// kubernetes: the namespace (default: `default`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// kubernetes: the kubeconfig context (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
    /// kubernetes: the kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// kubernetes: print the manifests instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// kubernetes --dry-run: yaml (a multi-document stream) or json.
    #[arg(long, short = 'o')]
    pub output: Option<String>,
    /// local: the inference engine of the server (auto, onnxruntime, tract).
    #[arg(long, default_value = "auto")]
    pub engine: String,
    /// JSON output (`{"service","scoring_uri","http_uri","state","key"?}`).
    #[arg(long)]
    pub json: bool,
}

/// `accel services list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// JSON output (what `show --json` prints, for each deployment).
    #[arg(long)]
    pub json: bool,
}

/// A subcommand on one deployment.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The deployment's name.
    pub name: String,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `accel services logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The deployment's name.
    pub name: String,
    /// Keep printing what is appended, until the deployment is deleted (or Ctrl-C).
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    /// The supervisor's own log instead of the server's.
    #[arg(long)]
    pub supervisor: bool,
}

/// `accel services wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The deployment's name.
    pub name: String,
    /// Give up after this many seconds (exit status 1, with the last state
    /// and the end of the server log).
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// JSON output (what `show --json` prints).
    #[arg(long)]
    pub json: bool,
}

/// `accel services supervise` (hidden).
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The local deployment to supervise.
    pub name: String,
}

/// Dispatches a services subcommand.
pub fn run(global: &GlobalArgs, command: ServicesCommand) -> anyhow::Result<()> {
    match command {
        ServicesCommand::Keys(k) => keys::run(global, k),
        ServicesCommand::Deploy(a) => match a.target {
            Target::Local => local::deploy(global, &a),
            Target::Kubernetes => kubernetes::deploy(global, &a),
        },
        ServicesCommand::List(a) => local::list(global, &a),
        ServicesCommand::Show(a) => {
            let record = global.registry()?.get_deployment(&a.name)?;
            if record.target == "kubernetes" {
                return kubernetes::show(&record, &a);
            }
            local::show(global, &local_record(global, &a.name)?, a.json)
        }
        ServicesCommand::Logs(a) => {
            let record = local_record(global, &a.name)?;
            local::logs(global, &record, &a)
        }
        ServicesCommand::Wait(a) => {
            let record = global.registry()?.get_deployment(&a.name)?;
            if record.target == "kubernetes" {
                return kubernetes::wait(global, &record, &a);
            }
            local::wait(global, &local_record(global, &a.name)?, &a)
        }
        ServicesCommand::Delete(a) => {
            let record = global.registry()?.get_deployment(&a.name)?;
            if record.target == "kubernetes" {
                return kubernetes::delete(global, &record, a.json);
            }
            local::delete(global, &local_record(global, &a.name)?, a.json)
        }
        ServicesCommand::Supervise(a) => local::supervise(global, &a.name),
    }
}

/// Stops what the deployments among `dependents` run and removes their
/// files, before a forced delete of the model or image they depend on
/// removes their records (which are left for it). What went is printed on
/// stderr, so that stdout stays the caller's (JSON included).
pub fn stop_dependents(
    global: &GlobalArgs,
    _registry: &Registry,
    dependents: &Dependents,
) -> anyhow::Result<()> {
    let home = global.home()?;
    for d in &dependents.deployments {
        match d.target.as_str() {
            "local" => {
                for line in local::stop_and_clean(&home, d)? {
                    eprintln!("{}: {line}", d.name);
                }
            }
            "kubernetes" => {
                for o in kubernetes::remove_objects(d)? {
                    eprintln!("{}: deleted {o}", d.name);
                }
            }
            other => eprintln!(
                "note: deployment {} runs on {other}: what it runs there is not removed",
                d.name
            ),
        }
    }
    Ok(())
}

/// The record of deployment `name`, which must be a local one (the other
/// targets are handled elsewhere).
fn local_record(global: &GlobalArgs, name: &str) -> anyhow::Result<DeploymentRecord> {
    let record = global.registry()?.get_deployment(name)?;
    if record.target != "local" {
        bail!(
            "deployment {name:?} runs on {}: not handled by this command yet",
            record.target
        );
    }
    Ok(record)
}

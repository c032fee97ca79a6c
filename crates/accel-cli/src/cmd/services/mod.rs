//! `accel services ...`: deploy images as services, follow and remove them,
//! and manage their API keys.
//!
//! Module map: `keys` (`services keys regenerate|list`), `local` (the
//! `local` target: a supervised `accel serve` on this machine, and the
//! hidden `services supervise` that does the supervising).

pub mod keys;
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
    Deploy(DeployArgs),
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
            Target::Kubernetes => bail!("--target kubernetes is not available yet"),
        },
        ServicesCommand::List(a) => local::list(global, &a),
        ServicesCommand::Show(a) => {
            let record = local_record(global, &a.name)?;
            local::show(global, &record, a.json)
        }
        ServicesCommand::Logs(a) => {
            let record = local_record(global, &a.name)?;
            local::logs(global, &record, &a)
        }
        ServicesCommand::Wait(a) => {
            let record = local_record(global, &a.name)?;
            local::wait(global, &record, &a)
        }
        ServicesCommand::Delete(a) => {
            let record = local_record(global, &a.name)?;
            local::delete(global, &record, a.json)
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

//! Supervised local ("edge") services: one `accel serve` per deployment,
//! started, watched and restarted by a detached supervisor process.
//!
//! The pieces, none of which knows about the registry or the CLI (the
//! caller turns [`Event`]s into record updates):
//!
//! - [`layout`]: where a deployment's files live under the Accel home
//!   (`deployments/NAME/{bundle/, server.log, supervisor.log}`).
//! - [`supervisor`]: [`Supervisor::run`] spawns any program, appends its
//!   output to a log, waits for its `ready …` line, restarts it with
//!   exponential backoff when it dies, and on SIGTERM/SIGINT (or a
//!   [`StopHandle`]) forwards SIGTERM, waits, kills after a timeout.
//! - [`process`]: liveness of a pid, signals, waiting for a process that is
//!   not our child to go away, command lines and children read from `/proc`,
//!   and port checks.

pub mod layout;
pub mod process;
pub mod supervisor;

#[cfg(test)]
mod tests;

pub use layout::DeploymentDir;
pub use supervisor::{
    Backoff, Event, Observer, ReadyAddrs, RunSummary, ServerSpec, StopHandle, Supervisor,
    SupervisorOptions,
};

//! `accel zoo` (being built; see issue 7).

use crate::context::GlobalArgs;
use clap::Subcommand;

/// `accel zoo`.
#[derive(Debug, Subcommand)]
pub enum ZooCommand {
    /// List the catalog.
    List,
}

/// Runs `accel zoo`.
pub fn run(_global: &GlobalArgs, _c: ZooCommand) -> anyhow::Result<()> {
    anyhow::bail!("accel zoo is not built yet")
}

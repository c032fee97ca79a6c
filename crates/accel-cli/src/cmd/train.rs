//! `accel train`: transfer learning (placeholder being built; see issue 7).

use crate::context::GlobalArgs;
use clap::Args;

/// `accel train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Name of the new model.
    pub name: String,
}

/// Runs `accel train`.
pub fn run(_global: &GlobalArgs, _a: TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("accel train is not built yet")
}

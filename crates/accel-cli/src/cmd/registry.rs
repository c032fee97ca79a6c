//! `accel registry check [--repair]`.

use crate::context::GlobalArgs;
use crate::output::print_json;
use anyhow::bail;
use clap::{Args, Subcommand};

/// Registry subcommands.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Report orphan, missing and corrupt blobs, stale temporary files, and
    /// operations and image builds whose process died.
    Check(CheckArgs),
}

/// `accel registry check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Remove orphan blobs and stale temporary files; store dead operations
    /// and image builds as failed.
    #[arg(long)]
    pub repair: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// Dispatches a registry subcommand.
pub fn run(global: &GlobalArgs, command: RegistryCommand) -> anyhow::Result<()> {
    let RegistryCommand::Check(a) = command;
    let report = global.registry()?.check(a.repair)?;
    if a.json {
        print_json(&report)?;
    } else {
        for r in &report.recovered {
            println!("recovered: {r}");
        }
        for (what, list) in [
            ("orphan blob", &report.orphan_blobs),
            ("missing blob", &report.missing_blobs),
            ("corrupt blob", &report.corrupt_blobs),
            ("stale temp file", &report.stale_temp_files),
            ("dead operation", &report.dead_operations),
            ("dead image build", &report.dead_image_builds),
        ] {
            for item in list {
                println!("{what}: {item}");
            }
        }
        if report.is_clean() {
            println!("registry is consistent");
        }
    }
    if !report.is_clean() {
        bail!("registry is not consistent (see above; --repair removes orphans and temp files)");
    }
    Ok(())
}

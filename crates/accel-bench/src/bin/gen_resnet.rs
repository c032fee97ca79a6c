//! Writes the benchmark ResNet-50 (fp32, random weights, batch norm folded)
//! that `e2e` and `bench/peers` use, so that a harness outside Rust can get
//! the very same file without running a benchmark.
//!
//!     cargo run -q -p accel-bench --bin gen_resnet -- [PATH] [--seed 50] [--force]
//!
//! Prints the path. Leaves an existing file alone unless `--force`; the
//! generator is deterministic for a seed, so the default seed (50, the one
//! `e2e` uses) always gives the same bytes.

use accel_bench::resnet;
use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

/// Write the random-weight ResNet-50 ONNX file.
#[derive(Debug, Parser)]
struct Args {
    /// Where to write it.
    #[arg(default_value = "target/models/resnet50-random.onnx")]
    path: PathBuf,
    /// Weight seed (50 is the one `e2e` uses).
    #[arg(long, default_value_t = 50)]
    seed: u64,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.force || !args.path.exists() {
        if let Some(dir) = args.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Write beside, then rename: a reader never sees a half-written model.
        let tmp = args.path.with_extension("onnx.tmp");
        std::fs::write(&tmp, resnet::resnet50(args.seed))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &args.path)?;
    }
    println!("{}", args.path.display());
    Ok(())
}

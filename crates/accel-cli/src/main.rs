//! `accel`: register models, run them, and (later) serve, convert, package
//! and deploy them. Every subcommand parses its flags once into a struct and
//! hands it whole to the function that does the work.

mod bundle;
mod cmd;
mod context;
mod fixtures;
mod output;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Deploy deep neural networks as low-latency services on the accelerators you own.
#[derive(Debug, Parser)]
#[command(name = "accel", version, about)]
struct Cli {
    #[command(flatten)]
    global: context::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register, list, show and delete models.
    #[command(subcommand)]
    Models(cmd::models::ModelsCommand),
    /// Check the registry's consistency, and repair what can be repaired.
    #[command(subcommand)]
    Registry(cmd::registry::RegistryCommand),
    /// List the inference engines found, or install ONNX Runtime.
    Engines(cmd::engines::EnginesArgs),
    /// Run a registered model on image files, in this process.
    Predict(cmd::predict::PredictArgs),
    /// Register the bundled pretrained model and classify the bundled photos.
    Quickstart(cmd::quickstart::QuickstartArgs),
    /// Serve models over gRPC (TensorFlow Serving, KServe v2) and HTTP.
    Serve(cmd::serve::ServeArgs),
    /// Convert a model into a plan for this machine: measured, quantized when
    /// the accuracy budget allows, registered with its report.
    Convert(cmd::convert::ConvertArgs),
    /// Build, list, push and export OCI images of models (no Docker daemon needed).
    #[command(subcommand)]
    Images(cmd::images::ImagesCommand),
    /// Follow operations started with --no-wait.
    #[command(subcommand)]
    Operations(cmd::operations::OperationsCommand),
    /// Measure a running service: latency percentiles and throughput.
    Bench(cmd::bench::BenchArgs),
    /// Score image files against a running service over gRPC.
    Score(cmd::score::ScoreArgs),
    /// Manage services (API keys).
    #[command(subcommand)]
    Services(cmd::services::ServicesCommand),
    /// The model zoo: list the catalog, download (checked) and register models.
    #[command(subcommand)]
    Zoo(cmd::zoo::ZooCommand),
    /// Train a new classifier head on a featurizer's features (transfer learning).
    Train(cmd::train::TrainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::init_tracing(cli.global.verbose);
    let result = match cli.command {
        Command::Models(c) => cmd::models::run(&cli.global, c),
        Command::Registry(c) => cmd::registry::run(&cli.global, c),
        Command::Engines(a) => cmd::engines::run(&cli.global, a),
        Command::Predict(a) => cmd::predict::run(&cli.global, a),
        Command::Quickstart(a) => cmd::quickstart::run(&cli.global, a),
        Command::Serve(a) => cmd::serve::run(&cli.global, a),
        Command::Score(a) => cmd::score::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Convert(a) => cmd::convert::run(&cli.global, a),
        Command::Operations(c) => cmd::operations::run(&cli.global, c),
        Command::Images(c) => cmd::images::run(&cli.global, c),
        Command::Services(c) => cmd::services::run(&cli.global, c),
        Command::Zoo(c) => cmd::zoo::run(&cli.global, c),
        Command::Train(a) => cmd::train::run(&cli.global, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, outermost first.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            // Some causes (TOML, JSON parsers) span lines: fold them into one.
            let msg = msg
                .join(": ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

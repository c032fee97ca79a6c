//! `accel convert MODEL[:V]`: measure candidate plans (engine × precision ×
//! threads) on this machine, keep the fastest within the accuracy budget and
//! register it as a new model (format `accel-plan`, parent link, report).
//!
//! Nothing is written to the registry until the conversion succeeded.

use crate::context::GlobalArgs;
use crate::fixtures;
use crate::output::print_json;
use accel_convert::calibrate::Method;
use accel_convert::evaluate::TimingBudget;
use accel_convert::inputs::{preprocess_all, read_folder};
use accel_convert::quantize::{ActType, ClipRanges};
use accel_convert::{ConvertRequest, Engines, Precision, Progress, Report};
use accel_core::name::NameRef;
use accel_core::spec::Layout;
use accel_registry::{ModelRecord, NewModel};
use accel_runtime::engine::onnxruntime::OrtBackend;
use accel_runtime::engine::Backend;
use anyhow::{bail, Context};
use clap::Args;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// `accel convert`.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct ConvertArgs {
    /// The float model: NAME or NAME:VERSION.
    pub model: String,
    /// Name of the plan to register (default: MODEL's name + "-plan").
    #[arg(long)]
    pub name: Option<String>,
    /// Where the plan will run: cpu (GPU and NPU targets are not wired yet).
    #[arg(long, default_value = "cpu")]
    pub target: String,
    /// auto (fastest within the budget), fp32, or int8.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Folder of images (JPEG/PNG) to calibrate int8 activation ranges on.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Folder of images to measure accuracy on (default: the calibration
    /// images, or the bundled photos for fp32).
    #[arg(long)]
    pub validation: Option<PathBuf>,
    /// Also use crops and mirror images of each photo (12 views each).
    #[arg(long)]
    pub augment: bool,
    /// Largest allowed drop in top-1 agreement with the float model, percent.
    #[arg(long, default_value_t = 1.0)]
    pub accuracy_budget: f64,
    /// minmax, percentile (99.999) or percentile-P.
    #[arg(long, default_value = "minmax")]
    pub calibration_method: String,
    /// Range of a removed Clip's output: clip-bounds (ReLU6 → [0, 6]) or calibrated.
    #[arg(long, default_value = "clip-bounds")]
    pub clip_ranges: String,
    /// Activation types of the int8 candidates (each measured): uint8 (U8S8), int8 (S8S8).
    #[arg(long, value_delimiter = ',', default_value = "uint8,int8")]
    pub activations: Vec<String>,
    /// The model input (checked; pipelines have exactly one).
    #[arg(long)]
    pub input: Option<String>,
    /// The output accuracy is measured on (default: the pipeline's first).
    #[arg(long)]
    pub output: Option<String>,
    /// Engines to measure: auto (ONNX Runtime when found, and tract), onnxruntime or tract.
    #[arg(long, default_value = "auto")]
    pub engine: String,
    /// Intra-op thread counts to measure (default: 1 and every core).
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Minimum time each candidate is timed for, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub min_time_ms: u64,
    /// Free-text description of the plan.
    #[arg(long)]
    pub description: Option<String>,
    /// Start the conversion and print its operation id (see `accel operations`).
    #[arg(long)]
    #[serde(skip)]
    pub no_wait: bool,
    /// Print {"model": NAME:VERSION, "report": {...}}.
    #[arg(long)]
    pub json: bool,
}

/// What a finished conversion printed and registered.
#[derive(Debug, serde::Serialize)]
pub struct ConvertOutcome {
    /// The registered plan, NAME:VERSION.
    pub model: String,
    /// The report.
    pub report: Report,
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub(crate) struct Bar(indicatif::ProgressBar);

impl Bar {
    pub(crate) fn new() -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {msg} {pos}/{len}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Bar(bar)
    }
}

impl Progress for Bar {
    fn stage(&self, name: &str) {
        tracing::info!(stage = name, "convert");
        self.0.set_message(name.to_string());
        self.0.set_position(0);
        self.0.set_length(0);
    }
    fn step(&self, done: usize, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(done as u64);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Runs `accel convert`.
pub fn run(global: &GlobalArgs, a: ConvertArgs) -> anyhow::Result<()> {
    if a.no_wait {
        return super::operations::start_convert(global, &a);
    }
    let bar = Bar::new();
    let outcome = convert_and_register(global, &a, &bar)?;
    drop(bar);
    print_outcome(&a, &outcome)
}

/// Prints what `accel convert` prints.
pub fn print_outcome(a: &ConvertArgs, outcome: &ConvertOutcome) -> anyhow::Result<()> {
    if a.json {
        return print_json(outcome);
    }
    eprint!("{}", outcome.report.render());
    let _ = std::io::stderr().flush();
    println!("{}", outcome.model);
    Ok(())
}

fn images(dir: &std::path::Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    Ok(read_folder(dir)?)
}

/// Converts and registers; used by `accel convert` and by the background
/// operation of `accel convert --no-wait`.
pub fn convert_and_register(
    global: &GlobalArgs,
    a: &ConvertArgs,
    progress: &dyn Progress,
) -> anyhow::Result<ConvertOutcome> {
    let precision: Precision = a.precision.parse()?;
    let method: Method = a.calibration_method.parse()?;
    accel_convert::convert::check_target(&a.target)?;
    let registry = global.registry()?;
    let record = super::load::onnx_model(&registry, &a.model, "convert")?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-plan", record.name));
    accel_core::name::validate_name(&name)?;
    let pre = record.spec.preprocess.as_ref().with_context(|| {
        format!(
            "{} takes raw tensors: calibration and validation need an image pipeline (register it with --preset or --spec)",
            record.reference()
        )
    })?;
    if let Some(input) = &a.input {
        if input != &record.spec.input_name {
            bail!(
                "{} has input {:?}, not {input:?}",
                record.reference(),
                record.spec.input_name
            );
        }
    }
    let output = match &a.output {
        Some(o) => o.clone(),
        None => record
            .spec
            .outputs
            .first()
            .map(|o| o.name.clone())
            .context("the pipeline has no output")?,
    };
    // Inputs, preprocessed by the model's own pipeline.
    let nchw = pre.layout == Layout::Nchw;
    let calibration_images = a.calibration.as_deref().map(images).transpose()?;
    let (validation_images, validation_source) = match (&a.validation, &calibration_images) {
        (Some(dir), _) => (images(dir)?, format!("--validation {}", dir.display())),
        (None, Some(c)) => (c.clone(), "the calibration images".to_string()),
        (None, None) => (
            fixtures::PHOTOS
                .iter()
                .map(|(n, b)| (n.to_string(), b.to_vec()))
                .collect(),
            "the bundled photos".to_string(),
        ),
    };
    if precision == Precision::Int8 && calibration_images.is_none() {
        bail!("--precision int8 needs --calibration DIR");
    }
    let calibration = match &calibration_images {
        Some(c) => preprocess_all(c, pre, nchw, a.augment)?,
        None => Vec::new(),
    };
    let validation = preprocess_all(&validation_images, pre, nchw, a.augment)?;
    let validation_source = if a.augment {
        format!("{validation_source}, augmented")
    } else {
        validation_source
    };

    // Engines.
    let search = global.search_paths()?;
    let ort = match a.engine.as_str() {
        "auto" => match OrtBackend::init(&search) {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("note: ONNX Runtime not available ({e}): tract plans only");
                None
            }
        },
        "onnxruntime" | "ort" => Some(OrtBackend::init(&search)?),
        "tract" => None,
        other => bail!("unknown engine {other:?} (expected auto, onnxruntime or tract)"),
    };
    let tract = a.engine != "onnxruntime" && a.engine != "ort";
    let mut threads = a.threads.clone();
    if threads.is_empty() {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        threads = vec![1, cores];
    }
    threads.sort_unstable();
    threads.dedup();

    let model = registry.read_blob_verified(&record.sha256)?;
    let io = accel_runtime::onnx_info::read_model_io(&model)?;
    if !io.outputs.iter().any(|o| o.name == output) {
        let names: Vec<&str> = io.outputs.iter().map(|o| o.name.as_str()).collect();
        bail!(
            "{} has no output {output:?} (outputs: {})",
            record.reference(),
            names.join(", ")
        );
    }
    let request = ConvertRequest {
        model: &model,
        calibration: &calibration,
        validation: &validation,
        validation_source,
        output,
        precision,
        budget_pct: a.accuracy_budget,
        method,
        clip_ranges: match a.clip_ranges.as_str() {
            "clip-bounds" => ClipRanges::Bounds,
            "calibrated" => ClipRanges::Calibrated,
            other => bail!("unknown --clip-ranges {other:?} (expected clip-bounds or calibrated)"),
        },
        activation_types: a
            .activations
            .iter()
            .map(|t| match t.as_str() {
                "uint8" | "u8" => Ok(ActType::Uint8),
                "int8" | "s8" => Ok(ActType::Int8),
                other => bail!("unknown --activations {other:?} (expected uint8 or int8)"),
            })
            .collect::<anyhow::Result<_>>()?,
        engines: Engines {
            ort: ort.as_ref(),
            tract,
        },
        threads,
        timing: TimingBudget {
            min_time: Duration::from_millis(a.min_time_ms),
            ..TimingBudget::default()
        },
        target: a.target.clone(),
    };
    let converted = accel_convert::convert(&request, progress)?;
    let report = converted.report;
    drop(model);

    progress.stage("registering");
    let mut file = tempfile::NamedTempFile::new().context("creating a temporary plan file")?;
    file.write_all(&converted.plan)
        .and_then(|_| file.flush())
        .context("writing the plan")?;
    let plan_record = registry.register_model(NewModel {
        name,
        model_file: file.path().to_path_buf(),
        description: a.description.clone().unwrap_or_else(|| {
            format!(
                "{} plan of {} ({} {}, {} threads)",
                report.target,
                record.reference(),
                report.chosen.engine,
                report.chosen.precision,
                report.chosen.threads
            )
        }),
        tags: BTreeMap::new(),
        properties: plan_properties(&report, &record),
        format: "accel-plan".into(),
        parent: Some(NameRef {
            name: record.name.clone(),
            version: Some(record.version),
        }),
        spec: record.spec.clone(),
        labels: None,
        report: Some(serde_json::to_value(&report)?),
    })?;
    Ok(ConvertOutcome {
        model: plan_record.reference(),
        report,
    })
}

/// The plan facts `accel serve` needs to load it, as properties.
fn plan_properties(report: &Report, parent: &ModelRecord) -> BTreeMap<String, String> {
    let c = &report.chosen;
    let mut p = BTreeMap::new();
    p.insert(PLAN_ENGINE.to_string(), c.engine.clone());
    p.insert("accel.plan.precision".to_string(), c.precision.clone());
    p.insert(PLAN_THREADS.to_string(), c.threads.to_string());
    if let Some(v) = report.engine_versions.get(&c.engine) {
        p.insert(PLAN_ENGINE_VERSION.to_string(), v.clone());
    }
    p.insert(PLAN_CPU.to_string(), report.cpu.clone());
    p.insert(
        "accel.plan.parent_sha256".to_string(),
        parent.sha256.clone(),
    );
    p
}

/// Property: the engine a plan was made for.
pub const PLAN_ENGINE: &str = "accel.plan.engine";
/// Property: that engine's version.
pub const PLAN_ENGINE_VERSION: &str = "accel.plan.engine_version";
/// Property: the CPU features the plan was optimized for.
pub const PLAN_CPU: &str = "accel.plan.cpu";
/// Property: the thread count the plan was fastest with.
pub const PLAN_THREADS: &str = "accel.plan.threads";

/// Checks that `backend` can load the plan `record` as it is.
pub fn check_plan_fits(record: &ModelRecord, backend: &dyn Backend) -> anyhow::Result<()> {
    let prop = |k: &str| record.properties.get(k).map(String::as_str).unwrap_or("?");
    if backend.kind().as_str() == "onnxruntime" {
        let (version, cpu) = (backend.version(), accel_runtime::engine::cpu_tag());
        if prop(PLAN_ENGINE_VERSION) != version || prop(PLAN_CPU) != cpu {
            bail!(
                "plan {} was optimized for onnxruntime {} on a {} CPU; this machine has onnxruntime {version} on a {cpu} CPU: run `accel convert {}` again here",
                record.reference(),
                prop(PLAN_ENGINE_VERSION),
                prop(PLAN_CPU),
                record.parent.as_deref().unwrap_or("PARENT")
            );
        }
    }
    Ok(())
}

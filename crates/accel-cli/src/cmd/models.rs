//! `accel models register|list|show|delete`.

use crate::context::GlobalArgs;
use crate::output::print_json;
use accel_core::name::NameRef;
use accel_core::spec::{ChannelOrder, InputKind, PipelineSpec, Preset};
use accel_registry::{ModelFilter, ModelRecord, NewModel};
use accel_runtime::onnx_info::read_model_io;
use accel_runtime::pipeline::resolve_spec;
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Model subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Register an ONNX model as a new version of NAME; prints NAME:VERSION.
    Register(RegisterArgs),
    /// List registered models.
    List(ListArgs),
    /// Show one model version (latest unless NAME:VERSION).
    Show(ShowArgs),
    /// Delete NAME:VERSION, or every version of NAME.
    Delete(DeleteArgs),
    /// Write NAME[:VERSION] as a model bundle directory that `accel serve
    /// --bundle DIR` loads without a registry; prints the files written.
    #[command(hide = true)]
    Bundle(BundleArgs),
}

/// `accel models bundle`.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// NAME or NAME:VERSION.
    pub model: String,
    /// The bundle directory (created if needed).
    pub dir: PathBuf,
}

/// Preprocessing presets.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PresetArg {
    /// ÷255, ImageNet mean/std, NCHW, softmax on logits.
    Torchvision,
    /// The Azure ML accelerated models' preprocess_array: 0..255 minus means, NHWC.
    AzuremlAccel,
    /// The seed's SSD-VGG 300 detector: 300×300, VGG means, NHWC, SSD boxes.
    #[value(name = "ssd-vgg-300")]
    SsdVgg300,
}

impl From<PresetArg> for Preset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Torchvision => Preset::Torchvision,
            PresetArg::AzuremlAccel => Preset::AzuremlAccel,
            PresetArg::SsdVgg300 => Preset::SsdVgg300,
        }
    }
}

/// Channel orders.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ChannelArg {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red.
    Bgr,
}

/// `accel models register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Model name (letters, digits, '-', '_', '.').
    pub name: String,
    /// The ONNX file.
    pub path: PathBuf,
    /// Image preprocessing preset; without it (or --spec) the model takes raw tensors.
    #[arg(long, conflicts_with = "spec")]
    pub preset: Option<PresetArg>,
    /// A pipeline spec file (TOML or JSON).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Channel order, overriding the preset's.
    #[arg(long)]
    pub channel_order: Option<ChannelArg>,
    /// Multiplier applied to 0..255 pixel values, overriding the preset's.
    #[arg(long)]
    pub scale: Option<f32>,
    /// Extra names clients may use for the output (e.g. a TensorFlow tensor name).
    #[arg(long = "output-alias")]
    pub output_aliases: Vec<String>,
    /// Extra names clients may use for the input (e.g. `Placeholder:0`).
    #[arg(long = "input-alias")]
    pub input_aliases: Vec<String>,
    /// Class labels: a JSON list of strings, or a text file with one per line.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Free-text description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// A tag `key=value` (repeatable).
    #[arg(long = "tag", value_parser = parse_kv)]
    pub tags: Vec<(String, String)>,
    /// A property `key=value` (repeatable).
    #[arg(long = "property", value_parser = parse_kv)]
    pub properties: Vec<(String, String)>,
    /// Print the new record as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `accel models list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Filter by tag: `key=value`, or `key` for "has the tag" (repeatable; all must match).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only the latest version of each name.
    #[arg(long)]
    pub latest: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `accel models show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// NAME or NAME:VERSION.
    pub model: String,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `accel models delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// NAME:VERSION, or NAME for every version.
    pub model: String,
    /// Also delete models that refer to it (e.g. converted children).
    #[arg(long)]
    pub force: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// Parses a `key=value` flag (tags, properties).
pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// Dispatches a models subcommand.
pub fn run(global: &GlobalArgs, command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::Register(a) => register(global, a),
        ModelsCommand::List(a) => list(global, a),
        ModelsCommand::Show(a) => show(global, a),
        ModelsCommand::Delete(a) => delete(global, a),
        ModelsCommand::Bundle(a) => bundle(global, a),
    }
}

/// Reads a labels file: a JSON array of strings, or one label per line
/// (a leading WordNet id such as `n01440764 ` is dropped, and only the first
/// comma-separated synonym is kept).
pub fn read_labels(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read labels file {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON list of strings", path.display()));
    }
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let l = l.trim();
            let l = match l.split_once(' ') {
                Some((id, rest))
                    if id.len() == 9
                        && id.starts_with('n')
                        && id[1..].bytes().all(|b| b.is_ascii_digit()) =>
                {
                    rest
                }
                _ => l,
            };
            l.split(',').next().unwrap_or(l).trim().to_string()
        })
        .collect())
}

/// Builds the pipeline spec a registration asks for, before resolving it
/// against the model.
fn requested_spec(a: &RegisterArgs) -> anyhow::Result<PipelineSpec> {
    let mut spec = if let Some(path) = &a.spec {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read spec file {}", path.display()))?;
        PipelineSpec::parse(&text).with_context(|| format!("in {}", path.display()))?
    } else if let Some(p) = a.preset {
        Preset::from(p).spec()
    } else {
        PipelineSpec {
            input_kind: InputKind::Tensor,
            input_name: String::new(),
            input_aliases: vec![],
            preprocess: None,
            outputs: vec![],
            top_k: 5,
            labels: None,
            detection: None,
        }
    };
    if let Some(pre) = spec.preprocess.as_mut() {
        if let Some(order) = a.channel_order {
            pre.set_channel_order(match order {
                ChannelArg::Rgb => ChannelOrder::Rgb,
                ChannelArg::Bgr => ChannelOrder::Bgr,
            });
        }
        if let Some(scale) = a.scale {
            pre.scale = scale;
        }
    } else if a.channel_order.is_some() || a.scale.is_some() {
        bail!("--channel-order and --scale need image preprocessing (--preset or --spec)");
    }
    spec.input_aliases.extend(a.input_aliases.iter().cloned());
    if !a.output_aliases.is_empty() {
        match spec.outputs.as_mut_slice() {
            [only] => only.aliases.extend(a.output_aliases.iter().cloned()),
            [] => {
                spec.outputs.push(accel_core::spec::OutputSpec {
                    name: String::new(),
                    aliases: a.output_aliases.clone(),
                    softmax: false,
                });
            }
            _ => bail!("--output-alias needs a pipeline with exactly one output"),
        }
    }
    Ok(spec)
}

fn register(global: &GlobalArgs, a: RegisterArgs) -> anyhow::Result<()> {
    let json = a.json;
    let record = register_record(global, a)?;
    if json {
        print_json(&record)
    } else {
        println!("{}", record.reference());
        Ok(())
    }
}

/// Registers what `accel models register` was given (without printing);
/// `accel zoo pull --register` comes through here too.
pub(crate) fn register_record(global: &GlobalArgs, a: RegisterArgs) -> anyhow::Result<ModelRecord> {
    accel_core::name::validate_name(&a.name)?;
    // Everything is checked before the registry is touched.
    let bytes =
        std::fs::read(&a.path).with_context(|| format!("cannot read {}", a.path.display()))?;
    let io = read_model_io(&bytes).with_context(|| format!("{}", a.path.display()))?;
    drop(bytes);
    let spec = resolve_spec(requested_spec(&a)?, &io)?;
    let labels = a.labels.as_deref().map(read_labels).transpose()?;
    let registry = global.registry()?;
    Ok(registry.register_model(NewModel {
        name: a.name,
        model_file: a.path,
        description: a.description,
        tags: a.tags.into_iter().collect::<BTreeMap<_, _>>(),
        properties: a.properties.into_iter().collect::<BTreeMap<_, _>>(),
        format: "onnx".into(),
        parent: None,
        spec,
        labels,
        report: None,
    })?)
}

fn list(global: &GlobalArgs, a: ListArgs) -> anyhow::Result<()> {
    let tags = a
        .tags
        .iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (t.clone(), None),
        })
        .collect();
    let records = global.registry()?.list_models(&ModelFilter {
        name: a.name,
        tags,
        latest_only: a.latest,
    })?;
    if a.json {
        return print_json(&records);
    }
    println!(
        "{:<32} {:>7} {:<10} {:>12} {:<20} TAGS",
        "NAME", "VERSION", "FORMAT", "SIZE", "CREATED"
    );
    for r in &records {
        let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<32} {:>7} {:<10} {:>12} {:<20} {}",
            r.name,
            r.version,
            r.format,
            r.size,
            r.created,
            tags.join(",")
        );
    }
    Ok(())
}

fn show(global: &GlobalArgs, a: ShowArgs) -> anyhow::Result<()> {
    let r: NameRef = a.model.parse()?;
    let record = global.registry()?.get_model(&r)?;
    if a.json {
        return print_json(&record);
    }
    print_record(&record);
    Ok(())
}

fn print_record(r: &ModelRecord) {
    println!("model:       {}", r.reference());
    println!("format:      {}", r.format);
    println!("description: {}", r.description);
    println!("sha256:      {}", r.sha256);
    println!("size:        {} bytes", r.size);
    println!("created:     {}", r.created);
    if let Some(p) = &r.parent {
        println!("parent:      {p}");
    }
    for (k, v) in &r.tags {
        println!("tag:         {k}={v}");
    }
    for (k, v) in &r.properties {
        println!("property:    {k}={v}");
    }
    println!("pipeline:");
    for line in r.spec.to_toml().lines() {
        println!("  {line}");
    }
    if let Some(report) = &r.report {
        println!("report:");
        match serde_json::from_value::<accel_convert::Report>(report.clone()) {
            Ok(report) => {
                for line in report.render().lines() {
                    println!("  {line}");
                }
            }
            // A report from another version of accel: shown as stored.
            Err(_) => println!("  {report}"),
        }
    }
}

fn delete(global: &GlobalArgs, a: DeleteArgs) -> anyhow::Result<()> {
    let r: NameRef = a.model.parse()?;
    let registry = global.registry()?;
    if a.force {
        // Stop what the deployments a forced delete takes run, first.
        super::services::stop_dependents(global, &registry, &registry.dependents_of_model(&r)?)?;
    }
    let deleted = registry.delete_model(&r, a.force)?;
    // Deployment records and images a forced delete took, then the models
    // (bare `name:version`, as before).
    let refs: Vec<String> = deleted
        .deployments
        .iter()
        .map(|d| format!("deployment {}", d.name))
        .chain(
            deleted
                .images
                .iter()
                .map(|i| format!("image {}", i.reference())),
        )
        .chain(deleted.models.iter().map(|m| m.reference()))
        .collect();
    if a.json {
        return print_json(&refs);
    }
    for d in &refs {
        println!("deleted {d}");
    }
    Ok(())
}

/// Writes a model bundle, then reads it back as `accel serve` will.
fn bundle(global: &GlobalArgs, a: BundleArgs) -> anyhow::Result<()> {
    let r: NameRef = a.model.parse()?;
    let registry = global.registry()?;
    let record = registry.get_model(&r)?;
    let files = crate::bundle::write_bundle(&registry, &record, &a.dir)?;
    crate::bundle::read_bundle(&a.dir)?;
    for f in &files {
        println!("{}", f.display());
    }
    Ok(())
}

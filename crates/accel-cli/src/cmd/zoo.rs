//! `accel zoo list|pull`: the catalog of public pretrained models
//! (`accel-zoo`), downloaded into `$ACCEL_HOME/zoo/` (resumable, checked
//! against the published sha256 and size) and optionally registered through
//! the same code as `accel models register` (and converted to int8 through
//! `accel convert`'s).

use super::convert::{convert_and_register, print_outcome, Bar, ConvertArgs};
use super::models::{register_record, PresetArg, RegisterArgs};
use crate::context::GlobalArgs;
use crate::output::{current_thread_runtime, print_json};
use accel_core::spec::Preset;
use accel_zoo::{fetch, mirror_url, Catalog, FetchRequest, Fetched, Format, Labels, ZooEntry};
use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `accel zoo`.
#[derive(Debug, Subcommand)]
pub enum ZooCommand {
    /// List the catalog (--json: every field of every entry).
    List(ListArgs),
    /// Download NAME into $ACCEL_HOME/zoo (resumed, retried, checked against
    /// the published sha256); prints the file, or with --register NAME:VERSION.
    Pull(PullArgs),
}

/// `accel zoo list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// A catalog file (TOML) instead of the built-in one.
    #[arg(long, env = "ACCEL_ZOO_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `accel zoo pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The zoo name (see `accel zoo list`).
    pub model: String,
    /// Register the file as a model (preset, labels and the seed's output
    /// names from the catalog); prints NAME:VERSION.
    #[arg(long)]
    pub register: bool,
    /// After registering, convert to an int8 plan calibrated on the bundled
    /// photos (`accel convert --precision int8`); prints the plan's NAME:VERSION.
    #[arg(long, requires = "register")]
    pub quantized: bool,
    /// The registry name (default: the zoo name).
    #[arg(long = "name", value_name = "NAME", requires = "register")]
    pub register_as: Option<String>,
    /// Fetch `{MIRROR}/{file name}` instead of the published URL (a server
    /// of your own; the published sha256 is still checked).
    #[arg(long, env = "ACCEL_ZOO_MIRROR")]
    pub mirror: Option<String>,
    /// A catalog file (TOML) instead of the built-in one.
    #[arg(long, env = "ACCEL_ZOO_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Further attempts after a connection is lost (each resumes).
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// Runs `accel zoo`.
pub fn run(global: &GlobalArgs, c: ZooCommand) -> anyhow::Result<()> {
    match c {
        ZooCommand::List(a) => list(&a),
        ZooCommand::Pull(a) => pull(global, &a),
    }
}

fn catalog(path: Option<&Path>) -> anyhow::Result<Catalog> {
    Ok(match path {
        Some(p) => Catalog::load(p)?,
        None => Catalog::bundled(),
    })
}

fn list(a: &ListArgs) -> anyhow::Result<()> {
    let catalog = catalog(a.catalog.as_deref())?;
    if a.json {
        return print_json(&catalog.models);
    }
    println!(
        "{:<18} {:<14} {:<7} {:>9} {:<13} {:<13} SHA256",
        "NAME", "TASK", "FORMAT", "SIZE", "LICENSE", "PRESET"
    );
    for m in &catalog.models {
        let size = m.size.map_or("-".to_string(), megabytes);
        let sha = match (&m.sha256, &m.sha256_prefix) {
            (Some(full), _) => format!("{}…", &full[..12]),
            (None, Some(prefix)) => format!("{prefix}… (prefix only)"),
            (None, None) => "-".into(),
        };
        println!(
            "{:<18} {:<14} {:<7} {:>9} {:<13} {:<13} {sha}",
            m.name,
            m.task.as_str(),
            m.format.as_str(),
            size,
            m.license,
            m.preset.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// What `pull --json` prints.
#[derive(serde::Serialize)]
struct PullOutcome<'a> {
    name: &'a str,
    url: &'a str,
    path: &'a Path,
    sha256: &'a str,
    size: u64,
    cached: bool,
    model: Option<String>,
    plan: Option<&'a super::convert::ConvertOutcome>,
}

fn pull(global: &GlobalArgs, a: &PullArgs) -> anyhow::Result<()> {
    let catalog = catalog(a.catalog.as_deref())?;
    let entry = catalog.get(&a.model)?;
    // Everything registration needs is checked before anything is downloaded.
    let registration = a
        .register
        .then(|| Registration::check(entry, a))
        .transpose()?;

    let mut request = FetchRequest::for_entry(entry, global.home()?.join("zoo"));
    if let Some(m) = &a.mirror {
        request.url = mirror_url(&entry.url, m)?;
    }
    request.retries = a.retries;
    let reporter = Reporter::new(&entry.name);
    let report = |p| reporter.update(p);
    request.progress = Some(&report);
    let fetched = current_thread_runtime()?.block_on(fetch(&request))?;
    reporter.finish(&fetched);

    let Some(registration) = registration else {
        if a.json {
            return print_json(&PullOutcome {
                name: &entry.name,
                url: &request.url,
                path: &fetched.path,
                sha256: &fetched.sha256,
                size: fetched.size,
                cached: fetched.cached,
                model: None,
                plan: None,
            });
        }
        println!("{}", fetched.path.display());
        return Ok(());
    };
    let record = registration.register(global, entry, &fetched)?;
    let reference = record.reference();
    if !a.json {
        println!("{reference}");
        let _ = std::io::stdout().flush();
    }
    let plan = if a.quantized {
        let (args, _photos) = int8_convert_args(&reference)?;
        let bar = Bar::new();
        let outcome = convert_and_register(global, &args, &bar)?;
        drop(bar);
        if !a.json {
            print_outcome(&args, &outcome)?;
        }
        Some((args, outcome))
    } else {
        None
    };
    if a.json {
        print_json(&PullOutcome {
            name: &entry.name,
            url: &request.url,
            path: &fetched.path,
            sha256: &fetched.sha256,
            size: fetched.size,
            cached: fetched.cached,
            model: Some(reference),
            plan: plan.as_ref().map(|(_, o)| o),
        })?;
    }
    Ok(())
}

/// A registration, checked before the download.
struct Registration {
    name: String,
    preset: Option<PresetArg>,
}

impl Registration {
    fn check(entry: &ZooEntry, a: &PullArgs) -> anyhow::Result<Registration> {
        if entry.format != Format::Onnx {
            bail!(
                "zoo model {} is a {} checkpoint ({}), not an ONNX model: export it to ONNX first (for a detector, with its per-layer raw heads as outputs), then register the .onnx with `accel models register`; `accel zoo pull {}` without --register downloads and checks the checkpoint",
                entry.name,
                match entry.format {
                    Format::Pytorch => "PyTorch",
                    Format::Onnx => "ONNX",
                },
                entry.file_name(),
                entry.name
            );
        }
        let preset = entry
            .preset
            .as_deref()
            .map(|p| preset_arg(&entry.name, p))
            .transpose()?;
        let name = a.register_as.clone().unwrap_or_else(|| entry.name.clone());
        accel_core::name::validate_name(&name)?;
        Ok(Registration { name, preset })
    }

    /// Registers the fetched file as `accel models register` would, given
    /// the catalog's preset, labels, output aliases and provenance.
    fn register(
        self,
        global: &GlobalArgs,
        entry: &ZooEntry,
        fetched: &Fetched,
    ) -> anyhow::Result<accel_registry::ModelRecord> {
        let mut argv: Vec<String> = vec![
            self.name,
            fetched.path.display().to_string(),
            format!("--description={}", entry.title),
            "--tag=source=zoo".into(),
            format!("--property=accel.zoo.name={}", entry.name),
            format!("--property=accel.zoo.sha256={}", fetched.sha256),
            format!("--property=accel.zoo.url={}", entry.url),
            format!("--property=accel.zoo.license={}", entry.license),
        ];
        if let Some(f) = &entry.features {
            argv.push(format!("--property=accel.zoo.features={f}"));
        }
        if !entry.feature_aliases.is_empty() {
            argv.push(format!(
                "--property=accel.zoo.feature_aliases={}",
                entry.feature_aliases.join(",")
            ));
        }
        if let Some(p) = self.preset {
            let value = p
                .to_possible_value()
                .context("a preset without a command-line name")?;
            argv.push(format!("--preset={}", value.get_name()));
        }
        for alias in output_aliases(entry, &fetched.path)? {
            argv.push(format!("--output-alias={alias}"));
        }
        let _labels_file;
        match entry.labels {
            Some(Labels::Imagenet) => {
                let mut f = tempfile::Builder::new().suffix(".json").tempfile()?;
                f.write_all(crate::fixtures::LABELS_JSON.as_bytes())?;
                f.flush()?;
                argv.push(format!("--labels={}", f.path().display()));
                _labels_file = f;
            }
            Some(other) => eprintln!(
                "note: accel ships no {} labels yet: {} is registered without labels (give them with `accel models register --labels`)",
                other.as_str(),
                entry.name
            ),
            None => {}
        }
        let args = RegisterCli::try_parse_from(&argv)
            .map_err(|e| anyhow!("{}", first_line(&e.to_string())))?
            .args;
        register_record(global, args)
    }
}

/// `accel models register`'s arguments, parsed from a command line built
/// here, so that registration keeps the command's own defaults.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct RegisterCli {
    #[command(flatten)]
    args: RegisterArgs,
}

/// `accel convert`'s arguments, likewise.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct ConvertCli {
    #[command(flatten)]
    args: ConvertArgs,
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// The `accel models register --preset` value that stands for the catalog's
/// preset (parsed by accel-core, which names the presets it knows).
fn preset_arg(model: &str, name: &str) -> anyhow::Result<PresetArg> {
    let preset: Preset = name
        .parse()
        .with_context(|| format!("zoo model {model} cannot be registered"))?;
    PresetArg::value_variants()
        .iter()
        .copied()
        .find(|v| Preset::from(*v) == preset)
        .ok_or_else(|| {
            anyhow!("zoo model {model} cannot be registered: preset {name:?} has no `accel models register --preset` value yet")
        })
}

/// The catalog's aliases, when they name the model's real output: the
/// model has exactly one output and it is the catalog's `output`.
fn output_aliases(entry: &ZooEntry, path: &Path) -> anyhow::Result<Vec<String>> {
    if entry.aliases.is_empty() {
        return Ok(vec![]);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let io = accel_runtime::onnx_info::read_model_io(&bytes)
        .with_context(|| format!("{}", path.display()))?;
    match (io.outputs.as_slice(), entry.output.as_slice()) {
        ([real], [listed]) if real.name == *listed => Ok(entry.aliases.clone()),
        _ => {
            let real: Vec<&str> = io.outputs.iter().map(|o| o.name.as_str()).collect();
            eprintln!(
                "note: the catalog's aliases for {} name output {:?}, but the model's outputs are {:?}: registered without them",
                entry.name, entry.output, real
            );
            Ok(vec![])
        }
    }
}

/// `accel convert MODEL --precision int8 --calibration DIR` on the bundled
/// photos, written to a temporary folder (returned: it must outlive the run).
fn int8_convert_args(model: &str) -> anyhow::Result<(ConvertArgs, tempfile::TempDir)> {
    let photos = tempfile::tempdir().context("creating a folder for the calibration photos")?;
    for (name, bytes) in crate::fixtures::PHOTOS {
        std::fs::write(photos.path().join(name), bytes)
            .with_context(|| format!("writing {name}"))?;
    }
    let argv = [
        model.to_string(),
        "--precision=int8".to_string(),
        format!("--calibration={}", photos.path().display()),
    ];
    let args = ConvertCli::try_parse_from(argv)
        .map_err(|e| anyhow!("{}", first_line(&e.to_string())))?
        .args;
    Ok((args, photos))
}

/// Download progress on stderr: a bar on a terminal, otherwise a line at
/// most every 10 % (every 10 MB when the size is unknown).
struct Reporter {
    name: String,
    bar: Option<indicatif::ProgressBar>,
    /// The last step printed (a tenth of the total, or 10 MB).
    last: Mutex<Option<u64>>,
}

impl Reporter {
    fn new(name: &str) -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(format!("downloading {name}"));
            bar
        });
        Reporter {
            name: name.to_string(),
            bar,
            last: Mutex::new(None),
        }
    }

    fn update(&self, p: accel_zoo::Progress) {
        if let Some(bar) = &self.bar {
            if let Some(t) = p.total {
                bar.set_length(t);
            }
            bar.set_position(p.done);
            return;
        }
        let step = match p.total {
            Some(t) if t > 0 => p.done.min(t) * 10 / t,
            _ => p.done / 10_000_000,
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|l| l >= step) {
            return;
        }
        *last = Some(step);
        match p.total {
            Some(t) if t > 0 => eprintln!(
                "downloading {}: {}% ({:.1} of {})",
                self.name,
                step * 10,
                p.done as f64 / 1e6,
                megabytes(t)
            ),
            _ => eprintln!("downloading {}: {}", self.name, megabytes(p.done)),
        }
    }

    fn finish(&self, fetched: &Fetched) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if fetched.cached {
            eprintln!(
                "{}: in the cache, sha256 verified ({})",
                self.name,
                fetched.path.display()
            );
        }
    }
}

//! `accel train NAME --featurizer M[:V] --data DIR`: transfer learning.
//!
//! The featurizer's graph is cut at its pooled features; each image of
//! `DIR/<class>/` goes through the featurizer's own preprocessing and the cut
//! graph (features cached under `$ACCEL_HOME/cache/features/`); a softmax
//! classifier is trained on them in this process and checked on a held-out
//! stratified share; featurizer and head are composed into one ONNX model
//! (`… → Flatten → Gemm → Softmax → probabilities`), registered with the
//! class folder names as labels and the featurizer as parent.
//!
//! Nothing is written to the registry unless every step succeeded.

use crate::context::GlobalArgs;
use crate::output::print_json;
use accel_convert::compose::{compose, PROBABILITIES};
use accel_convert::features::{cut_at, find_features};
use accel_convert::graph;
use accel_convert::inputs::read_folder;
use accel_convert::train::{accuracy, fit, stratified_split, TrainOptions};
use accel_core::name::NameRef;
use accel_core::spec::OutputSpec;
use accel_registry::{ModelRecord, NewModel};
use accel_runtime::engine::{select_backend, EngineChoice, LoadOptions, OptimizedCache};
use accel_runtime::{CompiledPipeline, Limits};
use anyhow::{bail, Context};
use clap::Args;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Property of a featurizer naming its pooled-features tensor (set by the
/// model zoo); `--features` overrides it.
pub const ZOO_FEATURES: &str = "accel.zoo.features";

/// `accel train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Name of the new model.
    pub name: String,
    /// The registered image classifier whose features are used: NAME or NAME:VERSION.
    #[arg(long)]
    pub featurizer: String,
    /// Training images: one sub-folder per class (the folder name is the
    /// label), JPEG or PNG files in each.
    #[arg(long)]
    pub data: PathBuf,
    /// Full-batch gradient steps.
    #[arg(long, default_value_t = TrainOptions::default().epochs)]
    pub epochs: usize,
    /// Share of each class held out to measure accuracy (0 < F < 1).
    #[arg(long, default_value_t = 0.2)]
    pub val_split: f64,
    /// L2 penalty on the (standardized) weights.
    #[arg(long, default_value_t = TrainOptions::default().l2)]
    pub l2: f64,
    /// The features tensor (default: the featurizer's `accel.zoo.features`
    /// property, else the input of its final Gemm/MatMul).
    #[arg(long)]
    pub features: Option<String>,
    /// Free-text description of the new model.
    #[arg(long)]
    pub description: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// What `accel train --json` prints.
#[derive(Debug, serde::Serialize)]
struct TrainOutcome {
    model: String,
    accuracy: f64,
    validation: usize,
    train: usize,
    classes: Vec<String>,
    features: FeaturesOutcome,
    timings_ms: TrainTimings,
}

#[derive(Debug, serde::Serialize)]
struct FeaturesOutcome {
    tensor: String,
    cached: usize,
    computed: usize,
}

#[derive(Debug, serde::Serialize)]
struct TrainTimings {
    features: f64,
    train: f64,
}

/// One labelled image.
struct Example {
    class: usize,
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Runs `accel train`.
pub fn run(global: &GlobalArgs, a: TrainArgs) -> anyhow::Result<()> {
    if !(a.val_split > 0.0 && a.val_split < 1.0) {
        bail!("--val-split must be between 0 and 1, not {}", a.val_split);
    }
    if a.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if !(a.l2 >= 0.0 && a.l2.is_finite()) {
        bail!("--l2 must be a finite number ≥ 0, not {}", a.l2);
    }
    accel_core::name::validate_name(&a.name)?;
    let registry = global.registry()?;
    let record = super::load::onnx_model(&registry, &a.featurizer, "train on")?;
    if record.spec.preprocess.is_none() {
        bail!(
            "{} takes raw tensors (no preprocessing): a featurizer needs an image pipeline (register it with --preset or --spec)",
            record.reference()
        );
    }
    let (classes, examples) = read_data(&a.data)?;

    // The featurizer, cut at its features.
    let bytes = registry.read_blob_verified(&record.sha256)?;
    let model = graph::decode(&bytes).with_context(|| record.reference())?;
    drop(bytes);
    let tensor = match (&a.features, record.properties.get(ZOO_FEATURES)) {
        (Some(t), _) | (None, Some(t)) => t.clone(),
        (None, None) => find_features(&model)
            .with_context(|| format!("{} (pass --features TENSOR)", record.reference()))?,
    };
    let cut = cut_at(&model, &tensor).with_context(|| record.reference())?;
    drop(model);

    // Features, one vector per image.
    let t0 = Instant::now();
    let cache = global
        .home()?
        .join("cache")
        .join("features")
        .join(&record.sha256)
        .join(features_key(&record, &tensor));
    let mut extractor = None;
    let (mut cached, mut computed) = (0, 0);
    let mut features: Vec<Vec<f32>> = Vec::with_capacity(examples.len());
    for ex in &examples {
        let file = cache.join(format!("{}.f32", hex::encode(Sha256::digest(&ex.bytes))));
        if let Some(v) = read_cached(&file) {
            features.push(v);
            cached += 1;
            continue;
        }
        if extractor.is_none() {
            extractor = Some(Extractor::new(global, &record, &cut, &tensor)?);
        }
        let v = extractor
            .as_ref()
            .map(|e| e.features(&ex.bytes))
            .transpose()
            .with_context(|| ex.path.display().to_string())?
            .unwrap_or_default();
        write_cached(&cache, &file, &v)?;
        features.push(v);
        computed += 1;
    }
    drop(extractor);
    let dim = features.first().map_or(0, Vec::len);
    if let Some((ex, v)) = examples.iter().zip(&features).find(|(_, v)| v.len() != dim) {
        bail!(
            "{} has {} feature values, {} has {dim}; delete {} and train again",
            ex.path.display(),
            v.len(),
            examples[0].path.display(),
            cache.display()
        );
    }
    let features_ms = t0.elapsed().as_secs_f64() * 1e3;
    tracing::info!(cached, computed, dim, features_ms, "features");

    // Train and validate.
    let t1 = Instant::now();
    let labels: Vec<usize> = examples.iter().map(|e| e.class).collect();
    let split = stratified_split(&labels, classes.len(), a.val_split)?;
    let pick = |ix: &[usize]| -> (Vec<&[f32]>, Vec<usize>) {
        (
            ix.iter().map(|&i| features[i].as_slice()).collect(),
            ix.iter().map(|&i| labels[i]).collect(),
        )
    };
    let (train_x, train_y) = pick(&split.train);
    let options = TrainOptions {
        epochs: a.epochs,
        l2: a.l2,
    };
    let trained = fit(&train_x, &train_y, classes.len(), &options)?;
    let (val_x, val_y) = pick(&split.validation);
    let (right, total) = accuracy(&trained.head, &val_x, &val_y);
    let val_accuracy = right as f64 / total as f64;
    let train_ms = t1.elapsed().as_secs_f64() * 1e3;
    tracing::info!(
        loss = trained.loss,
        train_accuracy = trained.train_accuracy,
        val_accuracy,
        train_ms,
        "trained"
    );

    // Compose and register.
    let composed = graph::encode(&compose(&cut, &trained.head)?);
    let mut file = tempfile::NamedTempFile::new().context("creating a temporary model file")?;
    file.write_all(&composed)
        .and_then(|_| file.flush())
        .context("writing the composed model")?;
    let mut spec = record.spec.clone();
    spec.outputs = vec![OutputSpec {
        name: PROBABILITIES.into(),
        aliases: vec![],
        softmax: false,
    }];
    spec.labels = None;
    spec.detection = None;
    spec.top_k = spec.top_k.min(classes.len());
    let mut properties = BTreeMap::new();
    for (k, v) in [
        ("featurizer", record.reference()),
        ("features", tensor.clone()),
        ("classes", classes.len().to_string()),
        ("train_images", split.train.len().to_string()),
        ("val_images", split.validation.len().to_string()),
        ("val_accuracy", format!("{val_accuracy:.4}")),
        ("epochs", a.epochs.to_string()),
        ("l2", a.l2.to_string()),
    ] {
        properties.insert(format!("accel.train.{k}"), v);
    }
    let new = registry.register_model(NewModel {
        name: a.name.clone(),
        model_file: file.path().to_path_buf(),
        description: a.description.clone().unwrap_or_else(|| {
            format!(
                "softmax head on the {tensor:?} features of {}: {} classes, held-out accuracy {val_accuracy:.3} ({right}/{total})",
                record.reference(),
                classes.len()
            )
        }),
        tags: BTreeMap::new(),
        properties,
        format: "onnx".into(),
        parent: Some(NameRef {
            name: record.name.clone(),
            version: Some(record.version),
        }),
        spec,
        labels: Some(classes.clone()),
        report: None,
    })?;

    let outcome = TrainOutcome {
        model: new.reference(),
        accuracy: val_accuracy,
        validation: total,
        train: split.train.len(),
        classes,
        features: FeaturesOutcome {
            tensor,
            cached,
            computed,
        },
        timings_ms: TrainTimings {
            features: features_ms,
            train: train_ms,
        },
    };
    if a.json {
        return print_json(&outcome);
    }
    println!("{}", outcome.model);
    println!("held-out accuracy {val_accuracy:.3} ({right}/{total})");
    Ok(())
}

/// The class folders of `dir` (sorted; hidden ones skipped) and their
/// images (sorted by file name).
fn read_data(dir: &Path) -> anyhow::Result<(Vec<String>, Vec<Example>)> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the data folder {}", dir.display()))?;
    let mut folders = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("cannot read the data folder {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() && !name.starts_with('.') {
            folders.push((name, e.path()));
        }
    }
    folders.sort();
    if folders.len() < 2 {
        bail!(
            "{} has {} class folder(s); training needs at least 2 (one sub-folder of images per class)",
            dir.display(),
            folders.len()
        );
    }
    let mut classes = Vec::new();
    let mut examples = Vec::new();
    for (class, (name, path)) in folders.into_iter().enumerate() {
        let images = read_folder(&path)?;
        if images.len() < 2 {
            bail!(
                "class {name:?} has {} image(s) in {}; each class needs at least 2 (one to train on, one to validate)",
                images.len(),
                path.display()
            );
        }
        examples.extend(images.into_iter().map(|(file, bytes)| Example {
            class,
            path: path.join(file),
            bytes,
        }));
        classes.push(name);
    }
    Ok((classes, examples))
}

/// The cache folder of one features tensor under one preprocessing.
fn features_key(record: &ModelRecord, tensor: &str) -> String {
    let pre = serde_json::to_string(&record.spec.preprocess).unwrap_or_default();
    hex::encode(Sha256::digest(format!("{tensor}\n{pre}")))
}

/// A cached feature vector (little-endian f32), if there is a sound one.
fn read_cached(file: &Path) -> Option<Vec<f32>> {
    let bytes = std::fs::read(file).ok()?;
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// Writes a feature vector: temp file in the same folder, then rename.
fn write_cached(dir: &Path, file: &Path, v: &[f32]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    tmp.write_all(&bytes)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.persist(file)
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

/// The cut featurizer behind the featurizer's own preprocessing.
struct Extractor {
    pipeline: CompiledPipeline,
}

impl Extractor {
    fn new(
        global: &GlobalArgs,
        record: &ModelRecord,
        cut: &graph::pb::ModelProto,
        tensor: &str,
    ) -> anyhow::Result<Self> {
        let bytes = graph::encode(cut);
        let (backend, note) = select_backend(EngineChoice::Auto, &global.search_paths()?)?;
        if let Some(note) = note {
            eprintln!("note: {note}");
        }
        let options = LoadOptions {
            cache: Some(OptimizedCache {
                dir: global.home()?.join("cache").join("optimized"),
                model_sha256: hex::encode(Sha256::digest(&bytes)),
            }),
            ..LoadOptions::default()
        };
        let plan = backend
            .load(&bytes, &options)
            .with_context(|| format!("loading {} cut at {tensor:?}", record.reference()))?;
        let mut spec = record.spec.clone();
        spec.outputs = vec![OutputSpec {
            name: tensor.to_string(),
            aliases: vec![],
            softmax: false,
        }];
        spec.labels = None;
        spec.detection = None;
        let pipeline = CompiledPipeline::new(plan, spec, None, Limits::default())?;
        Ok(Extractor { pipeline })
    }

    /// The features of one encoded image.
    fn features(&self, image: &[u8]) -> anyhow::Result<Vec<f32>> {
        let (out, _) = self.pipeline.run_images(&[image])?;
        let t = &out
            .first()
            .context("the featurizer returned no output")?
            .tensor;
        Ok(t.as_f32()
            .context("the features tensor is not float32")?
            .to_vec())
    }
}

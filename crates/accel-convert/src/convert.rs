//! The conversion itself: reference outputs, calibration and quantization,
//! candidate plans measured on this machine, the budget rule, the report.

use crate::calibrate::{self, Method};
use crate::evaluate::{self, Accuracy, TimingBudget};
use crate::quantize;
use crate::report::{CalibrationInfo, Candidate, Chosen, Report, ValidationInfo};
use crate::select::{self, Precision};
use crate::ConvertError;
use accel_core::Tensor;
use accel_runtime::engine::onnxruntime::OrtBackend;
use accel_runtime::engine::tract::TractBackend;
use accel_runtime::engine::{cpu_tag, Backend, LoadOptions, Plan};
use std::collections::BTreeMap;

/// The engines conversion may use and measure.
#[derive(Clone, Copy)]
pub struct Engines<'a> {
    /// ONNX Runtime, when its library is loaded: the reference and the
    /// calibration engine, and a candidate for every precision.
    pub ort: Option<&'a OrtBackend>,
    /// Whether tract plans are candidates (float; int8 too when ONNX Runtime
    /// is absent, since tract has no integer kernels for QDQ models).
    pub tract: bool,
}

/// Everything a conversion needs; the caller reads files and the registry.
pub struct ConvertRequest<'a> {
    /// The float ONNX model.
    pub model: &'a [u8],
    /// Calibration inputs, preprocessed by the model's own pipeline, batch 1.
    pub calibration: &'a [Tensor],
    /// Validation inputs, likewise.
    pub validation: &'a [Tensor],
    /// Where the validation inputs came from, for the report.
    pub validation_source: String,
    /// The output accuracy is measured on (a graph output of the model).
    pub output: String,
    /// Which precisions may win.
    pub precision: Precision,
    /// Largest allowed drop of top-1 agreement, percent.
    pub budget_pct: f64,
    /// How activation ranges are measured.
    pub method: Method,
    /// The range of the outputs of removed clips.
    pub clip_ranges: quantize::ClipRanges,
    /// Activation types to make int8 candidates with (each one a candidate).
    pub activation_types: Vec<quantize::ActType>,
    /// Engines to use.
    pub engines: Engines<'a>,
    /// Intra-op thread counts to measure each plan with.
    pub threads: Vec<usize>,
    /// How long to time each candidate.
    pub timing: TimingBudget,
    /// The target named by the user (`cpu`).
    pub target: String,
}

/// A finished conversion.
pub struct Converted {
    /// The chosen plan's bytes: the model as the chosen engine runs it
    /// (for ONNX Runtime, its optimized model, to load without optimizing).
    pub plan: Vec<u8>,
    /// What was measured and chosen.
    pub report: Report,
}

/// Told what the conversion is doing (a progress bar, an operation record).
pub trait Progress {
    /// A new stage begins.
    fn stage(&self, name: &str);
    /// `done` of `total` steps of the current stage are done.
    fn step(&self, done: usize, total: usize);
}

/// A [`Progress`] that ignores everything.
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _: &str) {}
    fn step(&self, _: usize, _: usize) {}
}

fn options(threads: usize, prepared: bool) -> LoadOptions {
    LoadOptions {
        threads,
        prepared,
        ..LoadOptions::default()
    }
}

/// One model variant (a precision) as one engine runs it.
struct Variant {
    engine: &'static str,
    precision: &'static str,
    /// int8 variants: the activation type.
    activations: Option<quantize::ActType>,
    /// What the engine loads (ONNX Runtime: its optimized model).
    bytes: Vec<u8>,
    prepared: bool,
}

/// Converts `req.model`: see the crate documentation.
pub fn convert(
    req: &ConvertRequest<'_>,
    progress: &dyn Progress,
) -> Result<Converted, ConvertError> {
    check(req)?;
    let tract = TractBackend::new();
    let max_threads = req.threads.iter().copied().max().unwrap_or(1);
    let (reference_engine, reference_name): (&dyn Backend, &str) = match req.engines.ort {
        Some(ort) => (ort, "onnxruntime fp32"),
        None => (&tract, "tract fp32"),
    };

    progress.stage("reference outputs (float model)");
    let reference_plan = reference_engine.load(req.model, &options(max_threads, false))?;
    let output_ix = evaluate::output_index(reference_plan.as_ref(), &req.output)?;
    let reference = evaluate::rows(reference_plan.as_ref(), output_ix, req.validation)?;
    drop(reference_plan);

    let mut portable: Vec<(&'static str, Option<quantize::ActType>, Vec<u8>)> =
        vec![("fp32", None, req.model.to_vec())];
    let mut calibration = None;
    let mut summaries = Vec::new();
    // `auto` without calibration images measures float plans only.
    let int8_skipped = req.precision == Precision::Auto && req.calibration.is_empty();
    if req.precision != Precision::Fp32 && !int8_skipped {
        progress.stage("calibrating activation ranges");
        let qplan = quantize::prepare(req.model)?;
        let calib_model = qplan.calibration_model()?;
        let calib_plan = reference_engine.load(&calib_model, &options(max_threads, false))?;
        let step = |done, total| progress.step(done, total);
        let ranges = calibrate::calibrate(
            calib_plan.as_ref(),
            qplan.tensors(),
            req.calibration,
            req.method,
            &step,
        )?;
        drop(calib_plan);
        progress.stage("quantizing");
        for &activations in &req.activation_types {
            let q = qplan.quantize_with(
                &ranges,
                quantize::QuantOptions {
                    clip_ranges: req.clip_ranges,
                    activations,
                },
            )?;
            summaries.push((activations, q.summary));
            portable.push(("int8", Some(activations), q.model));
        }
        calibration = Some(CalibrationInfo {
            method: req.method.name(),
            images: req.calibration.len(),
            tensors: qplan.tensors().len(),
        });
    }

    let mut variants = Vec::new();
    for (precision, activations, bytes) in &portable {
        if let Some(ort) = req.engines.ort {
            progress.stage(&format!("optimizing the {precision} model for onnxruntime"));
            variants.push(Variant {
                engine: "onnxruntime",
                precision,
                activations: *activations,
                bytes: ort.optimize(bytes, &options(max_threads, false))?,
                prepared: true,
            });
        }
        if req.engines.tract && (*precision == "fp32" || req.engines.ort.is_none()) {
            variants.push(Variant {
                engine: "tract",
                precision,
                activations: *activations,
                bytes: bytes.clone(),
                prepared: false,
            });
        }
    }
    if variants.is_empty() {
        return Err(ConvertError::InvalidArgument(
            "no engine to convert for (ONNX Runtime not found and tract excluded)".into(),
        ));
    }

    let mut candidates = Vec::new();
    let mut owner = Vec::new();
    for (vi, v) in variants.iter().enumerate() {
        let backend: &dyn Backend = match (v.engine, req.engines.ort) {
            ("onnxruntime", Some(ort)) => ort,
            _ => &tract,
        };
        progress.stage(&format!(
            "measuring {} {}{}",
            v.engine,
            v.precision,
            v.activations
                .map(|a| format!(" ({} activations)", a.as_str()))
                .unwrap_or_default()
        ));
        let mut accuracy: Option<Accuracy> = None;
        for (ti, &threads) in req.threads.iter().enumerate() {
            let plan: Box<dyn Plan> = backend.load(&v.bytes, &options(threads, v.prepared))?;
            let acc = match accuracy {
                Some(a) => a,
                None => {
                    let ix = evaluate::output_index(plan.as_ref(), &req.output)?;
                    let rows = evaluate::rows(plan.as_ref(), ix, req.validation)?;
                    *accuracy.insert(evaluate::compare(&reference, &rows))
                }
            };
            let lat = evaluate::latency(plan.as_ref(), &req.validation[0], req.timing)?;
            progress.step(ti + 1, req.threads.len());
            candidates.push(Candidate {
                engine: v.engine.into(),
                precision: v.precision.into(),
                activations: v.activations.map(|a| a.as_str().to_string()),
                threads,
                p50_ms: lat.p50_ms,
                p99_ms: lat.p99_ms,
                runs: lat.runs,
                top1_agreement: acc.top1_agreement,
                top5_overlap: acc.top5_overlap,
                cosine: acc.cosine,
                accepted: false,
                rejected_because: None,
            });
            owner.push(vi);
        }
    }
    select::apply_budget(&mut candidates, req.budget_pct);
    let (winner, mut reason) = select::choose(&candidates, req.precision)?;
    if int8_skipped {
        reason = format!("int8 not tried: no calibration images; {reason}");
    }
    let w = &candidates[winner];
    let chosen = Chosen {
        engine: w.engine.clone(),
        precision: w.precision.clone(),
        activations: w.activations.clone(),
        threads: w.threads,
    };
    let chosen_act = variants[owner[winner]].activations;
    let quantization = summaries
        .iter()
        .find(|(a, _)| Some(*a) == chosen_act)
        .or(summaries.first())
        .map(|(_, s)| s.clone());
    let mut engine_versions = BTreeMap::new();
    if let Some(ort) = req.engines.ort {
        engine_versions.insert("onnxruntime".to_string(), ort.version());
    }
    if req.engines.tract {
        engine_versions.insert("tract".to_string(), tract.version());
    }
    let report = Report {
        chosen,
        reason,
        target: req.target.clone(),
        precision: req.precision.as_str().into(),
        budget_pct: req.budget_pct,
        candidates,
        calibration,
        validation: ValidationInfo {
            images: req.validation.len(),
            source: req.validation_source.clone(),
            output: req.output.clone(),
            reference: reference_name.into(),
        },
        quantization,
        engine_versions,
        cpu: cpu_tag(),
    };
    let plan = variants.swap_remove(owner[winner]).bytes;
    Ok(Converted { plan, report })
}

fn check(req: &ConvertRequest<'_>) -> Result<(), ConvertError> {
    if req.validation.is_empty() {
        return Err(ConvertError::InvalidArgument("no validation images".into()));
    }
    if req.precision == Precision::Int8 && req.calibration.is_empty() {
        return Err(ConvertError::InvalidArgument(
            "int8 needs calibration images (--calibration DIR)".into(),
        ));
    }
    if !(0.0..=100.0).contains(&req.budget_pct) {
        return Err(ConvertError::InvalidArgument(format!(
            "the accuracy budget is a percentage (0 to 100), got {}",
            req.budget_pct
        )));
    }
    if req.threads.is_empty() || req.threads.contains(&0) {
        return Err(ConvertError::InvalidArgument(
            "thread counts to measure must be at least 1".into(),
        ));
    }
    check_target(&req.target)
}

/// Checks that plans can be made for `target` on this build.
pub fn check_target(target: &str) -> Result<(), ConvertError> {
    if target != "cpu" {
        return Err(ConvertError::Unsupported(format!(
            "target {target:?}: only cpu plans are made on this build (ONNX Runtime execution providers for GPUs and NPUs are not wired yet)"
        )));
    }
    Ok(())
}

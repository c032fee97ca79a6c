//! The conversion report: what was measured, what was chosen and why.
//!
//! Stored with the plan in the registry and printed by `accel convert` and
//! `accel models show`. It holds no timestamps or paths: two conversions of
//! the same model differ only in their timings.

use crate::quantize::QuantSummary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The winning candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chosen {
    /// `onnxruntime` or `tract`.
    pub engine: String,
    /// `fp32` or `int8`.
    pub precision: String,
    /// For int8: the activation type (`int8` or `uint8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<String>,
    /// Intra-op threads it was measured with.
    pub threads: usize,
}

/// One measured candidate plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// `onnxruntime` or `tract`.
    pub engine: String,
    /// `fp32` or `int8`.
    pub precision: String,
    /// For int8: the activation type (`int8` or `uint8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<String>,
    /// Intra-op threads.
    pub threads: usize,
    /// Median latency of one batch-1 run, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Runs timed.
    pub runs: usize,
    /// Fraction (0..=1) of validation images whose top-1 class equals the
    /// float reference's.
    pub top1_agreement: f64,
    /// Mean fraction of the reference's top-5 classes found in this
    /// candidate's top 5.
    pub top5_overlap: f64,
    /// Mean cosine similarity of the output rows with the reference's.
    pub cosine: f64,
    /// Within the accuracy budget.
    pub accepted: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_because: Option<String>,
}

/// How activation ranges were measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationInfo {
    /// `minmax` or `percentile-<p>`.
    pub method: String,
    /// Calibration images (after augmentation, if any).
    pub images: usize,
    /// Activation tensors calibrated.
    pub tensors: usize,
}

/// What accuracy was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationInfo {
    /// Validation images.
    pub images: usize,
    /// Where they came from (`--validation DIR`, or the calibration images).
    pub source: String,
    /// The output compared.
    pub output: String,
    /// The float reference: engine and precision.
    pub reference: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The plan registered.
    pub chosen: Chosen,
    /// Why it won.
    pub reason: String,
    /// The target asked for (`cpu`).
    pub target: String,
    /// The precision asked for (`auto`, `fp32`, `int8`).
    pub precision: String,
    /// Largest allowed drop in top-1 agreement, percent.
    pub budget_pct: f64,
    /// Every candidate measured, in measuring order.
    pub candidates: Vec<Candidate>,
    /// Calibration, when int8 candidates were made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationInfo>,
    /// Validation.
    pub validation: ValidationInfo,
    /// Quantization, when int8 candidates were made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantSummary>,
    /// Engine name → version.
    pub engine_versions: BTreeMap<String, String>,
    /// The CPU the plan was measured on (features an optimized plan may use).
    pub cpu: String,
}

impl Report {
    /// The report as aligned text, for `accel models show` and `accel convert`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let c = &self.chosen;
        let _ = writeln!(
            s,
            "chosen:      {} {}{} threads={} ({})",
            c.engine,
            c.precision,
            c.activations
                .as_deref()
                .map(|a| format!("/{a}"))
                .unwrap_or_default(),
            c.threads,
            self.reason
        );
        let _ = writeln!(
            s,
            "target:      {} precision={} budget={}% top-1 drop",
            self.target, self.precision, self.budget_pct
        );
        if let Some(cal) = &self.calibration {
            let _ = writeln!(
                s,
                "calibration: {} on {} images, {} tensors",
                cal.method, cal.images, cal.tensors
            );
        }
        let v = &self.validation;
        let _ = writeln!(
            s,
            "validation:  {} images ({}), output {:?} vs {}",
            v.images, v.source, v.output, v.reference
        );
        if let Some(q) = &self.quantization {
            let ops: Vec<String> = q
                .quantized_ops
                .iter()
                .map(|(k, n)| format!("{k}×{n}"))
                .collect();
            let _ = writeln!(
                s,
                "quantized:   weights {}, activations {}; {}",
                q.weights,
                q.activations,
                ops.join(" ")
            );
        }
        let _ = writeln!(
            s,
            "  {:<12} {:<9} {:>7} {:>9} {:>9} {:>7} {:>7} {:>9}  verdict",
            "ENGINE", "PRECISION", "THREADS", "P50 MS", "P99 MS", "TOP-1", "TOP-5", "COSINE"
        );
        for k in &self.candidates {
            let verdict = match (&k.rejected_because, k.accepted) {
                (Some(why), _) => why.clone(),
                (None, true) => "accepted".into(),
                (None, false) => "rejected".into(),
            };
            let mark = if k.engine == c.engine
                && k.precision == c.precision
                && k.activations == c.activations
                && k.threads == c.threads
            {
                "*"
            } else {
                " "
            };
            let _ = writeln!(
                s,
                "{mark} {:<12} {:<9} {:>7} {:>9.2} {:>9.2} {:>7.3} {:>7.3} {:>9.5}  {verdict}",
                k.engine,
                match &k.activations {
                    Some(a) if a == "uint8" => "int8/u8".to_string(),
                    _ => k.precision.clone(),
                },
                k.threads,
                k.p50_ms,
                k.p99_ms,
                k.top1_agreement,
                k.top5_overlap,
                k.cosine
            );
        }
        s
    }
}

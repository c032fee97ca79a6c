//! `accel predict MODEL[:V] IMAGE...`: the pipeline in this process, top-k
//! with labels and per-stage timings.

use super::load::{load_model, LoadRequest, ModelSource};
use crate::context::GlobalArgs;
use crate::output::print_json;
use accel_runtime::engine::EngineChoice;
use accel_runtime::pipeline::{DetectedObject, ImageResult, Timings};
use accel_runtime::Limits;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

/// `accel predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// NAME or NAME:VERSION.
    pub model: String,
    /// Image files (JPEG or PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// auto, onnxruntime or tract.
    #[arg(long, env = "ACCEL_ENGINE", default_value = "auto")]
    pub engine: String,
    /// Intra-op threads (0 = all cores).
    #[arg(long, env = "ACCEL_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// How many classes (or, for a detector, detections) to print.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Largest accepted image, in pixels.
    #[arg(long, env = "ACCEL_MAX_IMAGE_PIXELS", default_value_t = Limits::default().max_image_pixels)]
    pub max_image_pixels: u64,
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The JSON document `--json` prints.
#[derive(Debug, serde::Serialize)]
pub struct PredictReport {
    /// Model reference.
    pub model: String,
    /// Engine used.
    pub engine: String,
    /// Engine version.
    pub engine_version: String,
    /// One entry per image.
    pub results: Vec<ImageReport>,
}

/// One image's answer.
#[derive(Debug, serde::Serialize)]
pub struct ImageReport {
    /// The file.
    pub image: String,
    /// Top-k classes (classifiers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<accel_runtime::pipeline::ClassScore>>,
    /// Objects found, best first (detectors): at most --top of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detections: Option<Vec<DetectedObject>>,
    /// Stage timings.
    pub timings_ms: Timings,
}

/// Runs the model on each image (batch 1 each, so timings are per image).
pub fn run(global: &GlobalArgs, a: PredictArgs) -> anyhow::Result<()> {
    if a.top == 0 {
        anyhow::bail!("--top must be at least 1");
    }
    let engine: EngineChoice = a.engine.parse()?;
    let model = a.model.parse()?;
    // Read every file first: a missing file fails before any work.
    let files: Vec<(PathBuf, Vec<u8>)> = a
        .images
        .iter()
        .map(|p| {
            Ok((
                p.clone(),
                std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let registry = global.registry()?;
    let limits = Limits {
        max_image_pixels: a.max_image_pixels,
        ..Limits::default()
    };
    let loaded = load_model(
        global,
        Some(&registry),
        &LoadRequest {
            model: ModelSource::Registry(model),
            engine,
            threads: a.threads,
            spin: None,
            limits,
        },
    )?;
    if let Some(note) = &loaded.engine_note {
        eprintln!("note: {note}");
    }
    let mut results = Vec::new();
    for (path, bytes) in &files {
        let image = path.display().to_string();
        let report = if loaded.pipeline.detects() {
            let (mut found, timings) = loaded
                .pipeline
                .detect(&[bytes.as_slice()])
                .with_context(|| image.clone())?;
            let mut found = found.remove(0);
            found.truncate(a.top);
            ImageReport {
                image,
                top: None,
                detections: Some(found),
                timings_ms: timings,
            }
        } else {
            let (mut r, timings): (Vec<ImageResult>, Timings) = loaded
                .pipeline
                .classify(&[bytes.as_slice()], a.top)
                .with_context(|| image.clone())?;
            ImageReport {
                image,
                top: Some(r.remove(0).top),
                detections: None,
                timings_ms: timings,
            }
        };
        results.push(report);
    }
    let report = PredictReport {
        model: loaded.record.reference(),
        engine: loaded.pipeline.plan().engine().to_string(),
        engine_version: loaded.engine_version.clone(),
        results,
    };
    if a.json {
        return print_json(&report);
    }
    println!(
        "model {} on {} {}",
        report.model, report.engine, report.engine_version
    );
    for r in &report.results {
        print_image(r);
    }
    Ok(())
}

/// Prints one image's top-k and timings.
pub fn print_image(r: &ImageReport) {
    println!("{}", r.image);
    for c in r.top.iter().flatten() {
        println!(
            "  {:>5}  {:<28} {:.4}",
            c.index,
            c.label.as_deref().unwrap_or("-"),
            c.score
        );
    }
    if let Some(found) = &r.detections {
        if found.is_empty() {
            println!("  no detections above the score threshold");
        }
        for d in found {
            let [y0, x0, y1, x1] = d.bbox;
            println!(
                "  {:>5}  {:<16} {:.4}  box x {:.1}..{:.1} y {:.1}..{:.1}",
                d.class,
                d.label.as_deref().unwrap_or("-"),
                d.score,
                x0,
                x1,
                y0,
                y1
            );
        }
    }
    println!(
        "  decode+preprocess {:.2} ms, inference {:.2} ms",
        r.timings_ms.preprocess_ms, r.timings_ms.inference_ms
    );
}

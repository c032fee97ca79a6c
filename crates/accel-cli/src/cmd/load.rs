//! Loading a registered model into a compiled pipeline: shared by `predict`,
//! `quickstart` and (later) `serve`.

use crate::context::GlobalArgs;
use accel_core::name::NameRef;
use accel_registry::{ModelRecord, Registry};
use accel_runtime::engine::{select_backend, EngineChoice, LoadOptions};
use accel_runtime::{CompiledPipeline, Limits};
use anyhow::Context;
use std::time::Instant;

/// What to load and how.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    /// The model.
    pub model: NameRef,
    /// Engine choice.
    pub engine: EngineChoice,
    /// Intra-op threads (0 = all cores).
    pub threads: usize,
    /// Request limits.
    pub limits: Limits,
}

/// A model ready to run.
pub struct LoadedModel {
    /// Its registry record.
    pub record: ModelRecord,
    /// The compiled pipeline.
    pub pipeline: CompiledPipeline,
    /// The engine's version.
    pub engine_version: String,
    /// Why `auto` did not pick the fast engine, if it did not.
    pub engine_note: Option<String>,
    /// Milliseconds spent compiling the plan.
    pub load_ms: f64,
}

/// Loads `req.model` from `registry`.
pub fn load_model(
    global: &GlobalArgs,
    registry: &Registry,
    req: &LoadRequest,
) -> anyhow::Result<LoadedModel> {
    let record = registry.get_model(&req.model)?;
    let bytes = registry.read_blob_verified(&record.sha256)?;
    let labels = registry.labels(&record)?;
    let (backend, engine_note) = select_backend(req.engine, &global.search_paths()?)?;
    let t0 = Instant::now();
    let plan = backend
        .load(
            &bytes,
            &LoadOptions {
                threads: req.threads,
            },
        )
        .with_context(|| format!("loading {}", record.reference()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let pipeline = CompiledPipeline::new(plan, record.spec.clone(), labels, req.limits)?;
    Ok(LoadedModel {
        record,
        pipeline,
        engine_version: backend.version(),
        engine_note,
        load_ms,
    })
}

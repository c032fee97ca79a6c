//! Loading a registered model into a compiled pipeline: shared by `predict`,
//! `quickstart` and (later) `serve`.

use super::convert::{check_plan_fits, PLAN_ENGINE, PLAN_THREADS};
use crate::context::GlobalArgs;
use accel_core::name::NameRef;
use accel_registry::{ModelRecord, Registry};
use accel_runtime::engine::{
    select_backend, EngineChoice, EngineKind, LoadOptions, OptimizedCache,
};
use accel_runtime::{CompiledPipeline, Limits};
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
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
    /// Idle engine threads spin (None: the engine's default).
    pub spin: Option<bool>,
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

/// What a registered plan (`accel-plan`) says about how to load it.
struct PlanFacts {
    engine: EngineKind,
    threads: usize,
}

impl PlanFacts {
    fn of(record: &ModelRecord) -> anyhow::Result<Option<PlanFacts>> {
        if record.format != "accel-plan" {
            return Ok(None);
        }
        let engine = match record.properties.get(PLAN_ENGINE).map(String::as_str) {
            Some("onnxruntime") => EngineKind::OnnxRuntime,
            Some("tract") => EngineKind::Tract,
            other => bail!(
                "plan {} names no known engine ({PLAN_ENGINE} = {other:?})",
                record.reference()
            ),
        };
        let threads = record
            .properties
            .get(PLAN_THREADS)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        Ok(Some(PlanFacts { engine, threads }))
    }
}

/// Loads `req.model` from `registry`.
pub fn load_model(
    global: &GlobalArgs,
    registry: &Registry,
    req: &LoadRequest,
) -> anyhow::Result<LoadedModel> {
    let record = registry.get_model(&req.model)?;
    let t_read = Instant::now();
    // Read once; the sha256 check runs on a second thread while the engine
    // compiles the same bytes (cold start), and a mismatch wins over
    // whatever the engine made of them.
    let bytes = match std::fs::read(registry.blob_path(&record.sha256)) {
        Ok(b) => b,
        Err(_) => registry.read_blob_verified(&record.sha256)?,
    };
    let read_ms = t_read.elapsed().as_secs_f64() * 1e3;
    let labels = registry.labels(&record)?;
    let plan = PlanFacts::of(&record)?;
    let engine = match (&plan, req.engine) {
        (Some(p), EngineChoice::Auto) => EngineChoice::Only(p.engine),
        (Some(p), EngineChoice::Only(k)) if k != p.engine => bail!(
            "{} is a plan for {}; it cannot run on {k} (convert the parent again with --engine {k})",
            record.reference(),
            p.engine
        ),
        (_, choice) => choice,
    };
    let (backend, engine_note) = select_backend(engine, &global.search_paths()?)?;
    if plan.is_some() {
        check_plan_fits(&record, backend.as_ref())?;
    }
    let cache_dir = global.home()?.join("cache").join("optimized");
    let t0 = Instant::now();
    let options = LoadOptions {
        threads: match &plan {
            Some(p) if req.threads == 0 => p.threads,
            _ => req.threads,
        },
        spin: req.spin,
        // A plan is the engine's optimized model already: loaded as it is.
        cache: plan.is_none().then(|| OptimizedCache {
            dir: cache_dir,
            model_sha256: record.sha256.clone(),
        }),
        prepared: plan
            .as_ref()
            .is_some_and(|p| p.engine == EngineKind::OnnxRuntime),
    };
    let (plan, digest) = std::thread::scope(|s| {
        let digest = s.spawn(|| hex::encode(Sha256::digest(&bytes)));
        let plan = backend.load(&bytes, &options);
        (plan, digest.join())
    });
    drop(bytes);
    if digest.ok().as_deref() != Some(record.sha256.as_str()) {
        // The registry's own check names the blob and the model.
        registry.read_blob_verified(&record.sha256)?;
        bail!(
            "the blob of {} changed while it was loading",
            record.reference()
        );
    }
    let plan = plan.with_context(|| format!("loading {}", record.reference()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(model = %record.reference(), read_ms, load_ms, "model read, verified and compiled");
    let pipeline = CompiledPipeline::new(plan, record.spec.clone(), labels, req.limits)?;
    Ok(LoadedModel {
        record,
        pipeline,
        engine_version: backend.version(),
        engine_note,
        load_ms,
    })
}

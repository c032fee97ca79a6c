//! Loading a model into a compiled pipeline, from the registry or from a
//! model bundle directory: shared by `predict`, `quickstart` and `serve`.

use super::convert::{check_plan_fits, PLAN_ENGINE, PLAN_THREADS};
use crate::bundle;
use crate::context::GlobalArgs;
use accel_core::name::NameRef;
use accel_registry::{ModelRecord, Registry};
use accel_runtime::engine::{
    select_backend, EngineChoice, EngineKind, LoadOptions, OptimizedCache,
};
use accel_runtime::{CompiledPipeline, Limits};
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The registered ONNX model `reference` names, for a command that reads
/// its graph (`convert`, `train`): a converted plan is refused, naming its
/// float parent, since `verb` only works on ONNX.
pub fn onnx_model(registry: &Registry, reference: &str, verb: &str) -> anyhow::Result<ModelRecord> {
    let source: NameRef = reference.parse()?;
    let record = registry.get_model(&source)?;
    if record.format != "onnx" {
        let parent = record
            .parent
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        bail!(
            "{} has format {}, not onnx; {verb} its float parent{parent}",
            record.reference(),
            record.format,
        );
    }
    Ok(record)
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A registered model, `name[:version]`.
    Registry(NameRef),
    /// A model bundle directory (`accel models bundle`): needs no registry.
    Bundle(PathBuf),
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Registry(r) => match r.version {
                Some(v) => write!(f, "{}:{v}", r.name),
                None => write!(f, "{}", r.name),
            },
            ModelSource::Bundle(dir) => write!(f, "bundle {}", dir.display()),
        }
    }
}

/// What to load and how.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    /// The model.
    pub model: ModelSource,
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
    /// Its registry record (for a bundle: the record in `model.json`).
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

/// A model read from its source, its sha256 not yet checked.
struct Unverified<'a> {
    record: ModelRecord,
    bytes: Vec<u8>,
    labels: Option<Vec<String>>,
    /// Where optimized models may be cached (None: nowhere).
    cache_dir: Option<PathBuf>,
    /// The error for bytes that do not hash to `record.sha256` (given the
    /// digest they do hash to).
    mismatch: Mismatch<'a>,
}

/// Makes the error for bytes whose sha256 (the `&str`) is not the record's.
type Mismatch<'a> = Box<dyn FnOnce(&ModelRecord, &str) -> anyhow::Error + 'a>;

/// Loads `req.model`. `registry` is needed for [`ModelSource::Registry`]
/// only: a bundle is loaded without one.
pub fn load_model(
    global: &GlobalArgs,
    registry: Option<&Registry>,
    req: &LoadRequest,
) -> anyhow::Result<LoadedModel> {
    let t_read = Instant::now();
    let source = match &req.model {
        ModelSource::Registry(r) => {
            let Some(registry) = registry else {
                bail!("loading {} needs the registry", req.model);
            };
            read_registered(global, registry, r)?
        }
        ModelSource::Bundle(dir) => read_bundled(global, dir)?,
    };
    let read_ms = t_read.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(model = %source.record.reference(), from = %req.model, read_ms, "model read");
    compile(global, source, req)
}

fn read_registered<'a>(
    global: &GlobalArgs,
    registry: &'a Registry,
    r: &NameRef,
) -> anyhow::Result<Unverified<'a>> {
    let record = registry.get_model(r)?;
    // Read once; the sha256 check runs on a second thread while the engine
    // compiles the same bytes (cold start), and a mismatch wins over
    // whatever the engine made of them.
    let bytes = match std::fs::read(registry.blob_path(&record.sha256)) {
        Ok(b) => b,
        Err(_) => registry.read_blob_verified(&record.sha256)?,
    };
    let labels = registry.labels(&record)?;
    Ok(Unverified {
        record,
        bytes,
        labels,
        cache_dir: Some(global.home()?.join("cache").join("optimized")),
        mismatch: Box::new(move |record, _| {
            // The registry's own check names the blob and the model.
            match registry.read_blob_verified(&record.sha256) {
                Err(e) => e.into(),
                Ok(_) => anyhow::anyhow!(
                    "the blob of {} changed while it was loading",
                    record.reference()
                ),
            }
        }),
    })
}

fn read_bundled<'a>(global: &GlobalArgs, dir: &'a Path) -> anyhow::Result<Unverified<'a>> {
    let b = bundle::read_unverified(dir)?;
    // A plan is never cached; a model is, where the home can be written.
    let cache_dir = if b.record.format == "accel-plan" {
        None
    } else {
        writable_cache_dir(global)
    };
    Ok(Unverified {
        record: b.record,
        bytes: b.model,
        labels: b.labels,
        cache_dir,
        mismatch: Box::new(move |record, digest| bundle::corrupt_model(dir, record, digest)),
    })
}

/// `$ACCEL_HOME/cache/optimized` when it can be created and written; None
/// otherwise (a read-only image still starts, optimizing at every start).
fn writable_cache_dir(global: &GlobalArgs) -> Option<PathBuf> {
    let dir = global.home().ok()?.join("cache").join("optimized");
    let probe = std::fs::create_dir_all(&dir).and_then(|()| {
        tempfile::Builder::new()
            .prefix(".probe")
            .tempfile_in(&dir)
            .map(drop)
    });
    match probe {
        Ok(()) => Some(dir),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "no optimized-model cache");
            None
        }
    }
}

/// Engine choice, plan checks, compilation while the bytes are hashed.
fn compile(
    global: &GlobalArgs,
    source: Unverified<'_>,
    req: &LoadRequest,
) -> anyhow::Result<LoadedModel> {
    let Unverified {
        record,
        bytes,
        labels,
        cache_dir,
        mismatch,
    } = source;
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
    let t0 = Instant::now();
    let options = LoadOptions {
        threads: match &plan {
            Some(p) if req.threads == 0 => p.threads,
            _ => req.threads,
        },
        spin: req.spin,
        // A plan is the engine's optimized model already: loaded as it is.
        cache: cache_dir
            .filter(|_| plan.is_none())
            .map(|dir| OptimizedCache {
                dir,
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
    match digest {
        Ok(d) if d == record.sha256 => {}
        Ok(d) => return Err(mismatch(&record, &d)),
        Err(_) => bail!("hashing {} failed", record.reference()),
    }
    let plan = plan.with_context(|| format!("loading {}", record.reference()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(model = %record.reference(), load_ms, "model verified and compiled");
    let pipeline = CompiledPipeline::new(plan, record.spec.clone(), labels, req.limits)?;
    Ok(LoadedModel {
        record,
        pipeline,
        engine_version: backend.version(),
        engine_note,
        load_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use accel_core::spec::Preset;
    use accel_registry::NewModel;

    fn register(registry: &Registry, name: &str, format: &str, parent: Option<&str>) {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/models/shufflenet-v2-12-qdq.onnx");
        registry
            .register_model(NewModel {
                name: name.into(),
                model_file: file,
                description: String::new(),
                tags: Default::default(),
                properties: Default::default(),
                format: format.into(),
                parent: parent.map(|p| p.parse().unwrap()),
                spec: Preset::Torchvision.spec(),
                labels: None,
                report: None,
            })
            .unwrap();
    }

    #[test]
    fn onnx_model_takes_onnx_and_refuses_a_plan_naming_its_parent() {
        let home = tempfile::tempdir().unwrap();
        let registry = Registry::open(home.path()).unwrap();
        register(&registry, "m", "onnx", None);
        register(&registry, "m-plan", "accel-plan", Some("m:1"));
        assert_eq!(onnx_model(&registry, "m", "convert").unwrap().version, 1);
        let err = onnx_model(&registry, "m-plan:1", "train on").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m-plan:1 has format accel-plan, not onnx; train on its float parent (m:1)"
        );
        let err = onnx_model(&registry, "absent", "convert").unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }
}

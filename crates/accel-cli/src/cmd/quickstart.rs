//! `accel quickstart`: register the bundled pretrained model, classify the
//! bundled photos, print top-5 and latency, and say which engine ran.

use super::load::{load_model, LoadRequest, ModelSource};
use super::predict::{print_image, ImageReport};
use crate::context::GlobalArgs;
use crate::fixtures;
use accel_core::name::NameRef;
use accel_core::spec::Preset;
use accel_registry::{ModelFilter, NewModel};
use accel_runtime::engine::{EngineChoice, EngineKind};
use accel_runtime::onnx_info::read_model_io;
use accel_runtime::pipeline::resolve_spec;
use accel_runtime::Limits;
use anyhow::Context;
use clap::Args;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;

/// `accel quickstart`.
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Name to register the bundled model under.
    #[arg(long, default_value = "shufflenet-v2-quickstart")]
    pub name: String,
    /// auto, onnxruntime or tract.
    #[arg(long, env = "ACCEL_ENGINE", default_value = "auto")]
    pub engine: String,
    /// Intra-op threads (0 = all cores).
    #[arg(long, env = "ACCEL_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Timed runs per photo after one warm-up.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
}

/// Runs the quickstart.
pub fn run(global: &GlobalArgs, a: QuickstartArgs) -> anyhow::Result<()> {
    let engine: EngineChoice = a.engine.parse()?;
    let registry = global.registry()?;
    let sha = hex::encode(Sha256::digest(fixtures::MODEL));
    // Reuse the bundled model if this name's latest version already is it.
    let existing = registry
        .list_models(&ModelFilter {
            name: Some(a.name.clone()),
            tags: vec![],
            latest_only: true,
        })?
        .into_iter()
        .find(|r| r.sha256 == sha);
    let record = match existing {
        Some(r) => {
            println!("using registered model {}", r.reference());
            r
        }
        None => {
            let mut tmp = tempfile::Builder::new().suffix(".onnx").tempfile()?;
            tmp.write_all(fixtures::MODEL)?;
            tmp.flush()?;
            let io = read_model_io(fixtures::MODEL)?;
            let spec = resolve_spec(Preset::Torchvision.spec(), &io)?;
            let labels: Vec<String> =
                serde_json::from_str(fixtures::LABELS_JSON).context("bundled labels")?;
            let r =
                registry.register_model(NewModel {
                    name: a.name.clone(),
                    model_file: tmp.path().to_path_buf(),
                    description:
                        "ONNX Model Zoo ShuffleNetV2 (ImageNet-1k), QDQ int8, bundled with accel"
                            .into(),
                    tags: BTreeMap::from([("source".into(), "bundled".into())]),
                    properties: BTreeMap::from([("file".into(), fixtures::MODEL_FILE.into())]),
                    format: "onnx".into(),
                    parent: None,
                    spec,
                    labels: Some(labels),
                    report: None,
                })?;
            println!("registered {}", r.reference());
            r
        }
    };
    let loaded = load_model(
        global,
        Some(&registry),
        &LoadRequest {
            model: ModelSource::Registry(NameRef {
                name: record.name.clone(),
                version: Some(record.version),
            }),
            engine,
            threads: a.threads,
            spin: None,
            limits: Limits::default(),
        },
    )?;
    let plan = loaded.pipeline.plan();
    println!(
        "engine: {} {} (model compiled in {:.0} ms)",
        plan.engine(),
        loaded.engine_version,
        loaded.load_ms
    );
    if let Some(note) = &loaded.engine_note {
        println!("note: {note}");
    }
    let mut end_to_end = Vec::new();
    for (name, bytes) in fixtures::PHOTOS {
        // One warm-up, then the median of the timed runs.
        loaded.pipeline.classify(&[bytes], 5)?;
        let mut runs = Vec::new();
        for _ in 0..a.runs.max(1) {
            runs.push(loaded.pipeline.classify(&[bytes], 5)?);
        }
        runs.sort_by(|x, y| total(&x.1).total_cmp(&total(&y.1)));
        let (mut results, timings) = runs.swap_remove(runs.len() / 2);
        end_to_end.push(total(&timings));
        print_image(&ImageReport {
            image: (*name).to_string(),
            top: Some(results.remove(0).top),
            detections: None,
            timings_ms: timings,
        });
    }
    end_to_end.sort_by(f64::total_cmp);
    println!(
        "median latency per photo in process (decode + preprocess + inference, batch 1): {:.2} ms",
        end_to_end[end_to_end.len() / 2]
    );
    let on_tract = plan.engine() == EngineKind::Tract;
    serve_and_score(loaded, a.runs)?;
    if on_tract {
        println!(
            "tip: `accel engines install onnxruntime` provisions ONNX Runtime, the fast engine"
        );
    }
    Ok(())
}

fn total(t: &accel_runtime::Timings) -> f64 {
    t.preprocess_ms + t.inference_ms + t.postprocess_ms
}

/// Serves the loaded model on free loopback ports, scores the bundled
/// photos over gRPC exactly as Azure ML's PredictionClient would, prints
/// top-5 and end-to-end latency, then stops the server.
fn serve_and_score(loaded: super::load::LoadedModel, runs: usize) -> anyhow::Result<()> {
    use accel_client::{Client, ClientOptions};
    use accel_server::auth::ServiceKeys;
    use accel_server::executor::Executor;
    use accel_server::metrics::Metrics;
    use accel_server::server::{start, ListenOptions};
    use accel_server::{RequestCore, Service};
    use std::sync::Arc;
    use std::time::Instant;

    let name = "quickstart".to_string();
    let core = Arc::new(RequestCore::new(
        vec![Service {
            keys: ServiceKeys::new(&name, &[], None),
            name: name.clone(),
            model_name: loaded.record.name.clone(),
            version: loaded.record.version,
            pipeline: Arc::new(loaded.pipeline),
        }],
        Executor::new(1, 16),
        Arc::new(Metrics::new()),
    ));
    core.warm_up()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let opts = ListenOptions {
            host: "127.0.0.1".into(),
            grpc_port: 0,
            http_port: 0,
            tls: None,
            max_message_bytes: 16 << 20,
            header_timeout: accel_server::server::DEFAULT_HEADER_TIMEOUT,
        };
        let server = start(Arc::clone(&core), &opts).await?;
        println!(
            "serving on grpc={} http={}",
            server.grpc_addr, server.http_addr
        );
        let client = Client::connect(ClientOptions {
            address: server.grpc_addr.to_string(),
            service: name.clone(),
            retries: 3,
            ..ClientOptions::default()
        })?;
        let labels: Vec<String> = serde_json::from_str(fixtures::LABELS_JSON)?;
        let mut medians = Vec::new();
        for (photo, bytes) in fixtures::PHOTOS {
            let images = vec![bytes.to_vec()];
            let out = client.score_images(&images).await?;
            let mut ms = Vec::new();
            for _ in 0..runs.max(1) {
                let t0 = Instant::now();
                client.score_images(&images).await?;
                ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            ms.sort_by(f64::total_cmp);
            medians.push(ms[ms.len() / 2]);
            println!("{photo} (over gRPC, TF Serving Predict)");
            for (index, score) in accel_runtime::postprocess::top_k(&out.values, 5) {
                println!(
                    "  {index:>5}  {:<28} {score:.4}",
                    labels.get(index).map_or("-", String::as_str)
                );
            }
            println!(
                "  end-to-end {:.2} ms (JPEG/PNG bytes in, softmax out)",
                ms[ms.len() / 2]
            );
        }
        medians.sort_by(f64::total_cmp);
        println!(
            "median end-to-end latency over gRPC on loopback, batch 1: {:.2} ms",
            medians[medians.len() / 2]
        );
        server.shutdown(&core).await;
        anyhow::Ok(())
    })
}

//! The request core: every transport's requests go through here. Routing,
//! authentication, validation, admission, execution on the engine workers,
//! deadlines, timing and metrics happen once, in this order.

use crate::admission::Admission;
use crate::auth::{ApiKey, ServiceKeys};
use crate::error::ServeError;
use crate::executor::Executor;
use crate::job::{Job, ReplySlot};
use crate::metrics::Metrics;
use crate::request::{InferRequest, InferResponse, NamedInput, Target};
use crate::status::code_label;
use accel_core::spec::InputKind;
use accel_core::{DType, ErrorKind, TensorData};
use accel_runtime::CompiledPipeline;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// One served model.
#[derive(Debug)]
pub struct Service {
    /// Service name (what clients route to).
    pub name: String,
    /// Registered model name.
    pub model_name: String,
    /// Registered model version.
    pub version: u32,
    /// The compiled pipeline.
    pub pipeline: Arc<CompiledPipeline>,
    /// Accepted API keys.
    pub keys: ServiceKeys,
}

impl Service {
    /// Every name a client may use for the input.
    pub fn input_names(&self) -> Vec<&str> {
        let spec = self.pipeline.spec();
        std::iter::once(spec.input_name.as_str())
            .chain(spec.input_aliases.iter().map(String::as_str))
            .collect()
    }

    /// Whether the pipeline takes encoded images.
    pub fn takes_images(&self) -> bool {
        self.pipeline.spec().input_kind == InputKind::EncodedImages
    }
}

/// The service in a slot now (a poisoned lock still holds a whole `Arc`).
fn read_slot(slot: &RwLock<Arc<Service>>) -> Arc<Service> {
    Arc::clone(&slot.read().unwrap_or_else(|p| p.into_inner()))
}

/// The prefix of the Azure ML routing header's value.
pub const ROUTE_PREFIX: &str = "/api/v1/service/";

/// The shared request core.
#[derive(Debug)]
pub struct RequestCore {
    /// One slot per service; a slot's model can be replaced while serving
    /// (requests already routed keep the `Arc` of the one they started on).
    services: Vec<RwLock<Arc<Service>>>,
    executor: Arc<Executor>,
    preprocess: Option<Arc<Executor>>,
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    next_id: AtomicU64,
}

impl RequestCore {
    /// A core serving `services` on `executor`, admitting as many requests
    /// as the executor has threads and queue places (see
    /// [`RequestCore::with_admission`]).
    pub fn new(services: Vec<Service>, executor: Arc<Executor>, metrics: Arc<Metrics>) -> Self {
        let admission = Admission::new(executor.threads(), executor.capacity());
        RequestCore {
            services: services
                .into_iter()
                .map(|s| RwLock::new(Arc::new(s)))
                .collect(),
            executor,
            preprocess: None,
            admission,
            metrics,
            ready: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        }
    }

    /// Decodes and preprocesses images on `pool` instead of the engine
    /// workers, so that the engine runs one request while the next one's
    /// images are being decoded (a two-stage pipeline).
    pub fn with_preprocess_pool(mut self, pool: Arc<Executor>) -> Self {
        self.preprocess = Some(pool);
        self
    }

    /// Bounds the requests inside the server (the only place a request is
    /// refused for load). Each pool's queue should hold at least
    /// `admission.limit()` jobs, so an admitted request always finds room.
    pub fn with_admission(mut self, admission: Arc<Admission>) -> Self {
        self.admission = admission;
        self
    }

    /// The admission bound and count.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The Prometheus text exposition, with the admission gauges as they
    /// are now.
    pub fn render_metrics(&self) -> String {
        self.metrics
            .set_admission(self.admission.in_flight(), self.admission.limit());
        self.metrics.render()
    }

    /// The services, as they are now.
    pub fn services(&self) -> Vec<Arc<Service>> {
        self.services.iter().map(read_slot).collect()
    }

    /// Puts `service` in place of the service of the same name: new
    /// requests go to it at once, requests already routed finish on the old
    /// one, whose model is freed when the last of them is done. The new
    /// pipeline is warmed up first, so no request waits for it. Returns the
    /// service it replaced.
    pub fn replace(&self, service: Service) -> Result<Arc<Service>, ServeError> {
        let slot = self
            .services
            .iter()
            .find(|slot| read_slot(slot).name == service.name)
            .ok_or_else(|| {
                ServeError::not_found(format!("no service named {:?} to replace", service.name))
            })?;
        service.pipeline.warm_up()?;
        let new = Arc::new(service);
        let mut current = slot.write().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::replace(&mut *current, new);
        drop(current);
        tracing::info!(
            service = %old.name,
            from = old.version,
            to = read_slot(slot).version,
            "model replaced"
        );
        Ok(old)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Ready means every model is loaded and warmed up.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Runs one warm-up inference per service, then turns ready.
    pub fn warm_up(&self) -> Result<(), ServeError> {
        for s in self.services() {
            s.pipeline.warm_up()?;
        }
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Stops accepting work and waits for queued requests to finish.
    pub fn shutdown(&self) {
        self.ready.store(false, Ordering::Release);
        if let Some(pool) = &self.preprocess {
            pool.shutdown();
        }
        self.executor.shutdown();
    }

    /// Picks the service a request is for: an explicit name, else the Azure
    /// routing header, else the only service.
    pub fn route(&self, target: &Target) -> Result<Arc<Service>, ServeError> {
        let service = if let Some(name) = target.name.as_deref().filter(|n| !n.is_empty()) {
            self.by_name(name)?
        } else if let Some(route) = target.route.as_deref() {
            let name = route
                .strip_prefix(ROUTE_PREFIX)
                .unwrap_or(route)
                .trim_matches('/');
            self.by_name(name)?
        } else if let [only] = self.services.as_slice() {
            read_slot(only)
        } else {
            return Err(ServeError::invalid(format!(
                "this server hosts {} services; name one (model_spec.name, the model in the URL, \
                 or the x-ms-aml-grpc-service-route header)",
                self.services.len()
            )));
        };
        if let Some(v) = target.version {
            if v != u64::from(service.version) {
                return Err(ServeError::not_found(format!(
                    "service {:?} serves version {}, not {v}",
                    service.name, service.version
                )));
            }
        }
        Ok(service)
    }

    fn by_name(&self, name: &str) -> Result<Arc<Service>, ServeError> {
        self.services
            .iter()
            .map(read_slot)
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let services = self.services();
                let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                ServeError::not_found(format!(
                    "no service named {name:?} (this server has: {})",
                    known.join(", ")
                ))
            })
    }

    /// Routing plus authentication, for metadata calls.
    pub fn authorize(
        &self,
        target: &Target,
        key: Option<&ApiKey>,
    ) -> Result<Arc<Service>, ServeError> {
        let service = self.route(target)?;
        service.keys.check(key)?;
        Ok(service)
    }

    /// Runs one inference request end to end, counting it in the metrics
    /// and logging it (at debug level) under a request id.
    pub async fn infer(&self, req: InferRequest) -> Result<InferResponse, ServeError> {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let protocol = req.protocol.label();
        let service_name = self
            .route(&req.target)
            .map(|s| s.name.clone())
            .unwrap_or_else(|_| "unknown".into());
        let span = tracing::debug_span!("request", request_id, service = %service_name, protocol);
        let result = tracing::Instrument::instrument(self.infer_inner(req), span.clone()).await;
        let code = code_label(result.as_ref().err().map(|e| e.kind));
        self.metrics.count(&service_name, protocol, code);
        let _entered = span.enter();
        match &result {
            Ok(r) => tracing::debug!(
                request_id,
                code,
                elapsed_ms = r.arrived.elapsed().as_secs_f64() * 1e3,
                "answered"
            ),
            Err(e) => tracing::debug!(request_id, code, error = %e.message, "failed"),
        }
        result
    }

    async fn infer_inner(&self, req: InferRequest) -> Result<InferResponse, ServeError> {
        let arrived = Instant::now();
        let deadline = req.timeout.map(|t| arrived + t);
        if req.timeout.is_some_and(|t| t.is_zero()) {
            return Err(deadline_exceeded());
        }
        let service = self.authorize(&req.target, req.api_key.as_ref())?;
        let input = validate_inputs(&service, req.inputs)?;
        let outputs = select_outputs(&service, &req.output_filter)?;
        let permit = self.admission.try_admit()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            service: Arc::clone(&service),
            arrived,
            deadline,
            reply: Arc::new(ReplySlot::new(tx, permit)),
        };
        match (input, &self.preprocess) {
            (Input::Images(images), Some(pool)) => {
                let engine = Arc::clone(&self.executor);
                pool.submit(move || job.preprocess_then_queue(images, &engine))?;
            }
            (input, _) => self.executor.submit(move || job.run(input))?,
        }
        let answer = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), rx)
                .await
                .map_err(|_| deadline_exceeded())?,
            None => rx.await,
        };
        let (raw, mut times) = answer
            .map_err(|_| ServeError::new(ErrorKind::Internal, "the engine worker stopped"))??;
        times.total = arrived.elapsed();
        self.metrics.observe(&service.name, &times);
        let outputs = outputs
            .into_iter()
            .map(|(label, ix)| (label, raw[ix].clone()))
            .collect();
        Ok(InferResponse {
            service: service.name.clone(),
            version: service.version,
            outputs,
            arrived,
            times,
        })
    }
}

pub(crate) fn deadline_exceeded() -> ServeError {
    ServeError::new(
        ErrorKind::DeadlineExceeded,
        "deadline exceeded before the model ran",
    )
}

/// The model-ready input after validation.
pub(crate) enum Input {
    Images(Vec<Vec<u8>>),
    Tensor(accel_core::Tensor),
}

pub(crate) fn validate_inputs(
    service: &Service,
    inputs: Vec<NamedInput>,
) -> Result<Input, ServeError> {
    let names = service.input_names();
    let mut inputs = inputs.into_iter();
    let (Some(input), None) = (inputs.next(), inputs.next()) else {
        return Err(ServeError::invalid(format!(
            "expected exactly one input, named {:?} (or one of {:?})",
            names[0],
            &names[1..]
        )));
    };
    if !names.contains(&input.name.as_str()) {
        return Err(ServeError::invalid(format!(
            "unknown input {:?}; this model takes {:?} (aliases: {:?})",
            input.name,
            names[0],
            &names[1..]
        )));
    }
    if !service.takes_images() {
        service.pipeline.check_input(&input.tensor)?;
        return Ok(Input::Tensor(input.tensor));
    }
    if input.tensor.dtype() != DType::String {
        return Err(ServeError::invalid(format!(
            "input {:?} takes encoded images as a string (DT_STRING / BYTES) tensor, got dtype {}",
            input.name,
            input.tensor.dtype()
        )));
    }
    let shape = input.tensor.shape().to_vec();
    if shape.len() != 1 {
        return Err(ServeError::invalid(format!(
            "input {:?} must have shape [N] (one encoded image per element), got shape {shape:?}",
            input.name
        )));
    }
    let max = service.pipeline.limits().max_batch;
    if shape[0] == 0 || shape[0] > max {
        return Err(ServeError::invalid(format!(
            "batch of {} images is outside the allowed 1..={max}",
            shape[0]
        )));
    }
    let (_, data) = input.tensor.into_parts();
    let TensorData::String(images) = data else {
        unreachable!("dtype checked above")
    };
    Ok(Input::Images(images))
}

/// Which pipeline outputs to return, each labelled with the name the client
/// asked for (or the first alias / the model's name when it asked for none).
fn select_outputs(
    service: &Service,
    filter: &[String],
) -> Result<Vec<(String, usize)>, ServeError> {
    let outputs = service.pipeline.output_infos();
    if filter.is_empty() {
        return Ok(outputs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                (
                    o.aliases.first().cloned().unwrap_or_else(|| o.name.clone()),
                    i,
                )
            })
            .collect());
    }
    filter
        .iter()
        .map(|want| {
            outputs
                .iter()
                .position(|o| &o.name == want || o.aliases.contains(want))
                .map(|i| (want.clone(), i))
                .ok_or_else(|| {
                    let have: Vec<String> = outputs
                        .iter()
                        .flat_map(|o| {
                            std::iter::once(o.name.clone()).chain(o.aliases.iter().cloned())
                        })
                        .collect();
                    ServeError::invalid(format!("unknown output {want:?}; this model has {have:?}"))
                })
        })
        .collect()
}

#[cfg(test)]
mod pipeline_tests {
    use super::*;
    use accel_core::spec::Preset;
    use accel_core::{DType, Tensor};
    use accel_runtime::onnx_info::ModelIo;
    use accel_runtime::pipeline::resolve_spec;
    use accel_runtime::{EngineKind, Limits, Plan, RuntimeError, TensorInfo};
    use std::time::Duration;

    const PHOTO: &[u8] = include_bytes!("../../../fixtures/images/sklearn_china.jpg");

    /// Sums its (preprocessed) input slowly, to keep the engine busy.
    struct SlowSum(Vec<TensorInfo>, Vec<TensorInfo>);

    impl Plan for SlowSum {
        fn engine(&self) -> EngineKind {
            EngineKind::Tract
        }
        fn inputs(&self) -> &[TensorInfo] {
            &self.0
        }
        fn outputs(&self) -> &[TensorInfo] {
            &self.1
        }
        fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
            std::thread::sleep(Duration::from_millis(300));
            let sum = inputs[0].as_f32().unwrap().iter().sum::<f32>();
            Ok(vec![Tensor::from_f32(vec![1, 2], vec![sum, 0.0]).unwrap()])
        }
    }

    /// One engine worker, two preprocessing workers, `queue` places to wait.
    fn image_core(queue: usize) -> Arc<RequestCore> {
        let input = TensorInfo {
            name: "data".into(),
            dtype: DType::F32,
            shape: vec![Some(1), Some(3), Some(224), Some(224)],
        };
        let output = TensorInfo {
            name: "logits".into(),
            dtype: DType::F32,
            shape: vec![Some(1), Some(2)],
        };
        let io = ModelIo {
            inputs: vec![input.clone()],
            outputs: vec![output.clone()],
            opsets: vec![],
        };
        let mut spec = resolve_spec(Preset::Torchvision.spec(), &io).unwrap();
        spec.outputs[0].softmax = false;
        let plan = SlowSum(vec![input], vec![output]);
        let pipeline = CompiledPipeline::new(Box::new(plan), spec, None, Limits::default());
        let service = Service {
            name: "svc".into(),
            model_name: "m".into(),
            version: 1,
            pipeline: Arc::new(pipeline.unwrap()),
            keys: ServiceKeys::new("svc", &[], None),
        };
        let admission = Admission::new(1 + 2, queue);
        let core = RequestCore::new(
            vec![service],
            Executor::new(1, admission.limit()),
            Arc::new(Metrics::new()),
        )
        .with_preprocess_pool(Executor::new(2, admission.limit()))
        .with_admission(admission);
        core.warm_up().unwrap();
        Arc::new(core)
    }

    fn photo_request() -> InferRequest {
        InferRequest {
            protocol: crate::request::Protocol::TfsGrpc,
            target: Target::default(),
            api_key: None,
            inputs: vec![NamedInput {
                name: "images".into(),
                tensor: Tensor::new(vec![1], TensorData::String(vec![PHOTO.to_vec()])).unwrap(),
            }],
            output_filter: vec![],
            timeout: None,
        }
    }

    /// Through the preprocessing pool, answers equal the engine-only path's.
    /// Admission is decided once, on arrival: with no place to wait, three
    /// workers take exactly three of five simultaneous requests, the other
    /// two are refused at once, and no admitted request is refused at the
    /// hand-off to the (busy) engine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admission_is_decided_on_arrival_and_admitted_requests_are_answered() {
        let core = image_core(0);
        let requests: Vec<_> = (0..5)
            .map(|_| {
                let core = Arc::clone(&core);
                tokio::spawn(async move { core.infer(photo_request()).await })
            })
            .collect();
        // Mid-way (each inference takes 300 ms) the gauges show the three.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = core.render_metrics();
        assert!(text.contains("\naccel_requests_in_flight 3\n"), "{text}");
        assert!(text.contains("\naccel_admission_limit 3\n"), "{text}");
        let mut ok = Vec::new();
        let mut refused = 0;
        for r in join_all(requests).await {
            match r {
                Ok(resp) => ok.push(resp.outputs[0].1.tensor.as_f32().unwrap()[0]),
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::ResourceExhausted, "{}", e.message);
                    assert!(e.message.contains("3 requests in progress and 0 may wait"));
                    refused += 1;
                }
            }
        }
        assert_eq!((ok.len(), refused), (3, 2), "each inference takes 300 ms");
        assert_eq!(core.admission().in_flight(), 0, "every place given back");
        // Same sum as decoding on the engine worker.
        let direct = {
            let refs: Vec<&[u8]> = vec![PHOTO];
            let t = core.services()[0].pipeline.preprocess(&refs).unwrap();
            t.as_f32().unwrap().iter().sum::<f32>()
        };
        assert!(ok.iter().all(|s| *s == direct), "{ok:?} vs {direct}");
    }

    /// Closed-loop clients no more numerous than the bound are never
    /// refused: the place is free before the answer reaches the client.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_within_the_bound_are_never_refused() {
        let core = image_core(0);
        let clients: Vec<_> = (0..3)
            .map(|_| {
                let core = Arc::clone(&core);
                tokio::spawn(async move {
                    let mut refused = 0;
                    for _ in 0..3 {
                        if core.infer(photo_request()).await.is_err() {
                            refused += 1;
                        }
                    }
                    refused
                })
            })
            .collect();
        let refused: i32 = join_all(clients).await.into_iter().sum();
        assert_eq!(refused, 0);
    }

    async fn join_all<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}

//! One admitted request on its way through the worker pools: decoding on
//! the preprocessing pool (when there is one), then the engine, with the
//! stage times and the deadline checked at each hand-off. The answer goes
//! through a shared reply slot, so a stage that cannot hand a job on (the
//! server is shutting down) still answers for it. The slot holds the
//! request's admission permit and gives it back just before the answer is
//! sent, so a client that sends its next request on receiving an answer
//! finds the place free.

use crate::admission::Permit;
use crate::core::{deadline_exceeded, Input, Service};
use crate::error::ServeError;
use crate::executor::Executor;
use crate::metrics::StageTimes;
use accel_runtime::pipeline::{Batch, NamedOutput};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub(crate) type Reply = Result<(Vec<NamedOutput>, StageTimes), ServeError>;

/// Where a request's answer goes: shared, so that a stage that could not
/// hand a job on can still answer for it. Dropping it unanswered gives the
/// permit back too.
pub(crate) struct ReplySlot(Mutex<Option<(oneshot::Sender<Reply>, Permit)>>);

impl ReplySlot {
    pub(crate) fn new(tx: oneshot::Sender<Reply>, permit: Permit) -> Self {
        ReplySlot(Mutex::new(Some((tx, permit))))
    }

    /// Frees the request's admission place, then answers (once).
    pub(crate) fn send(&self, reply: Reply) {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((tx, permit)) = slot {
            drop(permit);
            let _ = tx.send(reply);
        }
    }
}

/// One admitted request on its way through the worker pools.
pub(crate) struct Job {
    pub(crate) service: Arc<Service>,
    pub(crate) arrived: Instant,
    pub(crate) deadline: Option<Instant>,
    pub(crate) reply: Arc<ReplySlot>,
}

impl Job {
    /// Answers DEADLINE_EXCEEDED when the deadline passed before `now`;
    /// true when it did (the stage must then stop).
    fn answered_late(&self, now: Instant) -> bool {
        let late = self.deadline.is_some_and(|d| now >= d);
        if late {
            self.reply.send(Err(deadline_exceeded()));
        }
        late
    }

    /// First stage on the preprocessing pool: decode, then queue the
    /// model-ready tensor for an engine worker.
    pub(crate) fn preprocess_then_queue(self, images: Vec<Vec<u8>>, engine: &Executor) {
        let started = Instant::now();
        if self.answered_late(started) {
            return;
        }
        let tensor = match self.preprocess(&images) {
            Ok(t) => t,
            Err(e) => {
                self.reply.send(Err(e));
                return;
            }
        };
        let preprocessed = Instant::now();
        let waited = started - self.arrived;
        let reply = Arc::clone(&self.reply);
        let queued = engine.submit(move || {
            let engine_start = Instant::now();
            let queue_wait = waited + (engine_start - preprocessed);
            self.run_tensor(tensor, engine_start, queue_wait, preprocessed - started)
        });
        // A job refused here (shutting down) was dropped unrun: answer
        // through the shared slot.
        if let Err(e) = queued {
            reply.send(Err(e));
        }
    }

    /// Decodes and preprocesses the request's images into the model's input.
    fn preprocess(&self, images: &[Vec<u8>]) -> Result<Batch, ServeError> {
        let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
        Ok(self.service.pipeline.preprocess_batch(&refs)?)
    }

    /// Both stages on an engine worker.
    pub(crate) fn run(self, input: Input) {
        let started = Instant::now();
        if self.answered_late(started) {
            return;
        }
        let tensor = match input {
            Input::Images(images) => self.preprocess(&images),
            Input::Tensor(tensor) => Ok(Batch {
                tensor,
                sources: vec![],
            }),
        };
        let tensor = match tensor {
            Ok(t) => t,
            Err(e) => {
                self.reply.send(Err(e));
                return;
            }
        };
        let preprocessed = Instant::now();
        let queue_wait = started - self.arrived;
        self.run_tensor(tensor, preprocessed, queue_wait, preprocessed - started)
    }

    /// The engine stage.
    fn run_tensor(
        self,
        tensor: Batch,
        started: Instant,
        queue_wait: Duration,
        preprocess: Duration,
    ) {
        if self.answered_late(started) {
            return;
        }
        let result = self
            .service
            .pipeline
            .infer_batch(&tensor)
            .map_err(ServeError::from);
        let times = StageTimes {
            queue_wait,
            preprocess,
            inference: started.elapsed(),
            total: Duration::ZERO,
        };
        self.reply.send(result.map(|o| (o, times)));
    }
}

//! Engine work runs on dedicated worker threads, never on the async
//! runtime's. Each pool has a bounded queue; the server sizes it to its
//! admission bound ([`crate::admission`]), so an admitted request always
//! finds room. A full queue still refuses at once (RESOURCE_EXHAUSTED / 429)
//! rather than block the caller.

use crate::error::ServeError;
use accel_core::ErrorKind;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed pool of worker threads fed by a bounded queue.
pub struct Executor {
    sender: Mutex<Option<SyncSender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    threads: usize,
    capacity: usize,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("threads", &self.threads)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Executor {
    /// Starts `workers` engine threads with room for `queue` waiting jobs.
    pub fn new(workers: usize, queue: usize) -> Arc<Self> {
        Self::named("accel-engine", workers, queue)
    }

    /// Like [`Executor::new`], naming the threads `{name}-{i}`.
    pub fn named(name: &str, workers: usize, queue: usize) -> Arc<Self> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let threads = workers.max(1);
        let handles = (0..threads)
            .map(|i| {
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || loop {
                        let job = {
                            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
                            guard.recv()
                        };
                        match job {
                            // A panicking job drops its reply channel (the
                            // caller gets INTERNAL); the worker lives on.
                            Ok(job) => {
                                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                                    .is_err()
                                {
                                    tracing::error!("an engine job panicked");
                                }
                            }
                            Err(_) => break,
                        }
                    })
                    .expect("spawning an engine worker thread")
            })
            .collect();
        Arc::new(Executor {
            sender: Mutex::new(Some(tx)),
            workers: Mutex::new(handles),
            threads,
            capacity: queue,
        })
    }

    /// The worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The jobs that may wait in the queue.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `job`, or refuses at once when the queue is full.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), ServeError> {
        let guard = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(ServeError::new(
                ErrorKind::Unavailable,
                "the server is shutting down",
            ));
        };
        match tx.try_send(Box::new(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ServeError::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "server overloaded: the request queue is full ({} waiting); retry later",
                    self.capacity
                ),
            )),
            Err(TrySendError::Disconnected(_)) => Err(ServeError::new(
                ErrorKind::Unavailable,
                "the server is shutting down",
            )),
        }
    }

    /// Stops accepting work, lets queued jobs finish, and joins the workers.
    pub fn shutdown(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        let handles = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn a_full_queue_refuses_at_once_and_work_still_completes() {
        let ex = Executor::new(1, 2);
        let (gate_tx, gate_rx) = channel::<()>();
        let gate = Arc::new(Mutex::new(gate_rx));
        let (done_tx, done_rx) = channel::<usize>();
        // One running (blocked on the gate) + two queued fill everything.
        for i in 0..3 {
            let gate = Arc::clone(&gate);
            let done = done_tx.clone();
            ex.submit(move || {
                let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(5));
                done.send(i).unwrap();
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let err = ex.submit(|| {}).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ResourceExhausted);
        for _ in 0..3 {
            gate_tx.send(()).unwrap();
        }
        let mut got: Vec<usize> = (0..3)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, [0, 1, 2]);
        ex.shutdown();
        assert_eq!(ex.submit(|| {}).unwrap_err().kind, ErrorKind::Unavailable);
    }

    #[test]
    fn a_panicking_job_does_not_kill_its_worker() {
        let ex = Executor::new(1, 4);
        let (done_tx, done_rx) = channel::<usize>();
        ex.submit(|| panic!("boom")).unwrap();
        ex.submit(move || done_tx.send(7).unwrap()).unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
        ex.shutdown();
    }
}

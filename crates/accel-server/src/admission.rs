//! Admission: ONE bound on the requests inside the server, checked once when
//! a request arrives. An admitted request is never refused later: the
//! hand-off from the preprocessing pool to the engine waits its turn, since
//! the bound already limits how long that can be. A request that finds the
//! server full is refused at once (RESOURCE_EXHAUSTED / 429).
//!
//! The bound is `workers + preprocess workers + queue`: with `--queue 0` a
//! request is admitted only when a worker of each stage can take it, so an
//! accepted request waits at most for the one inference ahead of it.

use crate::error::ServeError;
use accel_core::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The count of admitted requests and its bound.
#[derive(Debug)]
pub struct Admission {
    in_flight: AtomicUsize,
    limit: usize,
    waiting: usize,
}

/// One admitted request's place; given back when dropped (when its answer
/// is sent, or when the request is dropped unanswered).
#[derive(Debug)]
pub struct Permit(Arc<Admission>);

impl Admission {
    /// Room for `workers` requests being worked on and `waiting` more.
    pub fn new(workers: usize, waiting: usize) -> Arc<Self> {
        Arc::new(Admission {
            in_flight: AtomicUsize::new(0),
            limit: workers.max(1) + waiting,
            waiting,
        })
    }

    /// The most requests admitted at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests admitted now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Admits one request, or refuses it at once when the server is full.
    pub fn try_admit(self: &Arc<Self>) -> Result<Permit, ServeError> {
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            });
        match admitted {
            Ok(_) => Ok(Permit(Arc::clone(self))),
            Err(_) => Err(ServeError::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "server overloaded: {} requests in progress and {} may wait; retry later",
                    self.limit - self.waiting,
                    self.waiting
                ),
            )),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_bound_and_frees_a_place_on_drop() {
        let a = Admission::new(2, 1);
        assert_eq!(a.limit(), 3);
        let mut permits: Vec<Permit> = (0..3).map(|_| a.try_admit().unwrap()).collect();
        let err = a.try_admit().unwrap_err();
        assert_eq!(err.kind, ErrorKind::ResourceExhausted);
        assert!(err
            .message
            .contains("2 requests in progress and 1 may wait"));
        drop(permits.pop());
        assert_eq!(a.in_flight(), 2);
        let _again = a.try_admit().unwrap();
        assert_eq!(a.in_flight(), 3);
    }

    #[test]
    fn never_admits_more_than_the_bound_from_many_threads() {
        let a = Admission::new(1, 2);
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (a, peak) = (Arc::clone(&a), Arc::clone(&peak));
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if let Ok(p) = a.try_admit() {
                            peak.fetch_max(a.in_flight(), Ordering::AcqRel);
                            drop(p);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Acquire) <= 3);
        assert_eq!(a.in_flight(), 0);
    }
}

//! Turning the recorded requests into the report's figures: latency of
//! accepted answers, errors, shed requests and their latency, malformed
//! requests and how they were answered, checked answers, per-interval
//! percentiles. Pure: no I/O, no clock.

use super::mix::{Slot, MALFORMED_KINDS};
use super::timing::StageSamples;
use super::{percentile, Percentiles};
use std::collections::BTreeMap;

/// A good answer: the server's `server-timing` value (if any) and, when
/// answers are checked, the answer's top-1 index (if one could be read).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Answer {
    pub server_timing: Option<String>,
    pub top1: Option<usize>,
}

/// One request's result: an answer, else the error's key in
/// [`super::BenchReport::errors_by_status`].
pub(super) type Outcome = Result<Answer, String>;

/// What one measured request recorded.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    /// What it carried.
    pub slot: Slot,
    /// When it was sent, seconds after the measured phase began.
    pub start_s: f64,
    /// Latency, ms.
    pub ms: f64,
    pub result: Outcome,
    /// Open loop: how late it was sent against its schedule, ms.
    pub lag_ms: Option<f64>,
}

/// Whether an error key is a load-shedding refusal (RESOURCE_EXHAUSTED / 429).
pub fn is_shed(key: &str) -> bool {
    key == "ResourceExhausted" || key == "HTTP 429"
}

/// Whether an error key is an invalid-input refusal (INVALID_ARGUMENT / 400).
pub fn is_invalid_argument(key: &str) -> bool {
    key == "InvalidArgument" || key == "HTTP 400"
}

/// Malformed requests and how they were answered.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MalformedReport {
    /// Malformed requests sent.
    pub sent: usize,
    /// Refused as invalid (INVALID_ARGUMENT / HTTP 400), as they must be.
    pub refused: usize,
    /// Shed before being looked at (RESOURCE_EXHAUSTED / 429): no failure.
    pub shed: usize,
    /// Anything else (answered OK, a server error, unavailable, transport
    /// failure): failures.
    pub unexpected: usize,
    /// Every answer by status (`OK` for an answer).
    pub by_status: BTreeMap<String, usize>,
    /// Sent, by kind.
    pub by_kind: BTreeMap<String, usize>,
}

/// Answers checked against a reference top-1, per image.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AnswerReport {
    /// Good answers whose top-1 was compared.
    pub checked: usize,
    /// Of which had another top-1 than the reference.
    pub wrong: usize,
    /// Good answers whose top-1 could not be read (no float output).
    pub unreadable: usize,
    /// The reference top-1 of each image (given, or the first good answer's).
    pub reference_top1: Vec<Option<usize>>,
}

/// One interval of the measured phase (by send time).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IntervalReport {
    /// Start, seconds after the measured phase began.
    pub start_s: f64,
    /// Requests sent in it (malformed included).
    pub requests: usize,
    /// Good requests answered.
    pub ok: usize,
    /// Good requests shed.
    pub shed: usize,
    /// Good requests failed otherwise.
    pub errors: usize,
    /// Malformed requests sent in it.
    pub malformed: usize,
    /// Latency of the good answers, ms.
    pub p50_ms: f64,
    /// Latency of the good answers, ms.
    pub p99_ms: f64,
}

/// Everything counted.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Every measured request sent.
    pub total: usize,
    /// Latencies of good answers, sorted.
    pub ok_ms: Vec<f64>,
    /// Latencies of shed good requests, sorted.
    pub shed_ms: Vec<f64>,
    /// Open loop: send lateness, sorted.
    pub lag_ms: Vec<f64>,
    /// Good requests not answered, by key.
    pub errors_by_status: BTreeMap<String, usize>,
    pub stages: StageSamples,
    pub malformed: MalformedReport,
    pub answers: AnswerReport,
    pub intervals: Vec<IntervalReport>,
}

impl Tally {
    /// Good requests not answered (shed included).
    pub fn errors(&self) -> usize {
        self.errors_by_status.values().sum()
    }

    /// Good requests shed.
    pub fn shed(&self) -> usize {
        self.shed_ms.len()
    }
}

/// Counts `samples` (any order; they are sorted by send time, so "first
/// answer" means first sent). `expect`: the reference top-1, one for every
/// image or one per image; empty: the first good answer of each image.
/// `interval_s`: the length of the per-interval report, if any.
pub(super) fn tally(
    mut samples: Vec<Sample>,
    images: usize,
    expect: &[usize],
    interval_s: Option<f64>,
) -> Tally {
    samples.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let mut t = Tally {
        total: samples.len(),
        ..Tally::default()
    };
    t.answers.reference_top1 = (0..images)
        .map(|i| match expect {
            [] => None,
            [one] => Some(*one),
            many => many.get(i).copied(),
        })
        .collect();
    let mut buckets: BTreeMap<usize, (IntervalReport, Vec<f64>)> = BTreeMap::new();
    for s in samples {
        let bucket = match interval_s {
            Some(len) => {
                let k = (s.start_s.max(0.0) / len) as usize;
                Some(buckets.entry(k).or_insert_with(|| {
                    let r = IntervalReport {
                        start_s: k as f64 * len,
                        requests: 0,
                        ok: 0,
                        shed: 0,
                        errors: 0,
                        malformed: 0,
                        p50_ms: f64::NAN,
                        p99_ms: f64::NAN,
                    };
                    (r, Vec::new())
                }))
            }
            None => None,
        };
        if let Some(lag) = s.lag_ms {
            t.lag_ms.push(lag);
        }
        match s.slot {
            Slot::Malformed(k) => {
                let m = &mut t.malformed;
                m.sent += 1;
                let kind = serde_json::to_value(MALFORMED_KINDS[k])
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                *m.by_kind.entry(kind).or_insert(0) += 1;
                let key = match &s.result {
                    Ok(_) => "OK",
                    Err(key) => key.as_str(),
                };
                *m.by_status.entry(key.to_string()).or_insert(0) += 1;
                match &s.result {
                    Err(key) if is_invalid_argument(key) => m.refused += 1,
                    Err(key) if is_shed(key) => m.shed += 1,
                    _ => m.unexpected += 1,
                }
                if let Some((r, _)) = bucket {
                    r.requests += 1;
                    r.malformed += 1;
                }
            }
            Slot::Good(image) => {
                match &s.result {
                    Ok(answer) => {
                        t.ok_ms.push(s.ms);
                        if let Some(v) = &answer.server_timing {
                            t.stages.add(v);
                        }
                        if let Some((r, lat)) = bucket {
                            r.requests += 1;
                            r.ok += 1;
                            lat.push(s.ms);
                        }
                    }
                    Err(key) => {
                        *t.errors_by_status.entry(key.clone()).or_insert(0) += 1;
                        let shed = is_shed(key);
                        if shed {
                            t.shed_ms.push(s.ms);
                        }
                        if let Some((r, _)) = bucket {
                            r.requests += 1;
                            if shed {
                                r.shed += 1;
                            } else {
                                r.errors += 1;
                            }
                        }
                    }
                }
                if let Ok(answer) = &s.result {
                    check(&mut t.answers, image, answer.top1);
                }
            }
        }
    }
    t.ok_ms.sort_by(f64::total_cmp);
    t.shed_ms.sort_by(f64::total_cmp);
    t.lag_ms.sort_by(f64::total_cmp);
    t.intervals = buckets
        .into_values()
        .map(|(mut r, mut lat)| {
            lat.sort_by(f64::total_cmp);
            r.p50_ms = percentile(&lat, 50.0);
            r.p99_ms = percentile(&lat, 99.0);
            r
        })
        .collect();
    t
}

fn check(a: &mut AnswerReport, image: usize, top1: Option<usize>) {
    let Some(top1) = top1 else {
        a.unreadable += 1;
        return;
    };
    if a.reference_top1.len() <= image {
        a.reference_top1.resize(image + 1, None);
    }
    let reference = a.reference_top1[image].get_or_insert(top1);
    a.checked += 1;
    if *reference != top1 {
        a.wrong += 1;
    }
}

/// p50/p90/p99/p99.9/max of sorted `v`.
pub(super) fn percentiles(v: &[f64]) -> Percentiles {
    Percentiles {
        p50: percentile(v, 50.0),
        p90: percentile(v, 90.0),
        p99: percentile(v, 99.0),
        p999: percentile(v, 99.9),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(slot: Slot, start_s: f64, ms: f64, top1: usize) -> Sample {
        Sample {
            slot,
            start_s,
            ms,
            result: Ok(Answer {
                server_timing: None,
                top1: Some(top1),
            }),
            lag_ms: None,
        }
    }

    fn err(slot: Slot, start_s: f64, ms: f64, key: &str) -> Sample {
        Sample {
            slot,
            start_s,
            ms,
            result: Err(key.into()),
            lag_ms: Some(0.5),
        }
    }

    #[test]
    fn shed_and_accepted_are_counted_apart() {
        let mut v = Vec::new();
        for i in 0..100 {
            v.push(ok(Slot::Good(0), i as f64 * 0.01, 10.0 + i as f64, 7));
        }
        for i in 0..50 {
            v.push(err(Slot::Good(0), 0.5, 1.0 + i as f64, "ResourceExhausted"));
        }
        v.push(err(Slot::Good(0), 0.6, 100.0, "HTTP 429"));
        v.push(err(Slot::Good(0), 0.7, 60000.0, "DeadlineExceeded"));
        let t = tally(v, 1, &[], None);
        assert_eq!(t.total, 152);
        assert_eq!(t.ok_ms.len(), 100);
        assert_eq!(t.shed(), 51);
        assert_eq!(t.errors(), 52);
        assert_eq!(t.errors_by_status["ResourceExhausted"], 50);
        assert_eq!(t.errors_by_status["DeadlineExceeded"], 1);
        // Accepted percentiles see only answers; shed ones only sheds.
        assert_eq!(percentile(&t.ok_ms, 50.0), 59.0);
        assert_eq!(percentile(&t.ok_ms, 99.0), 108.0);
        assert_eq!(percentile(&t.shed_ms, 50.0), 26.0);
        assert_eq!(t.shed_ms.last(), Some(&100.0));
        assert_eq!(t.lag_ms.len(), 52);
        assert_eq!(t.answers.checked, 100);
        assert_eq!(t.answers.wrong, 0);
    }

    #[test]
    fn malformed_answers_are_judged_by_code() {
        let v = vec![
            err(Slot::Malformed(0), 0.0, 1.0, "InvalidArgument"),
            err(Slot::Malformed(1), 0.1, 1.0, "HTTP 400"),
            err(Slot::Malformed(2), 0.2, 1.0, "ResourceExhausted"),
            err(Slot::Malformed(3), 0.3, 1.0, "Internal"),
            ok(Slot::Malformed(3), 0.4, 1.0, 1),
            err(Slot::Malformed(0), 0.5, 1.0, "connection error"),
            ok(Slot::Good(0), 0.6, 5.0, 1),
        ];
        let t = tally(v, 1, &[], None);
        let m = &t.malformed;
        assert_eq!((m.sent, m.refused, m.shed, m.unexpected), (6, 2, 1, 3));
        assert_eq!(m.by_status["OK"], 1);
        assert_eq!(m.by_kind["huge-png"], 2);
        assert_eq!(m.by_kind["truncated-image"], 2);
        // Malformed requests are not errors of the good ones.
        assert_eq!(t.errors(), 0);
        assert_eq!(t.ok_ms, vec![5.0]);
        assert_eq!(t.answers.checked, 1);
    }

    #[test]
    fn answers_are_checked_per_image_against_the_first_or_the_given() {
        let v = vec![
            ok(Slot::Good(1), 0.3, 1.0, 5),
            ok(Slot::Good(0), 0.0, 1.0, 3), // first sent for image 0
            ok(Slot::Good(0), 0.1, 1.0, 4),
            ok(Slot::Good(1), 0.2, 1.0, 5), // first sent for image 1
            ok(Slot::Good(0), 0.4, 1.0, 3),
            Sample {
                result: Ok(Answer::default()),
                ..ok(Slot::Good(0), 0.5, 1.0, 0)
            },
        ];
        let t = tally(v.clone(), 2, &[], None);
        assert_eq!(t.answers.reference_top1, vec![Some(3), Some(5)]);
        assert_eq!((t.answers.checked, t.answers.wrong), (5, 1));
        assert_eq!(t.answers.unreadable, 1);
        let t = tally(v.clone(), 2, &[4], None);
        assert_eq!(t.answers.reference_top1, vec![Some(4), Some(4)]);
        assert_eq!(t.answers.wrong, 4);
        let t = tally(v, 2, &[3, 5], None);
        assert_eq!(t.answers.wrong, 1);
    }

    #[test]
    fn per_interval_percentiles() {
        let mut v = Vec::new();
        for i in 0..200 {
            let s = i as f64 * 0.1; // 20 s, 10 a second
            let ms = if s < 10.0 { 5.0 } else { 50.0 };
            v.push(ok(Slot::Good(0), s, ms + (i % 10) as f64, 0));
        }
        v.push(err(Slot::Good(0), 12.0, 1.0, "ResourceExhausted"));
        v.push(err(Slot::Malformed(1), 3.0, 1.0, "InvalidArgument"));
        let t = tally(v, 1, &[], Some(10.0));
        assert_eq!(t.intervals.len(), 2);
        let (a, b) = (&t.intervals[0], &t.intervals[1]);
        assert_eq!(
            (a.start_s, a.requests, a.ok, a.malformed),
            (0.0, 101, 100, 1)
        );
        assert_eq!((a.p50_ms, a.p99_ms), (9.0, 14.0));
        assert_eq!((b.start_s, b.ok, b.shed, b.errors), (10.0, 100, 1, 0));
        assert_eq!((b.p50_ms, b.p99_ms), (54.0, 59.0));
        assert!(tally(Vec::new(), 1, &[], Some(1.0)).intervals.is_empty());
    }
}

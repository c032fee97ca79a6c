//! The server's own account of a request: the W3C `Server-Timing` header
//! (HTTP) or `server-timing` initial metadata (gRPC), e.g.
//! `queue;dur=0.05, preprocess;dur=2.1, infer;dur=25.3, total;dur=27.6`.

use super::percentile;
use serde::ser::{SerializeMap, Serializer};
use std::collections::HashMap;

/// The `(name, milliseconds)` of each metric of a `Server-Timing` value
/// that has a `dur`, in order; metrics without one are skipped, and so is
/// anything that does not parse.
pub fn parse_server_timing(value: &str) -> Vec<(String, f64)> {
    value
        .split(',')
        .filter_map(|metric| {
            let mut params = metric.split(';');
            let name = params.next()?.trim();
            if name.is_empty() {
                return None;
            }
            let dur = params.find_map(|p| {
                let (k, v) = p.split_once('=')?;
                if !k.trim().eq_ignore_ascii_case("dur") {
                    return None;
                }
                v.trim().trim_matches('"').parse::<f64>().ok()
            })?;
            dur.is_finite().then(|| (name.to_string(), dur))
        })
        .collect()
}

/// Per-stage samples, stages kept in the order they first appeared.
#[derive(Debug, Default)]
pub(super) struct StageSamples {
    order: Vec<String>,
    samples: HashMap<String, Vec<f64>>,
}

impl StageSamples {
    pub(super) fn add(&mut self, value: &str) {
        for (name, ms) in parse_server_timing(value) {
            let v = self.samples.entry(name.clone()).or_insert_with(|| {
                self.order.push(name);
                Vec::new()
            });
            v.push(ms);
        }
    }

    /// p50/p99 per stage; `None` when the server sent nothing.
    pub(super) fn summary(mut self) -> Option<StagePercentiles> {
        if self.order.is_empty() {
            return None;
        }
        let stages = self
            .order
            .into_iter()
            .map(|name| {
                let mut v = self.samples.remove(&name).unwrap_or_default();
                v.sort_by(f64::total_cmp);
                let s = StageStats {
                    p50: percentile(&v, 50.0),
                    p99: percentile(&v, 99.0),
                    samples: v.len(),
                };
                (name, s)
            })
            .collect();
        Some(StagePercentiles(stages))
    }
}

/// One stage's percentiles, in milliseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageStats {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Answers that reported this stage.
    pub samples: usize,
}

/// Each stage the server reported, in its order; serialized as a JSON
/// object `{"queue": {"p50": .., "p99": ..}, ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePercentiles(pub Vec<(String, StageStats)>);

impl serde::Serialize for StagePercentiles {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, stats) in &self.0 {
            map.serialize_entry(name, stats)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_values_parse_leniently() {
        assert_eq!(
            parse_server_timing(
                "queue;dur=0.05, preprocess;dur=2.10, infer;dur=25.3, total;dur=27.6"
            ),
            vec![
                ("queue".to_string(), 0.05),
                ("preprocess".to_string(), 2.1),
                ("infer".to_string(), 25.3),
                ("total".to_string(), 27.6)
            ]
        );
        // Descriptions, quoted durations, metrics without a duration, junk.
        assert_eq!(
            parse_server_timing("cache;desc=\"Cache Read\";dur=\"23.2\", miss, db;dur=x, ;dur=1"),
            vec![("cache".to_string(), 23.2)]
        );
        assert!(parse_server_timing("").is_empty());
    }

    #[test]
    fn stages_keep_the_servers_order_and_serialize_as_an_object() {
        let mut s = StageSamples::default();
        assert!(StageSamples::default().summary().is_none());
        for i in 1..=100 {
            s.add(&format!("queue;dur={i}, infer;dur=2"));
        }
        s.add("infer;dur=3");
        let summary = s.summary().unwrap();
        let names: Vec<&str> = summary.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["queue", "infer"]);
        assert_eq!(summary.0[0].1.p50, 50.0);
        assert_eq!(summary.0[0].1.p99, 99.0);
        assert_eq!(summary.0[1].1.samples, 101);
        let json = serde_json::to_string(&summary).unwrap();
        assert!(
            json.starts_with("{\"queue\":{\"p50\":50.0,\"p99\":99.0"),
            "{json}"
        );
    }
}

//! Measuring a candidate: its outputs against the float reference's, and its
//! batch-1 latency.

use crate::ConvertError;
use accel_core::{Tensor, TensorData};
use accel_runtime::engine::Plan;
use accel_runtime::postprocess::top_k;
use std::time::{Duration, Instant};

/// Accuracy of a candidate against the reference, over the same inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    /// Fraction of rows whose argmax equals the reference's.
    pub top1_agreement: f64,
    /// Mean fraction of the reference's top-5 indices in the candidate's top 5.
    pub top5_overlap: f64,
    /// Mean cosine similarity of the rows.
    pub cosine: f64,
}

/// The position of `name` among the plan's outputs (tract may rename a
/// single output: then position 0).
pub fn output_index(plan: &dyn Plan, name: &str) -> Result<usize, ConvertError> {
    plan.outputs()
        .iter()
        .position(|o| o.name == name)
        .or_else(|| (plan.outputs().len() == 1).then_some(0))
        .ok_or_else(|| {
            let names: Vec<&str> = plan.outputs().iter().map(|o| o.name.as_str()).collect();
            ConvertError::InvalidArgument(format!(
                "the model has no output {name:?} (outputs: {})",
                names.join(", ")
            ))
        })
}

/// Runs `plan` on each input (batch 1) and keeps output `index` as one
/// float row per input.
pub fn rows(
    plan: &dyn Plan,
    index: usize,
    inputs: &[Tensor],
) -> Result<Vec<Vec<f32>>, ConvertError> {
    inputs
        .iter()
        .map(|input| {
            let mut out = plan.run(std::slice::from_ref(input))?;
            if index >= out.len() {
                return Err(ConvertError::InvalidArgument(format!(
                    "the plan returned {} outputs, output #{index} was asked for",
                    out.len()
                )));
            }
            match out.swap_remove(index).into_parts().1 {
                TensorData::F32(v) => Ok(v),
                other => Err(ConvertError::InvalidArgument(format!(
                    "accuracy is measured on a float32 output, this one is {}",
                    other.dtype()
                ))),
            }
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += f64::from(x) * f64::from(y);
        na += f64::from(x) * f64::from(x);
        nb += f64::from(y) * f64::from(y);
    }
    if na == 0.0 && nb == 0.0 {
        1.0
    } else if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// Compares candidate rows with reference rows (same inputs, same order).
pub fn compare(reference: &[Vec<f32>], candidate: &[Vec<f32>]) -> Accuracy {
    let n = reference.len().min(candidate.len());
    if n == 0 {
        return Accuracy {
            top1_agreement: 0.0,
            top5_overlap: 0.0,
            cosine: 0.0,
        };
    }
    let (mut top1, mut top5, mut cos) = (0usize, 0f64, 0f64);
    for (r, c) in reference.iter().zip(candidate) {
        let rk: Vec<usize> = top_k(r, 5).into_iter().map(|(i, _)| i).collect();
        let ck: Vec<usize> = top_k(c, 5).into_iter().map(|(i, _)| i).collect();
        if rk.first() == ck.first() {
            top1 += 1;
        }
        let k = rk.len().max(1);
        top5 += rk.iter().filter(|i| ck.contains(i)).count() as f64 / k as f64;
        cos += cosine(r, c);
    }
    Accuracy {
        top1_agreement: top1 as f64 / n as f64,
        top5_overlap: top5 / n as f64,
        cosine: cos / n as f64,
    }
}

/// How long to time a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimingBudget {
    /// Untimed runs first.
    pub warmup: usize,
    /// At least this many timed runs...
    pub min_runs: usize,
    /// ...and at least this long.
    pub min_time: Duration,
}

impl Default for TimingBudget {
    fn default() -> Self {
        TimingBudget {
            warmup: 5,
            min_runs: 30,
            min_time: Duration::from_millis(1000),
        }
    }
}

/// Batch-1 latency of a plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Timed runs.
    pub runs: usize,
}

/// Percentile `p` (0..=100) by nearest rank of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Times `plan` on `input` for the budget.
pub fn latency(
    plan: &dyn Plan,
    input: &Tensor,
    budget: TimingBudget,
) -> Result<Latency, ConvertError> {
    let one = std::slice::from_ref(input);
    for _ in 0..budget.warmup {
        plan.run(one)?;
    }
    let mut ms = Vec::with_capacity(budget.min_runs * 2);
    let start = Instant::now();
    while ms.len() < budget.min_runs || start.elapsed() < budget.min_time {
        let t = Instant::now();
        plan.run(one)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(Latency {
        p50_ms: percentile(&ms, 50.0),
        p99_ms: percentile(&ms, 99.0),
        runs: ms.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_rows_agree_fully() {
        let r = vec![vec![0.1, 0.9, 0.3, 0.2, 0.0, 0.5]];
        let a = compare(&r, &r);
        assert_eq!(a.top1_agreement, 1.0);
        assert_eq!(a.top5_overlap, 1.0);
        assert!((a.cosine - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_flip_counts() {
        let r = vec![vec![0.0, 1.0, 0.5], vec![1.0, 0.0, 0.0]];
        let c = vec![vec![0.0, 0.4, 0.5], vec![1.0, 0.0, 0.0]];
        let a = compare(&r, &c);
        assert_eq!(a.top1_agreement, 0.5);
        assert_eq!(a.top5_overlap, 1.0, "three classes: top 5 holds them all");
        assert!(a.cosine < 1.0 && a.cosine > 0.5);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
    }
}

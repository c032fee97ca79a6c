//! Activation ranges for int8 quantization, measured by running the float
//! model (with the tensors to calibrate added as outputs) on calibration
//! inputs that went through the model's own preprocessing.
//!
//! Inputs are streamed: per tensor only a running min/max (and, for the
//! percentile method, a histogram in a second pass) is kept, never the
//! activations themselves.

use crate::quantize::Range;
use crate::ConvertError;
use accel_core::{Tensor, TensorData};
use accel_runtime::engine::Plan;
use std::collections::BTreeMap;

/// How a tensor's range is derived from the values it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The smallest and largest values seen (ONNX Runtime's default).
    MinMax,
    /// The central `p` percent of the values seen (e.g. 99.999): outliers
    /// in the tails do not stretch the range.
    Percentile(f64),
}

impl Method {
    /// `minmax` or `percentile-<p>`, as the report states it.
    pub fn name(&self) -> String {
        match self {
            Method::MinMax => "minmax".into(),
            Method::Percentile(p) => format!("percentile-{p}"),
        }
    }
}

impl std::str::FromStr for Method {
    type Err = ConvertError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ConvertError::InvalidArgument(format!(
                "unknown calibration method {s:?} (expected minmax, percentile or percentile-P with 50 < P < 100)"
            ))
        };
        match s {
            "minmax" => Ok(Method::MinMax),
            "percentile" => Ok(Method::Percentile(99.999)),
            _ => {
                let p: f64 = s
                    .strip_prefix("percentile-")
                    .or_else(|| s.strip_prefix("percentile:"))
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?;
                if p > 50.0 && p < 100.0 {
                    Ok(Method::Percentile(p))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

/// Histogram bins of the percentile method.
const BINS: usize = 2048;

/// Something told about calibration progress (images done of total).
pub type Step<'a> = &'a dyn Fn(usize, usize);

fn f32_values<'a>(t: &'a Tensor, name: &str) -> Result<&'a [f32], ConvertError> {
    match t.data() {
        TensorData::F32(v) => Ok(v),
        other => Err(ConvertError::Unsupported(format!(
            "tensor {name:?} is {}, only float tensors are calibrated",
            other.dtype()
        ))),
    }
}

/// Runs `plan` (the calibration model) on every input and returns a range
/// for each name in `tensors` (which must be among the plan's outputs).
pub fn calibrate(
    plan: &dyn Plan,
    tensors: &[String],
    inputs: &[Tensor],
    method: Method,
    step: Step<'_>,
) -> Result<BTreeMap<String, Range>, ConvertError> {
    if inputs.is_empty() {
        return Err(ConvertError::InvalidArgument(
            "no calibration images".into(),
        ));
    }
    let index: Vec<usize> = tensors
        .iter()
        .map(|name| {
            plan.outputs()
                .iter()
                .position(|o| &o.name == name)
                .ok_or_else(|| {
                    ConvertError::InvalidModel(format!(
                        "the calibration model does not output {name:?}"
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    let passes = match method {
        Method::MinMax => 1,
        Method::Percentile(_) => 2,
    };
    let total = inputs.len() * passes;
    let mut min = vec![f32::INFINITY; tensors.len()];
    let mut max = vec![f32::NEG_INFINITY; tensors.len()];
    for (i, input) in inputs.iter().enumerate() {
        let out = plan.run(std::slice::from_ref(input))?;
        for (k, &ix) in index.iter().enumerate() {
            for &v in f32_values(&out[ix], &tensors[k])? {
                if v.is_finite() {
                    min[k] = min[k].min(v);
                    max[k] = max[k].max(v);
                }
            }
        }
        step(i + 1, total);
    }
    for (k, name) in tensors.iter().enumerate() {
        if min[k] > max[k] {
            return Err(ConvertError::InvalidModel(format!(
                "tensor {name:?} took no finite value during calibration"
            )));
        }
    }
    let ranges: Vec<Range> = match method {
        Method::MinMax => (0..tensors.len())
            .map(|k| Range {
                min: min[k],
                max: max[k],
            })
            .collect(),
        Method::Percentile(p) => {
            let mut hist = vec![vec![0u64; BINS]; tensors.len()];
            for (i, input) in inputs.iter().enumerate() {
                let out = plan.run(std::slice::from_ref(input))?;
                for (k, &ix) in index.iter().enumerate() {
                    let width = (max[k] - min[k]) / BINS as f32;
                    if width <= 0.0 {
                        continue;
                    }
                    let h = &mut hist[k];
                    for &v in f32_values(&out[ix], &tensors[k])? {
                        if v.is_finite() {
                            let b = (((v - min[k]) / width) as usize).min(BINS - 1);
                            h[b] += 1;
                        }
                    }
                }
                step(inputs.len() + i + 1, total);
            }
            (0..tensors.len())
                .map(|k| percentile_range(&hist[k], min[k], max[k], p))
                .collect()
        }
    };
    Ok(tensors.iter().cloned().zip(ranges).collect())
}

/// The range keeping the central `p` percent of a histogram over
/// `[min, max]`: `(100 - p) / 2` percent is cut from each tail.
fn percentile_range(hist: &[u64], min: f32, max: f32, p: f64) -> Range {
    let total: u64 = hist.iter().sum();
    if total == 0 || max <= min {
        return Range { min, max };
    }
    let width = (max - min) / hist.len() as f32;
    let cut = total as f64 * (100.0 - p) / 200.0;
    let mut acc = 0f64;
    let mut lo = 0;
    for (b, &n) in hist.iter().enumerate() {
        acc += n as f64;
        if acc > cut {
            lo = b;
            break;
        }
    }
    acc = 0.0;
    let mut hi = hist.len() - 1;
    for (b, &n) in hist.iter().enumerate().rev() {
        acc += n as f64;
        if acc > cut {
            hi = b;
            break;
        }
    }
    Range {
        min: min + lo as f32 * width,
        max: (min + (hi + 1) as f32 * width).min(max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse() {
        assert_eq!("minmax".parse::<Method>().unwrap(), Method::MinMax);
        assert_eq!(
            "percentile".parse::<Method>().unwrap(),
            Method::Percentile(99.999)
        );
        assert_eq!(
            "percentile-99.9".parse::<Method>().unwrap(),
            Method::Percentile(99.9)
        );
        assert!("percentile-100".parse::<Method>().is_err());
        assert!("entropy".parse::<Method>().is_err());
    }

    #[test]
    fn percentile_cuts_outliers_only() {
        // 10 000 values spread over [0, 1) and one outlier at 100.
        let (min, max) = (0.0f32, 100.0f32);
        let mut hist = vec![0u64; BINS];
        let width = (max - min) / BINS as f32;
        for i in 0..10_000 {
            let v = i as f32 / 10_000.0;
            hist[((v - min) / width) as usize] += 1;
        }
        hist[BINS - 1] += 1;
        let r = percentile_range(&hist, min, max, 99.9);
        assert_eq!(r.min, 0.0);
        assert!(r.max < 1.1 && r.max >= 1.0 - width, "{r:?}");
        // A percentile that keeps everything keeps the outlier.
        let r = percentile_range(&hist, min, max, 99.9999);
        assert_eq!(r.max, max);
    }
}

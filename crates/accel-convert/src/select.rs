//! The accuracy-budget rule and the choice among measured candidates: pure
//! functions over figures.

use crate::report::Candidate;
use crate::ConvertError;

/// Which precisions may win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// The fastest plan within the accuracy budget, int8 or float.
    #[default]
    Auto,
    /// Float only (no quantization is attempted).
    Fp32,
    /// int8 only; an error when no int8 plan is within the budget.
    Int8,
}

impl Precision {
    /// `auto`, `fp32` or `int8`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = ConvertError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Precision::Auto),
            "fp32" | "float" | "float32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            other => Err(ConvertError::InvalidArgument(format!(
                "unknown precision {other:?} (expected auto, fp32 or int8)"
            ))),
        }
    }
}

/// Candidates within this fraction of the fastest p50 count as tied; ties
/// go to the preferred plan (int8, then ONNX Runtime, then fewer threads),
/// so that timing noise does not flip the choice between equal plans.
pub const TIE: f64 = 0.03;

/// Marks each candidate accepted or not: accepted when its top-1 agreement
/// with the float reference dropped by at most `budget_pct` percent.
pub fn apply_budget(candidates: &mut [Candidate], budget_pct: f64) {
    for c in candidates {
        let drop_pct = 100.0 * (1.0 - c.top1_agreement);
        // A hair of slack so that 99 agreeing of 100 meets a 1 % budget.
        c.accepted = drop_pct <= budget_pct + 1e-9;
        c.rejected_because = (!c.accepted).then(|| {
            format!(
                "top-1 agreement {:.4} is a {:.2} % drop, over the {} % budget",
                c.top1_agreement, drop_pct, budget_pct
            )
        });
    }
}

fn preference(c: &Candidate) -> (u8, u8, usize) {
    (
        u8::from(c.precision != "int8"),
        u8::from(c.engine != "onnxruntime"),
        c.threads,
    )
}

/// Picks the winner among candidates already marked by [`apply_budget`]:
/// the fastest accepted one whose precision `precision` allows. Returns its
/// index and the reason; an error naming the figures when none qualifies.
pub fn choose(
    candidates: &[Candidate],
    precision: Precision,
) -> Result<(usize, String), ConvertError> {
    let allowed = |c: &Candidate| match precision {
        Precision::Auto => true,
        Precision::Fp32 => c.precision == "fp32",
        Precision::Int8 => c.precision == "int8",
    };
    let eligible: Vec<usize> = (0..candidates.len())
        .filter(|&i| allowed(&candidates[i]) && candidates[i].accepted)
        .collect();
    let Some(fastest) = eligible
        .iter()
        .map(|&i| candidates[i].p50_ms)
        .min_by(f64::total_cmp)
    else {
        let figures: Vec<String> = candidates
            .iter()
            .filter(|c| allowed(c))
            .map(|c| {
                format!(
                    "{} {} top-1 agreement {:.4}",
                    c.engine, c.precision, c.top1_agreement
                )
            })
            .collect();
        return Err(ConvertError::Rejected(format!(
            "no {} plan is within the accuracy budget: {}",
            precision.as_str(),
            if figures.is_empty() {
                "none was made".to_string()
            } else {
                figures.join("; ")
            }
        )));
    };
    let winner = eligible
        .iter()
        .copied()
        .filter(|&i| candidates[i].p50_ms <= fastest * (1.0 + TIE))
        .min_by_key(|&i| preference(&candidates[i]))
        .unwrap_or(eligible[0]);
    let w = &candidates[winner];
    let mut reason = if w.p50_ms > fastest {
        format!(
            "within {:.0} % of the fastest accepted plan, preferred",
            TIE * 100.0
        )
    } else {
        "fastest plan within the accuracy budget".to_string()
    };
    if precision == Precision::Auto && w.precision == "fp32" {
        if let Some(r) = candidates
            .iter()
            .filter(|c| c.precision == "int8" && !c.accepted)
            .max_by(|a, b| a.top1_agreement.total_cmp(&b.top1_agreement))
        {
            reason = format!(
                "int8 rejected: {}; {reason}",
                r.rejected_because.as_deref().unwrap_or("over budget")
            );
        }
    }
    Ok((winner, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(engine: &str, precision: &str, threads: usize, p50: f64, top1: f64) -> Candidate {
        Candidate {
            engine: engine.into(),
            precision: precision.into(),
            activations: None,
            threads,
            p50_ms: p50,
            p99_ms: p50 * 1.2,
            runs: 100,
            top1_agreement: top1,
            top5_overlap: 1.0,
            cosine: 1.0,
            accepted: false,
            rejected_because: None,
        }
    }

    #[test]
    fn fastest_accepted_wins() {
        let mut c = vec![
            cand("onnxruntime", "fp32", 2, 10.0, 1.0),
            cand("onnxruntime", "int8", 2, 3.0, 0.995),
            cand("tract", "fp32", 2, 12.0, 1.0),
        ];
        apply_budget(&mut c, 1.0);
        assert!(c.iter().all(|c| c.accepted));
        let (i, reason) = choose(&c, Precision::Auto).unwrap();
        assert_eq!(i, 1);
        assert!(reason.contains("fastest"), "{reason}");
    }

    #[test]
    fn budget_zero_rejects_one_flip_and_auto_falls_back_to_float() {
        let mut c = vec![
            cand("onnxruntime", "fp32", 2, 10.0, 1.0),
            cand("onnxruntime", "int8", 2, 3.0, 0.975),
        ];
        apply_budget(&mut c, 0.0);
        assert!(c[0].accepted && !c[1].accepted);
        let (i, reason) = choose(&c, Precision::Auto).unwrap();
        assert_eq!(i, 0);
        assert!(reason.starts_with("int8 rejected"), "{reason}");
        assert!(reason.contains("0.9750"), "{reason}");
        let err = choose(&c, Precision::Int8).unwrap_err();
        assert!(matches!(err, ConvertError::Rejected(_)));
        assert!(err.to_string().contains("0.9750"), "{err}");
    }

    #[test]
    fn one_percent_budget_admits_exactly_one_percent() {
        let mut c = vec![cand("onnxruntime", "int8", 1, 3.0, 0.99)];
        apply_budget(&mut c, 1.0);
        assert!(c[0].accepted);
        let mut c = vec![cand("onnxruntime", "int8", 1, 3.0, 0.989)];
        apply_budget(&mut c, 1.0);
        assert!(!c[0].accepted);
    }

    #[test]
    fn near_ties_go_to_the_preferred_plan() {
        let mut c = vec![
            cand("onnxruntime", "int8", 2, 3.00, 1.0),
            cand("onnxruntime", "int8", 1, 3.05, 1.0),
            cand("tract", "int8", 1, 2.99, 1.0),
        ];
        apply_budget(&mut c, 1.0);
        let (i, reason) = choose(&c, Precision::Auto).unwrap();
        assert_eq!(i, 1, "fewer threads on onnxruntime within 3 %");
        assert!(reason.contains("preferred"), "{reason}");
    }

    #[test]
    fn fp32_only_ignores_int8() {
        let mut c = vec![
            cand("onnxruntime", "fp32", 2, 10.0, 1.0),
            cand("onnxruntime", "int8", 2, 3.0, 1.0),
        ];
        apply_budget(&mut c, 1.0);
        assert_eq!(choose(&c, Precision::Fp32).unwrap().0, 0);
    }
}

//! Latency percentiles.

/// Percentile `p` (0..=100) of `samples` by nearest rank; sorts in place.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    // The epsilon keeps 99 % of 100 at rank 99 despite float rounding.
    let rank = ((p / 100.0) * samples.len() as f64 - 1e-9).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

#[cfg(test)]
mod tests {
    #[test]
    fn nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&mut v, 50.0), 50.0);
        assert_eq!(super::percentile(&mut v, 99.0), 99.0);
        assert_eq!(super::percentile(&mut v, 100.0), 100.0);
    }
}

//! Postprocessing: softmax over the last axis and top-k selection.

/// Softmax over each row of `data` (rows of length `width`), in place,
/// numerically stable (the row maximum is subtracted first).
pub fn softmax_rows(data: &mut [f32], width: usize) {
    if width == 0 {
        return;
    }
    for row in data.chunks_mut(width) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

/// The `k` largest values of `row` as `(index, value)`, largest first; ties
/// keep the lower index first. NaNs sort last.
pub fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let cmp = |a: &usize, b: &usize| {
        let (x, y) = (row[*a], row[*b]);
        y.partial_cmp(&x)
            .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
            .then(a.cmp(b))
    };
    let k = k.min(row.len());
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, row[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_the_closed_form() {
        let mut v = vec![1.0, 2.0, 3.0, 1000.0, 1000.0, 1000.0];
        softmax_rows(&mut v, 3);
        let e: f32 = 1.0 + std::f32::consts::E + std::f32::consts::E.powi(2);
        let want = [
            1.0 / e,
            std::f32::consts::E / e,
            std::f32::consts::E.powi(2) / e,
        ];
        for (a, b) in v[..3].iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
        for a in &v[3..] {
            assert!((a - 1.0 / 3.0).abs() < 1e-6, "overflow not handled: {a}");
        }
    }

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        let row = [0.1, 0.5, 0.3, 0.5, f32::NAN, 0.0];
        assert_eq!(top_k(&row, 3), vec![(1, 0.5), (3, 0.5), (2, 0.3)]);
        assert_eq!(top_k(&row, 10).len(), 6);
        assert_eq!(top_k(&row, 10).last().unwrap().0, 4);
    }
}

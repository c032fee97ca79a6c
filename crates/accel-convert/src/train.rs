//! A softmax classifier on feature vectors: multinomial logistic regression
//! with L2, trained by full-batch accelerated gradient descent on
//! standardized features, the standardization folded back into the weights.
//!
//! Everything runs sequentially in `f64` in a fixed order, so the same
//! features give the same weights, bit for bit.

use crate::error::ConvertError;

/// How to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    /// Full-batch gradient steps.
    pub epochs: usize,
    /// L2 penalty `l2/2 · ‖W‖²` (on the standardized weights, not the bias)
    /// added to the mean cross-entropy.
    pub l2: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 300,
            l2: 1e-2,
        }
    }
}

/// Standard deviations below this fraction of their root mean square are
/// raised to it before training (see [`fit`]).
pub const STD_FLOOR: f64 = 0.1;

/// A linear layer and softmax over feature vectors: `softmax(W·f + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearHead {
    /// Number of classes (rows of `weights`).
    pub classes: usize,
    /// Length of a feature vector (columns of `weights`).
    pub features: usize,
    /// `classes × features`, row-major (ONNX `Gemm` with `transB = 1`).
    pub weights: Vec<f32>,
    /// One per class.
    pub bias: Vec<f32>,
}

impl LinearHead {
    /// `W·f + b`.
    pub fn logits(&self, f: &[f32]) -> Vec<f32> {
        self.weights
            .chunks_exact(self.features.max(1))
            .zip(&self.bias)
            .map(|(row, b)| {
                let dot: f64 = row
                    .iter()
                    .zip(f)
                    .map(|(w, x)| f64::from(*w) * f64::from(*x))
                    .sum();
                (dot + f64::from(*b)) as f32
            })
            .collect()
    }

    /// `softmax(W·f + b)`.
    pub fn probabilities(&self, f: &[f32]) -> Vec<f32> {
        let z: Vec<f64> = self.logits(f).into_iter().map(f64::from).collect();
        softmax(&z).into_iter().map(|p| p as f32).collect()
    }

    /// The most likely class (the first of equal ones).
    pub fn predict(&self, f: &[f32]) -> usize {
        argmax(&self.logits(f))
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// Sample indices for training and for validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training samples, ascending.
    pub train: Vec<usize>,
    /// Held-out samples, ascending.
    pub validation: Vec<usize>,
}

/// A stratified, deterministic split: of each class's `n` samples (in the
/// order given), `round(n · fraction)` — at least 1, at most `n − 1` — are
/// held out, evenly spaced through the class. Every class needs 2 samples.
pub fn stratified_split(
    labels: &[usize],
    classes: usize,
    fraction: f64,
) -> Result<Split, ConvertError> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(ConvertError::InvalidArgument(format!(
            "the validation fraction must be between 0 and 1, not {fraction}"
        )));
    }
    let mut by_class = vec![Vec::new(); classes];
    for (i, &c) in labels.iter().enumerate() {
        let slot = by_class.get_mut(c).ok_or_else(|| {
            ConvertError::InvalidArgument(format!("label {c} of sample {i} is not below {classes}"))
        })?;
        slot.push(i);
    }
    let mut split = Split {
        train: Vec::new(),
        validation: Vec::new(),
    };
    for (c, members) in by_class.iter().enumerate() {
        let n = members.len();
        if n < 2 {
            return Err(ConvertError::InvalidArgument(format!(
                "class {c} has {n} sample(s); each class needs at least 2 (one to train on, one to validate)"
            )));
        }
        let held = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
        let mut is_held = vec![false; n];
        for k in 0..held {
            // The middle of the k-th of `held` equal stretches.
            is_held[((2 * k + 1) * n) / (2 * held)] = true;
        }
        for (k, &i) in members.iter().enumerate() {
            if is_held[k] {
                split.validation.push(i);
            } else {
                split.train.push(i);
            }
        }
    }
    split.train.sort_unstable();
    split.validation.sort_unstable();
    Ok(split)
}

/// What training produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// The classifier, on raw (unstandardized) features.
    pub head: LinearHead,
    /// The final objective: mean cross-entropy + L2 term.
    pub loss: f64,
    /// Accuracy on the training samples.
    pub train_accuracy: f64,
}

/// Trains a softmax classifier on `samples` (each of the same length) with
/// class `labels[i] < classes`.
///
/// Features are centred and divided by their standard deviation, floored at
/// [`STD_FLOOR`] × the root mean square of all of them, so that nearly
/// constant features do not get huge weights; the result is folded back into
/// weights and biases on raw features.
pub fn fit(
    samples: &[&[f32]],
    labels: &[usize],
    classes: usize,
    options: &TrainOptions,
) -> Result<Fit, ConvertError> {
    let bad = |m: String| Err(ConvertError::InvalidArgument(m));
    let n = samples.len();
    if n == 0 || n != labels.len() {
        return bad(format!("{n} samples and {} labels", labels.len()));
    }
    if classes < 2 {
        return bad(format!(
            "a classifier needs at least 2 classes, not {classes}"
        ));
    }
    let d = samples[0].len();
    if d == 0 || samples.iter().any(|s| s.len() != d) {
        return bad("feature vectors are empty or of different lengths".into());
    }
    if let Some(&c) = labels.iter().find(|&&c| c >= classes) {
        return bad(format!("label {c} is not below {classes}"));
    }
    if samples.iter().any(|s| s.iter().any(|v| !v.is_finite())) {
        return bad("a feature vector holds a NaN or an infinity".into());
    }
    if !(options.l2 >= 0.0 && options.l2.is_finite()) {
        return bad(format!("the L2 penalty must be ≥ 0, not {}", options.l2));
    }

    // Standardize.
    let mut mean = vec![0f64; d];
    for s in samples {
        for (m, v) in mean.iter_mut().zip(*s) {
            *m += f64::from(*v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut std = vec![0f64; d];
    for s in samples {
        for ((sd, v), m) in std.iter_mut().zip(*s).zip(&mean) {
            *sd += (f64::from(*v) - m).powi(2);
        }
    }
    std.iter_mut().for_each(|sd| *sd = (*sd / n as f64).sqrt());
    // Near-constant features (dead ReLU channels) would otherwise be blown
    // up and get huge raw weights: an ill-conditioned head, in f32 and
    // even more in int8. Their scale is raised to a tenth of the typical
    // one (the root mean square of the standard deviations).
    let floor = STD_FLOOR * (std.iter().map(|s| s * s).sum::<f64>() / d as f64).sqrt();
    for sd in &mut std {
        *sd = sd.max(floor);
        if *sd < 1e-12 {
            *sd = 1.0; // constant feature: centred to 0 whatever the scale
        }
    }
    let x: Vec<f64> = samples
        .iter()
        .flat_map(|s| {
            s.iter()
                .zip(&mean)
                .zip(&std)
                .map(|((v, m), sd)| (f64::from(*v) - m) / sd)
        })
        .collect();

    let lipschitz = 0.5 * top_eigenvalue(&x, n, d) * 1.05 + options.l2;
    let step = 1.0 / lipschitz;
    let p = classes * (d + 1); // W (classes × d), then b (classes)
    let mut theta = vec![0f64; p];
    let mut y = theta.clone();
    let mut grad = vec![0f64; p];
    let mut t = 1f64;
    for _ in 0..options.epochs {
        objective(&x, labels, n, d, classes, options.l2, &y, Some(&mut grad));
        let next: Vec<f64> = y.iter().zip(&grad).map(|(v, g)| v - step * g).collect();
        // Restart the momentum when it points uphill (O'Donoghue & Candès).
        let uphill: f64 = grad
            .iter()
            .zip(next.iter().zip(&theta))
            .map(|(g, (a, b))| g * (a - b))
            .sum();
        let t_next = if uphill > 0.0 {
            1.0
        } else {
            (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0
        };
        let beta = (t - 1.0) / t_next;
        y = next
            .iter()
            .zip(&theta)
            .map(|(a, b)| a + beta * (a - b))
            .collect();
        theta = next;
        t = t_next;
    }
    let loss = objective(&x, labels, n, d, classes, options.l2, &theta, None);
    if !loss.is_finite() {
        return Err(ConvertError::Rejected(
            "training diverged (the loss is not finite)".into(),
        ));
    }

    // Fold the standardization in: W·((f − μ)/σ) + b = (W/σ)·f + (b − W·μ/σ).
    let (w, b) = theta.split_at(classes * d);
    let mut weights = vec![0f32; classes * d];
    let mut bias = vec![0f32; classes];
    for c in 0..classes {
        let mut shift = 0f64;
        for j in 0..d {
            let wj = w[c * d + j] / std[j];
            weights[c * d + j] = wj as f32;
            shift += wj * mean[j];
        }
        bias[c] = (b[c] - shift) as f32;
    }
    let head = LinearHead {
        classes,
        features: d,
        weights,
        bias,
    };
    let (right, total) = accuracy(&head, samples, labels);
    Ok(Fit {
        head,
        loss,
        train_accuracy: right as f64 / total as f64,
    })
}

/// How many of `samples` the head classifies as `labels` says: (right, total).
pub fn accuracy(head: &LinearHead, samples: &[&[f32]], labels: &[usize]) -> (usize, usize) {
    let right = samples
        .iter()
        .zip(labels)
        .filter(|(s, &c)| head.predict(s) == c)
        .count();
    (right, samples.len())
}

/// The largest eigenvalue of `X̃ᵀX̃ / n`, `X̃ = [X, 1]` (power iteration from
/// the all-ones vector): bounds the curvature of the cross-entropy.
fn top_eigenvalue(x: &[f64], n: usize, d: usize) -> f64 {
    let mut v = vec![1f64; d + 1];
    let mut lambda = 1f64;
    for _ in 0..100 {
        let mut next = vec![0f64; d + 1];
        for row in x.chunks_exact(d) {
            let dot: f64 = row.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>() + v[d];
            for (o, a) in next.iter_mut().zip(row) {
                *o += dot * a;
            }
            next[d] += dot;
        }
        next.iter_mut().for_each(|o| *o /= n as f64);
        let norm = next.iter().map(|o| o * o).sum::<f64>().sqrt();
        if norm == 0.0 {
            break;
        }
        lambda = norm / v.iter().map(|o| o * o).sum::<f64>().sqrt();
        v = next.into_iter().map(|o| o / norm).collect();
    }
    lambda.max(1e-12)
}

/// Mean cross-entropy + `l2/2 · ‖W‖²` at `theta`; its gradient into `grad`
/// when given.
#[allow(clippy::too_many_arguments)]
fn objective(
    x: &[f64],
    labels: &[usize],
    n: usize,
    d: usize,
    classes: usize,
    l2: f64,
    theta: &[f64],
    mut grad: Option<&mut Vec<f64>>,
) -> f64 {
    let (w, b) = theta.split_at(classes * d);
    if let Some(g) = grad.as_deref_mut() {
        g.iter_mut().for_each(|v| *v = 0.0);
    }
    let mut loss = 0f64;
    let mut z = vec![0f64; classes];
    for (row, &label) in x.chunks_exact(d).zip(labels) {
        for (c, zc) in z.iter_mut().enumerate() {
            *zc = b[c]
                + w[c * d..(c + 1) * d]
                    .iter()
                    .zip(row)
                    .map(|(a, v)| a * v)
                    .sum::<f64>();
        }
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
        loss += max + sum.ln() - z[label];
        if let Some(g) = grad.as_deref_mut() {
            let (gw, gb) = g.split_at_mut(classes * d);
            for c in 0..classes {
                let r = (z[c] - max).exp() / sum - if c == label { 1.0 } else { 0.0 };
                gb[c] += r;
                for (o, v) in gw[c * d..(c + 1) * d].iter_mut().zip(row) {
                    *o += r * v;
                }
            }
        }
    }
    let nf = n as f64;
    let norm: f64 = w.iter().map(|v| v * v).sum();
    if let Some(g) = grad {
        let (gw, gb) = g.split_at_mut(classes * d);
        for (o, wv) in gw.iter_mut().zip(w) {
            *o = *o / nf + l2 * wv;
        }
        gb.iter_mut().for_each(|o| *o /= nf);
    }
    loss / nf + 0.5 * l2 * norm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [0, 1).
    fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// `per_class` points around each of `classes` centres in `d`
    /// dimensions (Box–Muller normals, σ = `spread`), features offset and
    /// scaled very differently so that standardization matters.
    fn mixture(
        classes: usize,
        per_class: usize,
        d: usize,
        spread: f64,
    ) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut u = uniform(7);
        let mut normal = move || {
            let (a, b) = (u().max(1e-12), u());
            (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
        };
        let centres: Vec<Vec<f64>> = (0..classes)
            .map(|_| (0..d).map(|_| 3.0 * normal()).collect())
            .collect();
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for i in 0..per_class {
            for (c, centre) in centres.iter().enumerate() {
                let _ = i;
                let x: Vec<f32> = centre
                    .iter()
                    .enumerate()
                    .map(|(j, m)| {
                        ((m + spread * normal()) * (1.0 + j as f64 * 10.0) + 100.0) as f32
                    })
                    .collect();
                xs.push(x);
                ys.push(c);
            }
        }
        (xs, ys)
    }

    #[test]
    fn separates_a_gaussian_mixture_and_generalizes() {
        let (xs, ys) = mixture(4, 60, 8, 1.0);
        let split = stratified_split(&ys, 4, 0.25).unwrap();
        assert_eq!(split.validation.len(), 60);
        let pick = |ix: &[usize]| -> (Vec<&[f32]>, Vec<usize>) {
            (
                ix.iter().map(|&i| xs[i].as_slice()).collect(),
                ix.iter().map(|&i| ys[i]).collect(),
            )
        };
        let (tx, ty) = pick(&split.train);
        let (vx, vy) = pick(&split.validation);
        let fit = fit(&tx, &ty, 4, &TrainOptions::default()).unwrap();
        assert!(fit.train_accuracy > 0.97, "train {}", fit.train_accuracy);
        let (right, total) = accuracy(&fit.head, &vx, &vy);
        assert!(
            right as f64 / total as f64 > 0.95,
            "validation {right}/{total}"
        );
        // Probabilities sum to one and agree with the prediction.
        let p = fit.head.probabilities(vx[0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(argmax(&p), fit.head.predict(vx[0]));
        // Deterministic, bit for bit.
        let again = super::fit(&tx, &ty, 4, &TrainOptions::default()).unwrap();
        assert_eq!(again, fit);
    }

    #[test]
    fn more_epochs_lower_the_loss_and_l2_shrinks_the_weights() {
        let (xs, ys) = mixture(3, 30, 5, 2.0);
        let xs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let loss = |epochs, l2| fit(&xs, &ys, 3, &TrainOptions { epochs, l2 }).unwrap();
        let (a, b) = (loss(10, 1e-2), loss(300, 1e-2));
        assert!(b.loss < a.loss, "{} !< {}", b.loss, a.loss);
        // At convergence the gradient is ~0: 300 more steps change little.
        let c = loss(600, 1e-2);
        assert!(
            (c.loss - b.loss).abs() < 1e-4 * b.loss.max(1e-3),
            "{} vs {}",
            c.loss,
            b.loss
        );
        let norm = |f: &Fit| {
            f.head
                .weights
                .iter()
                .map(|w| f64::from(*w).powi(2))
                .sum::<f64>()
        };
        assert!(norm(&loss(300, 1.0)) < norm(&b));
    }

    #[test]
    fn standardization_is_folded_into_the_weights() {
        // Two classes split by feature 1 only, which sits around 1000 with
        // a spread of 0.01; feature 0 is noise around 0.
        let mut u = uniform(3);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for i in 0..40 {
            let c = i % 2;
            xs.push(vec![
                u() as f32,
                1000.0 + 0.01 * (c as f32 * 2.0 - 1.0) + 0.002 * u() as f32,
            ]);
            ys.push(c);
        }
        let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let f = fit(&refs, &ys, 2, &TrainOptions::default()).unwrap();
        assert_eq!(accuracy(&f.head, &refs, &ys), (40, 40));
        assert!(f.head.weights[1].abs() > 10.0 * f.head.weights[0].abs());
    }

    #[test]
    fn nearly_constant_features_get_no_huge_weights() {
        // Feature 0 separates the classes (spread 1); feature 1 is almost
        // constant (spread 1e-6) but happens to separate them too.
        let mut u = uniform(5);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for i in 0..40 {
            let c = i % 2;
            let sign = c as f64 * 2.0 - 1.0;
            xs.push(vec![(sign + 0.5 * u()) as f32, (1e-6 * sign) as f32]);
            ys.push(c);
        }
        let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let f = fit(&refs, &ys, 2, &TrainOptions::default()).unwrap();
        assert_eq!(accuracy(&f.head, &refs, &ys), (40, 40));
        // Without the floor feature 1 would be scaled by 1e6.
        let max = f.head.weights.iter().fold(0f32, |m, w| m.max(w.abs()));
        assert!(max < 1e3, "{:?}", f.head.weights);
    }

    #[test]
    fn split_is_stratified_and_deterministic() {
        // 10 of class 0, 5 of class 1, 2 of class 2.
        let mut labels = vec![0; 10];
        labels.extend([1; 5]);
        labels.extend([2; 2]);
        let s = stratified_split(&labels, 3, 0.2).unwrap();
        let held = |c| s.validation.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!((held(0), held(1), held(2)), (2, 1, 1));
        assert_eq!(s.train.len() + s.validation.len(), labels.len());
        assert_eq!(s.validation, vec![2, 7, 12, 16]);
        assert_eq!(stratified_split(&labels, 3, 0.2).unwrap(), s);
        // Too few samples, bad fractions.
        assert!(stratified_split(&[0, 1, 1], 2, 0.2).is_err());
        assert!(stratified_split(&labels, 3, 0.0).is_err());
        assert!(stratified_split(&labels, 3, 1.0).is_err());
    }

    #[test]
    fn bad_input_is_refused() {
        let a = [1.0f32, 2.0];
        let nan = [f32::NAN, 0.0];
        let o = TrainOptions::default();
        assert!(fit(&[&a, &a], &[0, 1], 1, &o).is_err());
        assert!(fit(&[&a, &a[..1]], &[0, 1], 2, &o).is_err());
        assert!(fit(&[&a, &nan], &[0, 1], 2, &o).is_err());
        assert!(fit(&[&a, &a], &[0, 2], 2, &o).is_err());
    }
}

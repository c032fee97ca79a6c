//! SSD detection postprocessing: anchors, box decoding, per-class score
//! threshold, top-k and greedy non-maximum suppression.
//!
//! Follows the seed (Azure ML Hardware Accelerated Models SSD-VGG, i.e. Paul
//! Balanca's SSD-TensorFlow, Apache-2.0): anchors as `ssd_anchor_one_layer`,
//! decoding as `tf_ssd_bboxes_decode_layer` (offsets in the order x, y, w, h),
//! then the Caffe SSD / torchvision postprocessing: softmax per anchor, for
//! each class except the background keep the scores above the threshold,
//! the best `top_k` of them (score descending, anchor ascending), greedy NMS
//! (a box overlapping a kept one by IoU > `nms_iou` is dropped); all classes
//! merged by score (ties: class, then anchor), the best `keep_top_k` kept.
//! Boxes are `[ymin, xmin, ymax, xmax]` in 0..1 of the model input, not
//! clipped.

use crate::error::RuntimeError;
use accel_core::detection::SsdSpec;

/// One anchor (prior box), in 0..1 of the model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    /// Centre, y.
    pub cy: f32,
    /// Centre, x.
    pub cx: f32,
    /// Height.
    pub h: f32,
    /// Width.
    pub w: f32,
}

/// The anchors of every layer, in the order layer, y, x, anchor of the cell
/// (the element order of the `[N, H, W, A, …]` head tensors).
///
/// Balanca's `ssd_anchor_one_layer`: centres `(y + offset)·step / image_h`
/// (f32 as there); sizes `s0`, then `sqrt(s0·s1)` when two sizes are given,
/// then `s0/√r` × `s0·√r` per ratio, divided by the image size (computed in
/// f64 and rounded, as the Python floats there are).
pub fn anchors(spec: &SsdSpec) -> Vec<Anchor> {
    let img_h = spec.image_size[0] as f64;
    let img_w = spec.image_size[1] as f64;
    let mut out = Vec::with_capacity(spec.anchor_count());
    for layer in &spec.layers {
        let s0 = layer.sizes[0] as f64;
        let mut cell: Vec<(f32, f32)> = Vec::with_capacity(layer.anchors_per_cell());
        cell.push(((s0 / img_h) as f32, (s0 / img_w) as f32));
        if let Some(&s1) = layer.sizes.get(1) {
            let s = (s0 * s1 as f64).sqrt();
            cell.push(((s / img_h) as f32, (s / img_w) as f32));
        }
        for &r in &layer.ratios {
            let sr = (r as f64).sqrt();
            cell.push(((s0 / img_h / sr) as f32, (s0 / img_w * sr) as f32));
        }
        let [fh, fw] = layer.feature_size;
        for y in 0..fh {
            let cy = (y as f32 + spec.anchor_offset) * layer.step[0] / spec.image_size[0] as f32;
            for x in 0..fw {
                let cx =
                    (x as f32 + spec.anchor_offset) * layer.step[1] / spec.image_size[1] as f32;
                out.extend(cell.iter().map(|&(h, w)| Anchor { cy, cx, h, w }));
            }
        }
    }
    out
}

/// One detected object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Class index (never the background class).
    pub class: usize,
    /// The class score (a softmax probability when the spec says so).
    pub score: f32,
    /// Index of the anchor in [`anchors`]' order.
    pub anchor: usize,
    /// `[ymin, xmin, ymax, xmax]` in 0..1 of the model input (not clipped).
    pub bbox: [f32; 4],
}

/// Intersection over union of two `[ymin, xmin, ymax, xmax]` boxes; 0 when
/// either has no area (as ONNX Runtime's `NonMaxSuppression`).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    if !(area_a > 0.0 && area_b > 0.0) {
        return 0.0;
    }
    let ih = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iw = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ih * iw;
    if inter <= 0.0 {
        return 0.0;
    }
    inter / (area_a + area_b - inter)
}

/// Decodes one anchor's offsets `[x, y, w, h]` into `[ymin, xmin, ymax, xmax]`.
fn decode(a: &Anchor, loc: &[f32], var: &[f32; 4]) -> [f32; 4] {
    let cx = loc[0] * a.w * var[0] + a.cx;
    let cy = loc[1] * a.h * var[1] + a.cy;
    let w = a.w * (loc[2] * var[2]).exp();
    let h = a.h * (loc[3] * var[3]).exp();
    [cy - h / 2.0, cx - w / 2.0, cy + h / 2.0, cx + w / 2.0]
}

/// SSD postprocessing for one spec: validated, anchors computed once;
/// immutable afterwards (`Send + Sync`), each call keeps its own buffers.
#[derive(Debug, Clone)]
pub struct SsdDecoder {
    spec: SsdSpec,
    anchors: Vec<Anchor>,
    /// Index of each layer's first anchor.
    starts: Vec<usize>,
}

impl SsdDecoder {
    /// Validates the spec and precomputes the anchors.
    pub fn new(spec: SsdSpec) -> Result<SsdDecoder, RuntimeError> {
        spec.validate()
            .map_err(|e| RuntimeError::Spec(e.to_string()))?;
        if spec.anchor_count() > u32::MAX as usize {
            return Err(RuntimeError::Spec(format!(
                "ssd: {} anchors, at most {} supported",
                spec.anchor_count(),
                u32::MAX
            )));
        }
        let anchors = anchors(&spec);
        let mut starts = Vec::with_capacity(spec.layers.len());
        let mut at = 0;
        for l in &spec.layers {
            starts.push(at);
            at += l.anchor_count();
        }
        debug_assert_eq!(at, anchors.len());
        Ok(SsdDecoder {
            spec,
            anchors,
            starts,
        })
    }

    /// The spec this decoder was built from.
    pub fn spec(&self) -> &SsdSpec {
        &self.spec
    }

    /// All anchors, in the order of [`anchors`].
    pub fn anchors(&self) -> &[Anchor] {
        &self.anchors
    }

    /// One image: `scores[l]` and `boxes[l]` are layer `l`'s values for that
    /// image (`anchors_l·C` and `anchors_l·4` values, in `[H, W, A, …]`
    /// order). Returns at most `keep_top_k` detections, best first.
    pub fn detect(
        &self,
        scores: &[&[f32]],
        boxes: &[&[f32]],
    ) -> Result<Vec<Detection>, RuntimeError> {
        let spec = &self.spec;
        let nl = spec.layers.len();
        if scores.len() != nl || boxes.len() != nl {
            return Err(RuntimeError::Spec(format!(
                "ssd: {nl} layers, given {} score and {} box tensors",
                scores.len(),
                boxes.len()
            )));
        }
        let c = spec.num_classes;
        for (i, l) in spec.layers.iter().enumerate() {
            let n = l.anchor_count();
            if scores[i].len() != n * c {
                return Err(RuntimeError::Spec(format!(
                    "ssd layer {i} ({}): {} class scores, expected {n} anchors × {c} classes = {}",
                    l.scores,
                    scores[i].len(),
                    n * c
                )));
            }
            if boxes[i].len() != n * 4 {
                return Err(RuntimeError::Spec(format!(
                    "ssd layer {i} ({}): {} box values, expected {n} anchors × 4 = {}",
                    l.boxes,
                    boxes[i].len(),
                    n * 4
                )));
            }
        }

        let bg = spec.background_class.unwrap_or(usize::MAX);
        let t = spec.score_threshold;
        // Candidates per class as (score, anchor); boxes are decoded later,
        // only for those that reach NMS.
        let mut per_class: Vec<Vec<(f32, u32)>> = vec![Vec::new(); c];
        let mut anchor = 0u32;
        if spec.softmax {
            // p_c = e_c / Σe ≤ e_c (Σe ≥ 1: the max contributes e⁰), so a
            // class with l_c − max ≤ ln t cannot pass; an anchor without any
            // other class needs no exp at all. The margin keeps rounding safe.
            let cut = if t > 0.0 {
                t.ln() - 1e-3
            } else {
                f32::NEG_INFINITY
            };
            let mut exps = vec![0.0f32; c];
            for layer_scores in scores {
                for row in layer_scores.chunks_exact(c) {
                    let m = row_max(row);
                    let mut hopeful = false;
                    for (k, &v) in row.iter().enumerate() {
                        hopeful |= (v - m > cut) & (k != bg);
                    }
                    if hopeful {
                        for (e, &v) in exps.iter_mut().zip(row) {
                            *e = exp_nonpositive(v - m);
                        }
                        let sum = row_sum(&exps);
                        // p > t ⇔ e > t·Σ up to rounding: a cheap first look.
                        let ts = t * sum * (1.0 - 1e-5);
                        let mut any = false;
                        for (k, &e) in exps.iter().enumerate() {
                            any |= (e > ts) & (k != bg);
                        }
                        if any {
                            for (k, &e) in exps.iter().enumerate() {
                                if e > ts && k != bg {
                                    let p = e / sum;
                                    if p > t {
                                        per_class[k].push((p, anchor));
                                    }
                                }
                            }
                        }
                    }
                    anchor += 1;
                }
            }
        } else {
            for layer_scores in scores {
                for row in layer_scores.chunks_exact(c) {
                    for (k, &p) in row.iter().enumerate() {
                        if p > t && k != bg {
                            per_class[k].push((p, anchor));
                        }
                    }
                    anchor += 1;
                }
            }
        }

        // Each class: its best top_k, score descending, anchor ascending (no
        // NaN here: NaN > t is false).
        let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        let mut heads = std::collections::BinaryHeap::new();
        for (class, cands) in per_class.iter_mut().enumerate() {
            if cands.len() > spec.top_k {
                cands.select_nth_unstable_by(spec.top_k - 1, order);
                cands.truncate(spec.top_k);
            }
            cands.sort_unstable_by(order);
            if let Some(&(score, _)) = cands.first() {
                heads.push(Head {
                    score,
                    class,
                    pos: 0,
                });
            }
        }
        // All classes merged in the output order (score descending, class,
        // anchor), each candidate tested against the boxes kept before it in
        // its own class: whether a box survives depends only on those, so the
        // first keep_top_k survivors are the answer.
        let mut nms: Vec<Nms> = Vec::new();
        nms.resize_with(c, Nms::default);
        let mut kept: Vec<Detection> = Vec::new();
        while kept.len() < spec.keep_top_k {
            let Some(head) = heads.pop() else { break };
            let (class, pos) = (head.class, head.pos);
            let cands = &per_class[class];
            if let Some(&(score, _)) = cands.get(pos + 1) {
                heads.push(Head {
                    score,
                    class,
                    pos: pos + 1,
                });
            }
            let (score, anchor) = cands[pos];
            let a = anchor as usize;
            let (layer, at) = self.locate(a);
            let bbox = decode(
                &self.anchors[a],
                &boxes[layer][at * 4..at * 4 + 4],
                &spec.variances,
            );
            if nms[class].keep(bbox, spec.nms_iou) {
                kept.push(Detection {
                    class,
                    score,
                    anchor: a,
                    bbox,
                });
            }
        }
        Ok(kept)
    }

    /// The layer of a global anchor index and the index inside it.
    fn locate(&self, anchor: usize) -> (usize, usize) {
        let layer = self.starts.partition_point(|&s| s <= anchor) - 1;
        (layer, anchor - self.starts[layer])
    }
}

/// The boxes NMS kept so far for one class, column-wise so the overlap test
/// against all of them vectorizes.
#[derive(Default)]
struct Nms {
    ymin: Vec<f32>,
    xmin: Vec<f32>,
    ymax: Vec<f32>,
    xmax: Vec<f32>,
    area: Vec<f32>,
}

impl Nms {
    fn len(&self) -> usize {
        self.area.len()
    }

    /// Keeps `b` unless it overlaps a kept box by IoU > `thr` (the same
    /// arithmetic as [`iou`]); a box without area overlaps nothing.
    fn keep(&mut self, b: [f32; 4], thr: f32) -> bool {
        let area_b = (b[2] - b[0]) * (b[3] - b[1]);
        if area_b > 0.0 {
            let n = self.len();
            let (y0, x0, y1, x1, ar) = (
                &self.ymin[..n],
                &self.xmin[..n],
                &self.ymax[..n],
                &self.xmax[..n],
                &self.area[..n],
            );
            const CHUNK: usize = 32;
            let mut i = 0;
            while i < n {
                let end = (i + CHUNK).min(n);
                let mut hit = false;
                let cols = y0[i..end]
                    .iter()
                    .zip(&x0[i..end])
                    .zip(&y1[i..end])
                    .zip(&x1[i..end])
                    .zip(&ar[i..end]);
                for ((((&ya, &xa), &yb), &xb), &a) in cols {
                    let ih = max(min(yb, b[2]) - max(ya, b[0]), 0.0);
                    let iw = max(min(xb, b[3]) - max(xa, b[1]), 0.0);
                    let inter = ih * iw;
                    let iou = inter / (a + area_b - inter);
                    hit |= (a > 0.0) & (iou > thr);
                }
                if hit {
                    return false;
                }
                i = end;
            }
        }
        self.ymin.push(b[0]);
        self.xmin.push(b[1]);
        self.ymax.push(b[2]);
        self.xmax.push(b[3]);
        self.area.push(area_b);
        true
    }
}

/// The next candidate of one class in the merge; the heap's greatest is
/// the best score, then the lowest class.
struct Head {
    score: f32,
    class: usize,
    pos: usize,
}

impl PartialEq for Head {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Head {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&o.score)
            .then(o.class.cmp(&self.class))
    }
}

/// Largest value of a row (NaNs ignored), in eight lanes so it vectorizes.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for ch in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(ch) {
            *l = max(*l, v);
        }
    }
    let mut m = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| max(a, b));
    for l in lanes {
        m = max(m, l);
    }
    m
}

/// Sum of a row in eight lanes (so it vectorizes); NaN propagates.
#[inline(always)]
fn row_sum(row: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for ch in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(ch) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `f32::min` without the NaN rule, so it vectorizes (NaN boxes have NaN
/// area and never suppress anything anyway).
#[inline(always)]
fn min(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `exp(x)` for `x ≤ 0` (Cephes' `expf`: x = n·ln2 + r, a degree-6
/// polynomial for e^r, about 1 ulp), branch-free so a row vectorizes;
/// below −87 it is 0, NaN stays NaN.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let xc = if x < -87.0 { -87.0 } else { x };
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let z = r * r;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * z
        + r
        + 1.0;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accel_core::detection::SsdLayer;

    fn seed() -> SsdSpec {
        let names: Vec<(String, String)> =
            (0..6).map(|i| (format!("c{i}"), format!("b{i}"))).collect();
        SsdSpec::ssd_vgg_300(&names)
    }

    /// One 2×2 layer, one anchor per cell, 3 classes (0 = background),
    /// logits given directly (no softmax), threshold 0.5.
    fn tiny() -> SsdSpec {
        SsdSpec {
            image_size: [100, 100],
            layers: vec![SsdLayer {
                scores: "s".into(),
                boxes: "b".into(),
                feature_size: [2, 2],
                step: [50.0, 50.0],
                sizes: vec![60.0],
                ratios: vec![],
            }],
            num_classes: 3,
            background_class: Some(0),
            softmax: false,
            variances: [0.1, 0.1, 0.2, 0.2],
            anchor_offset: 0.5,
            score_threshold: 0.5,
            nms_iou: 0.45,
            top_k: 400,
            keep_top_k: 200,
        }
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn seed_anchors_by_hand() {
        let spec = seed();
        let a = anchors(&spec);
        assert_eq!(a.len(), 8432);
        // Layer 0, cell (0, 0): centre 0.5·8/300; sizes 21, √(21·45), then
        // ratios 2 and ½ of 21.
        let c0 = 0.5 * 8.0 / 300.0;
        let want = [
            (21.0 / 300.0, 21.0 / 300.0),
            ((945.0f64).sqrt() / 300.0, (945.0f64).sqrt() / 300.0),
            (21.0 / 300.0 / 2f64.sqrt(), 21.0 / 300.0 * 2f64.sqrt()),
            (21.0 / 300.0 / 0.5f64.sqrt(), 21.0 / 300.0 * 0.5f64.sqrt()),
        ];
        for (i, (h, w)) in want.iter().enumerate() {
            assert!(close(a[i].cy, c0) && close(a[i].cx, c0), "{:?}", a[i]);
            assert!(
                close(a[i].h, *h as f32) && close(a[i].w, *w as f32),
                "{i}: {:?}",
                a[i]
            );
        }
        // Layer 0, cell (36, 36), last anchor: index 37·37·4 − 1.
        let l0 = a[37 * 37 * 4 - 1];
        assert!(close(l0.cy, 36.5 * 8.0 / 300.0) && close(l0.cx, 36.5 * 8.0 / 300.0));
        // Layer 1 starts at 5476 with size 45 at (0.5·16/300).
        let l1 = a[5476];
        assert!(close(l1.cy, 8.0 / 300.0) && close(l1.h, 0.15));
        // Last anchor: layer 5 (1×1, step 300, size 261), ratio ½.
        let last = a[8431];
        assert!(close(last.cy, 0.5) && close(last.cx, 0.5));
        assert!(close(last.h, 0.87 / 0.5f32.sqrt()), "{last:?}");
        assert!(close(last.w, 0.87 * 0.5f32.sqrt()), "{last:?}");
        // Its square √(261·315).
        let sq = a[8431 - 2];
        assert!(close(sq.h, (261.0f32 * 315.0).sqrt() / 300.0));
    }

    #[test]
    fn zero_offsets_decode_to_the_anchor_box() {
        let spec = seed();
        let dec = SsdDecoder::new(spec.clone()).unwrap();
        for &i in &[0usize, 1, 5475, 5476, 8000, 8431] {
            let a = dec.anchors()[i];
            let b = decode(&a, &[0.0; 4], &spec.variances);
            let want = [
                a.cy - a.h / 2.0,
                a.cx - a.w / 2.0,
                a.cy + a.h / 2.0,
                a.cx + a.w / 2.0,
            ];
            assert_eq!(b, want);
        }
        // Offsets move the centre by l·size·variance and scale by exp(l·var).
        let a = Anchor {
            cy: 0.5,
            cx: 0.4,
            h: 0.2,
            w: 0.1,
        };
        let b = decode(&a, &[1.0, -1.0, 0.0, 5.0], &[0.1, 0.1, 0.2, 0.2]);
        let (cx, cy, h) = (0.4 + 0.01, 0.5 - 0.02, 0.2 * 1f32.exp());
        let want = [cy - h / 2.0, cx - 0.05, cy + h / 2.0, cx + 0.05];
        for (x, y) in b.iter().zip(want) {
            assert!(close(*x, y), "{b:?} vs {want:?}");
        }
    }

    #[test]
    fn iou_cases() {
        let a = [0.0, 0.0, 1.0, 1.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[0.0, 0.5, 1.0, 1.5]), 0.5 / 1.5);
        assert_eq!(iou(&a, &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(iou(&a, &[0.5, 0.5, 0.5, 0.5]), 0.0, "zero area");
        assert_eq!(iou(&[0.5, 0.5, 0.5, 0.9], &[0.5, 0.5, 0.5, 0.9]), 0.0);
    }

    /// Runs `tiny()`-like specs. Its anchors sit at centres 0.25 / 0.75 with
    /// side 0.6: with zero offsets anchors 0 and 1 are [−0.05, 0.55] and
    /// [0.45, 1.05] across, IoU 0.06 / 0.66 ≈ 0.09.
    fn run(spec: SsdSpec, scores: &[f32], boxes: &[f32]) -> Vec<Detection> {
        SsdDecoder::new(spec)
            .unwrap()
            .detect(&[scores], &[boxes])
            .unwrap()
    }

    #[test]
    fn nms_same_class_keeps_one_different_classes_keep_both() {
        let spec = tiny();
        // Anchors 0 and 1 moved onto the same place (anchor 1 shifted left
        // by half a cell: x offset −0.5/(0.6·0.1) ≈ −8.33).
        let mut boxes = vec![0.0f32; 16];
        boxes[4] = -0.5 / (0.6 * 0.1);
        // Same class 1: only the better one stays.
        let scores = [
            0.0, 0.9, 0.0, //
            0.0, 0.8, 0.0, //
            0.0, 0.0, 0.0, //
            0.0, 0.0, 0.0,
        ];
        let d = run(spec.clone(), &scores, &boxes);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].class, d[0].anchor, d[0].score), (1, 0, 0.9));
        // Different classes: both.
        let scores = [
            0.0, 0.9, 0.0, //
            0.0, 0.0, 0.8, //
            0.0, 0.0, 0.0, //
            0.0, 0.0, 0.0,
        ];
        let d = run(spec.clone(), &scores, &boxes);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0].class, d[0].anchor), (1, 0));
        assert_eq!((d[1].class, d[1].anchor), (2, 1));
        for x in d[1].bbox.iter().zip(d[0].bbox) {
            assert!((x.0 - x.1).abs() < 1e-5, "{d:?}");
        }
        // Without moving, anchors 0 and 1 barely overlap: both kept.
        let scores = [
            0.0, 0.9, 0.0, //
            0.0, 0.8, 0.0, //
            0.0, 0.0, 0.0, //
            0.0, 0.0, 0.0,
        ];
        let d = run(spec, &scores, &[0.0; 16]);
        assert_eq!(d.len(), 2, "{d:?}");
        for (x, y) in d[0].bbox.iter().zip([-0.05, -0.05, 0.55, 0.55]) {
            assert!(close(*x, y), "{d:?}");
        }
    }

    #[test]
    fn threshold_top_k_and_keep_top_k() {
        let mut spec = tiny();
        // Four separate anchors, class 1 scores 0.9, 0.5 (not above), 0.7, 0.6;
        // class 2: 0.55 on anchor 3.
        let scores = [
            0.1, 0.9, 0.0, //
            0.2, 0.5, 0.0, //
            0.3, 0.7, 0.0, //
            0.4, 0.6, 0.55,
        ];
        let boxes = [0.0; 16];
        let d = run(spec.clone(), &scores, &boxes);
        let got: Vec<(usize, usize)> = d.iter().map(|d| (d.class, d.anchor)).collect();
        assert_eq!(got, vec![(1, 0), (1, 2), (1, 3), (2, 3)]);
        // top_k = 2 per class: class 1 keeps 0.9 and 0.7.
        spec.top_k = 2;
        let d = run(spec.clone(), &scores, &boxes);
        let got: Vec<(usize, usize)> = d.iter().map(|d| (d.class, d.anchor)).collect();
        assert_eq!(got, vec![(1, 0), (1, 2), (2, 3)]);
        // keep_top_k = 2 over all classes.
        spec.keep_top_k = 2;
        let d = run(spec.clone(), &scores, &boxes);
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].score, 0.7);
        // A higher threshold.
        spec.score_threshold = 0.8;
        assert_eq!(run(spec, &scores, &boxes).len(), 1);
    }

    #[test]
    fn ties_break_by_class_then_anchor() {
        let spec = tiny();
        let scores = [
            0.0, 0.7, 0.7, //
            0.0, 0.0, 0.0, //
            0.0, 0.0, 0.7, //
            0.0, 0.7, 0.0,
        ];
        let d = run(spec, &scores, &[0.0; 16]);
        let got: Vec<(usize, usize)> = d.iter().map(|d| (d.class, d.anchor)).collect();
        assert_eq!(got, vec![(1, 0), (1, 3), (2, 0), (2, 2)]);
    }

    #[test]
    fn background_is_never_reported() {
        let mut spec = tiny();
        let scores = [
            0.99, 0.0, 0.0, //
            0.99, 0.0, 0.0, //
            0.99, 0.0, 0.0, //
            0.99, 0.0, 0.0,
        ];
        assert!(run(spec.clone(), &scores, &[0.0; 16]).is_empty());
        // With softmax and a low threshold every other class may pass, the
        // background still not.
        spec.softmax = true;
        spec.score_threshold = 0.01;
        let d = run(spec.clone(), &scores, &[0.0; 16]);
        assert_eq!(d.len(), 8, "{d:?}");
        assert!(d.iter().all(|d| d.class != 0));
        // Another background index.
        spec.background_class = Some(2);
        let d = run(spec.clone(), &scores, &[0.0; 16]);
        assert!(d.iter().all(|d| d.class != 2) && d.iter().any(|d| d.class == 0));
        // No background at all: every class may be reported.
        spec.background_class = None;
        let d = run(spec, &scores, &[0.0; 16]);
        assert_eq!(d.len(), 12);
    }

    #[test]
    fn softmax_scores_are_probabilities() {
        let mut spec = tiny();
        spec.softmax = true;
        // Anchors 1 and 2: the background wins; anchor 3's NaN spoils its
        // whole row.
        spec.score_threshold = 0.2;
        let nan = f32::NAN;
        #[rustfmt::skip]
        let scores = [
            0.0, 2.0, 1.0,
            5.0, 0.0, 0.0,
            3.0, 0.0, 0.0,
            nan, 9.0, 0.0,
        ];
        let d = run(spec, &scores, &[0.0; 16]);
        let e = 1.0 + 2f32.exp() + 1f32.exp();
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0].class, d[0].anchor), (1, 0));
        assert!(close(d[0].score, 2f32.exp() / e));
        assert_eq!((d[1].class, d[1].anchor), (2, 0));
        assert!(close(d[1].score, 1f32.exp() / e));
    }

    #[test]
    fn wrong_lengths_are_refused_naming_the_layer() {
        let dec = SsdDecoder::new(seed()).unwrap();
        let scores: Vec<Vec<f32>> = dec
            .spec()
            .layers
            .iter()
            .map(|l| vec![0.0; l.anchor_count() * 21])
            .collect();
        let boxes: Vec<Vec<f32>> = dec
            .spec()
            .layers
            .iter()
            .map(|l| vec![0.0; l.anchor_count() * 4])
            .collect();
        let s: Vec<&[f32]> = scores.iter().map(|v| v.as_slice()).collect();
        let b: Vec<&[f32]> = boxes.iter().map(|v| v.as_slice()).collect();
        assert!(dec.detect(&s, &b).unwrap().is_empty());
        let mut s2 = s.clone();
        s2[3] = &scores[3][1..];
        let e = dec.detect(&s2, &b).unwrap_err().to_string();
        assert!(e.contains("layer 3") && e.contains("c3"), "{e}");
        let mut b2 = b.clone();
        b2[5] = &boxes[4];
        let e = dec.detect(&s, &b2).unwrap_err().to_string();
        assert!(e.contains("layer 5") && e.contains("b5"), "{e}");
        let e = dec.detect(&s[..5], &b[..5]).unwrap_err().to_string();
        assert!(e.contains("6 layers"), "{e}");
        // An invalid spec is refused up front.
        let mut bad = seed();
        bad.layers[1].feature_size = [0, 19];
        let e = SsdDecoder::new(bad).unwrap_err().to_string();
        assert!(e.contains("layer 1"), "{e}");
    }

    #[test]
    fn fast_exp_is_close_to_std() {
        let mut x = 0.0f32;
        while x > -87.0 {
            let (a, b) = (exp_nonpositive(x), x.exp());
            assert!((a - b).abs() <= 3e-7 * b, "exp({x}) = {a}, std {b}");
            x -= 0.0137;
        }
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    /// The straightforward algorithm (softmax with `f32::exp`, every class
    /// sorted in full, NMS per class, one final sort) on random logits.
    fn naive(spec: &SsdSpec, scores: &[&[f32]], boxes: &[&[f32]]) -> Vec<Detection> {
        let c = spec.num_classes;
        let mut probs: Vec<f32> = scores.concat();
        if spec.softmax {
            crate::postprocess::softmax_rows(&mut probs, c);
        }
        let locs: Vec<f32> = boxes.concat();
        let anchors = anchors(spec);
        let mut out = Vec::new();
        for class in (0..c).filter(|&k| Some(k) != spec.background_class) {
            let mut cands: Vec<(f32, usize)> = (0..anchors.len())
                .map(|a| (probs[a * c + class], a))
                .filter(|p| p.0 > spec.score_threshold)
                .collect();
            cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            cands.truncate(spec.top_k);
            let mut kept: Vec<Detection> = Vec::new();
            for (score, a) in cands {
                let bbox = decode(&anchors[a], &locs[a * 4..a * 4 + 4], &spec.variances);
                if !kept.iter().any(|k| iou(&k.bbox, &bbox) > spec.nms_iou) {
                    kept.push(Detection {
                        class,
                        score,
                        anchor: a,
                        bbox,
                    });
                }
            }
            out.extend(kept);
        }
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.class.cmp(&b.class))
                .then(a.anchor.cmp(&b.anchor))
        });
        out.truncate(spec.keep_top_k);
        out
    }

    fn random_inputs(spec: &SsdSpec, seed: u32, amp: f32) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let mut state = seed;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        let c = spec.num_classes;
        let scores = spec
            .layers
            .iter()
            .map(|l| (0..l.anchor_count() * c).map(|_| rnd() * amp).collect())
            .collect();
        let boxes = spec
            .layers
            .iter()
            .map(|l| (0..l.anchor_count() * 4).map(|_| rnd() * 3.0).collect())
            .collect();
        (scores, boxes)
    }

    #[test]
    fn agrees_with_the_straightforward_algorithm() {
        let base = seed();
        let cases = [
            (0.5, 0.45, 400, 200, 3.0, true),
            (0.2, 0.45, 400, 200, 3.0, true),
            (0.1, 0.3, 50, 100, 4.0, true),
            (0.3, 0.6, 20, 30, 2.0, true),
            (0.9, 0.45, 400, 200, 6.0, false),
            (0.05, 0.0, 400, 10_000, 3.0, true),
            (0.05, 1.0, 100, 10_000, 3.0, true),
        ];
        for (i, &(t, nms, top_k, keep, amp, softmax)) in cases.iter().enumerate() {
            let mut spec = base.clone();
            spec.score_threshold = t;
            spec.nms_iou = nms;
            spec.top_k = top_k;
            spec.keep_top_k = keep;
            spec.softmax = softmax;
            let (scores, boxes) = random_inputs(&spec, 0x9e37_79b9 + i as u32, amp);
            let s: Vec<&[f32]> = scores.iter().map(|v| v.as_slice()).collect();
            let b: Vec<&[f32]> = boxes.iter().map(|v| v.as_slice()).collect();
            let got = SsdDecoder::new(spec.clone())
                .unwrap()
                .detect(&s, &b)
                .unwrap();
            let want = naive(&spec, &s, &b);
            assert!(!want.is_empty(), "case {i}: nothing detected");
            assert_eq!(got.len(), want.len(), "case {i}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(
                    (g.class, g.anchor, g.bbox),
                    (w.class, w.anchor, w.bbox),
                    "case {i}"
                );
                assert!(
                    (g.score - w.score).abs() <= 1e-6 * w.score,
                    "case {i}: {g:?} {w:?}"
                );
            }
        }
    }

    #[test]
    fn decoder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SsdDecoder>();
    }
}

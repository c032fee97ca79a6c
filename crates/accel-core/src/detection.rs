//! Detection postprocessing specs: SSD anchors, box decoding, thresholds and
//! non-maximum suppression. Stored inside a [`crate::PipelineSpec`].
//!
//! The layout follows the SSD-VGG of Azure ML Hardware Accelerated Models
//! (Balanca's SSD-TensorFlow port, Apache-2.0): for each feature map the
//! model emits a class tensor `[N, H, W, A, C]` (pre-softmax) and a box
//! tensor `[N, H, W, A, 4]`, anchors per cell are the square `sizes[0]`, the
//! square `sqrt(sizes[0]·sizes[1])`, then one per aspect ratio.

use crate::error::CoreError;
use serde::{Deserialize, Serialize};

/// One feature map of an SSD head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsdLayer {
    /// Model output with the class scores (empty in a preset: matched to
    /// the model's outputs by their sizes when the model is registered), shape `[N, H, W, A, C]`
    /// (or `[N, H·W·A, C]`, or `[N, H·W·A·C]`: only the element order matters).
    pub scores: String,
    /// Model output with the box offsets, shape `[N, H, W, A, 4]` (same rule).
    pub boxes: String,
    /// Feature map size `[H, W]`.
    pub feature_size: [usize; 2],
    /// Distance between anchor centres, in input pixels `[y, x]`.
    pub step: [f32; 2],
    /// Anchor sizes in input pixels: `[s0]` or `[s0, s1]` (the second adds
    /// a square of side `sqrt(s0·s1)`).
    pub sizes: Vec<f32>,
    /// Aspect ratios `w / h` of the extra anchors (each gives
    /// `h = s0/√r`, `w = s0·√r`).
    #[serde(default)]
    pub ratios: Vec<f32>,
}

impl SsdLayer {
    /// Anchors per cell.
    pub fn anchors_per_cell(&self) -> usize {
        self.sizes.len().min(2) + self.ratios.len()
    }

    /// Anchors in this layer.
    pub fn anchor_count(&self) -> usize {
        self.feature_size[0] * self.feature_size[1] * self.anchors_per_cell()
    }
}

/// SSD postprocessing: anchors, decoding, per-class threshold, NMS, top-k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsdSpec {
    /// The input size anchors are expressed in, `[H, W]` pixels (300×300 for SSD300).
    pub image_size: [u32; 2],
    /// The feature maps, in the model's order.
    pub layers: Vec<SsdLayer>,
    /// Number of classes including the background class.
    pub num_classes: usize,
    /// Index of the background class (never reported); `None` when there is none.
    #[serde(default = "default_background")]
    pub background_class: Option<usize>,
    /// Apply softmax over each anchor's class scores (the model emits logits).
    #[serde(default = "default_true")]
    pub softmax: bool,
    /// Box-offset scaling `[x, y, w, h]` ("variances", "prior scaling").
    #[serde(default = "default_variances")]
    pub variances: [f32; 4],
    /// Offset of an anchor centre inside its cell, in cells.
    #[serde(default = "default_offset")]
    pub anchor_offset: f32,
    /// A class is kept for a box when its score is above this.
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f32,
    /// Boxes of the same class overlapping a better one by more than this IoU are dropped.
    #[serde(default = "default_nms_iou")]
    pub nms_iou: f32,
    /// Boxes per class considered by NMS (best first).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Detections per image after NMS, over all classes (the output's second dimension).
    #[serde(default = "default_keep_top_k")]
    pub keep_top_k: usize,
}

fn default_background() -> Option<usize> {
    Some(0)
}
fn default_true() -> bool {
    true
}
fn default_variances() -> [f32; 4] {
    [0.1, 0.1, 0.2, 0.2]
}
fn default_offset() -> f32 {
    0.5
}
fn default_score_threshold() -> f32 {
    0.5
}
fn default_nms_iou() -> f32 {
    0.45
}
fn default_top_k() -> usize {
    400
}
fn default_keep_top_k() -> usize {
    200
}

/// Names of the detection outputs (those of the TensorFlow Object Detection API).
pub mod outputs {
    /// `[N, K, 4]` float32: `ymin, xmin, ymax, xmax` in pixels of the original image.
    pub const BOXES: &str = "detection_boxes";
    /// `[N, K]` float32: class indices (as the TF Object Detection API returns them).
    pub const CLASSES: &str = "detection_classes";
    /// `[N, K]` float32: scores, best first; padding rows score 0.
    pub const SCORES: &str = "detection_scores";
    /// `[N]` float32: how many of the K rows are real detections.
    pub const NUM: &str = "num_detections";
    /// All four, in the order the pipeline returns them.
    pub const ALL: [&str; 4] = [BOXES, CLASSES, SCORES, NUM];
}

impl SsdSpec {
    /// Total anchors over all layers.
    pub fn anchor_count(&self) -> usize {
        self.layers.iter().map(SsdLayer::anchor_count).sum()
    }

    /// The seed's SSD-VGG 300 (VOC, 21 classes) head layout, with the given
    /// output names per layer (`(scores, boxes)`, six of them).
    pub fn ssd_vgg_300(names: &[(String, String)]) -> SsdSpec {
        let feats = [37usize, 19, 10, 5, 3, 1];
        let steps = [8.0f32, 16.0, 32.0, 64.0, 100.0, 300.0];
        let sizes = [
            [21.0f32, 45.0],
            [45.0, 99.0],
            [99.0, 153.0],
            [153.0, 207.0],
            [207.0, 261.0],
            [261.0, 315.0],
        ];
        let two = vec![2.0, 0.5];
        let four = vec![2.0, 0.5, 3.0, 1.0 / 3.0];
        let ratios = [
            two.clone(),
            four.clone(),
            four.clone(),
            four,
            two.clone(),
            two,
        ];
        SsdSpec {
            image_size: [300, 300],
            layers: (0..6)
                .map(|i| SsdLayer {
                    scores: names.get(i).map(|n| n.0.clone()).unwrap_or_default(),
                    boxes: names.get(i).map(|n| n.1.clone()).unwrap_or_default(),
                    feature_size: [feats[i], feats[i]],
                    step: [steps[i], steps[i]],
                    sizes: sizes[i].to_vec(),
                    ratios: ratios[i].clone(),
                })
                .collect(),
            num_classes: 21,
            background_class: Some(0),
            softmax: true,
            variances: default_variances(),
            anchor_offset: default_offset(),
            score_threshold: default_score_threshold(),
            nms_iou: default_nms_iou(),
            top_k: default_top_k(),
            keep_top_k: default_keep_top_k(),
        }
    }

    /// Checks internal consistency.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::Spec(format!("ssd: {m}")));
        if self.layers.is_empty() {
            return bad("needs at least one layer".into());
        }
        if self.image_size.contains(&0) {
            return bad("image_size must be positive".into());
        }
        if self.num_classes < 2 && self.background_class.is_some() {
            return bad("num_classes must count the background and at least one class".into());
        }
        if self.num_classes == 0 {
            return bad("num_classes must be at least 1".into());
        }
        if let Some(b) = self.background_class {
            if b >= self.num_classes {
                return bad(format!(
                    "background_class {b} is not below num_classes {}",
                    self.num_classes
                ));
            }
        }
        for (i, l) in self.layers.iter().enumerate() {
            // Both empty: matched to the model's outputs by size at registration.
            if l.scores.is_empty() != l.boxes.is_empty() {
                return bad(format!("layer {i} needs both a scores and a boxes output"));
            }
            if l.feature_size.contains(&0) || l.feature_size.iter().any(|d| *d > 4096) {
                return bad(format!("layer {i}: feature_size must be 1..=4096"));
            }
            if l.sizes.is_empty() || l.sizes.len() > 2 {
                return bad(format!("layer {i}: sizes must hold one or two values"));
            }
            let positive = |v: &f32| v.is_finite() && *v > 0.0;
            if !l.sizes.iter().all(positive)
                || !l.ratios.iter().all(positive)
                || !l.step.iter().all(positive)
            {
                return bad(format!(
                    "layer {i}: sizes, ratios and step must be positive"
                ));
            }
        }
        if !self.variances.iter().all(|v| v.is_finite() && *v > 0.0) {
            return bad("variances must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.nms_iou) {
            return bad("nms_iou must be in 0..=1".into());
        }
        if !self.score_threshold.is_finite() || !self.anchor_offset.is_finite() {
            return bad("score_threshold and anchor_offset must be finite".into());
        }
        if self.top_k == 0 || self.keep_top_k == 0 || self.keep_top_k > 10_000 {
            return bad("top_k must be at least 1 and keep_top_k in 1..=10000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_layout_has_8432_anchors() {
        let names: Vec<(String, String)> =
            (0..6).map(|i| (format!("c{i}"), format!("b{i}"))).collect();
        let spec = SsdSpec::ssd_vgg_300(&names);
        spec.validate().unwrap();
        // 37²·4 + 19²·6 + 10²·6 + 5²·6 + 3²·4 + 1·4
        assert_eq!(spec.anchor_count(), 5476 + 2166 + 600 + 150 + 36 + 4);
    }

    #[test]
    fn bad_specs_name_the_problem() {
        let names: Vec<(String, String)> =
            (0..6).map(|i| (format!("c{i}"), format!("b{i}"))).collect();
        let mut spec = SsdSpec::ssd_vgg_300(&names);
        spec.layers[2].sizes.clear();
        assert!(spec.validate().unwrap_err().to_string().contains("layer 2"));
        let mut spec = SsdSpec::ssd_vgg_300(&names);
        spec.background_class = Some(21);
        assert!(spec
            .validate()
            .unwrap_err()
            .to_string()
            .contains("background_class"));
    }
}

//! Pipeline specifications: how raw request bytes become the model's input
//! tensor, and how its outputs become answers. Stored with each registered
//! model (as JSON) and accepted from users as TOML or JSON.

use crate::error::CoreError;
use serde::{Deserialize, Serialize};

/// What a pipeline accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputKind {
    /// A batch of encoded images (JPEG/PNG) as a string tensor of shape `[N]`.
    EncodedImages,
    /// A raw numeric tensor passed straight to the model.
    Tensor,
}

/// How the decoded image is resized to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Resize {
    /// Scale so the shorter side is `shorter_side` (aspect preserved), then
    /// cut the centered `crop_width` × `crop_height` window.
    ShorterSideCenterCrop {
        /// Target length of the shorter side after scaling.
        shorter_side: u32,
        /// Width of the center crop.
        crop_width: u32,
        /// Height of the center crop.
        crop_height: u32,
    },
    /// Scale to exactly `width` × `height`, ignoring the aspect ratio.
    Plain {
        /// Output width.
        width: u32,
        /// Output height.
        height: u32,
    },
}

impl Resize {
    /// The (width, height) of the tensor this resize produces.
    pub fn output_size(&self) -> (u32, u32) {
        match *self {
            Resize::ShorterSideCenterCrop {
                crop_width,
                crop_height,
                ..
            } => (crop_width, crop_height),
            Resize::Plain { width, height } => (width, height),
        }
    }
}

/// Channel order of the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red.
    Bgr,
}

/// Memory layout of the model's image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Batch, channels, height, width.
    Nchw,
    /// Batch, height, width, channels.
    Nhwc,
}

/// Image preprocessing. Each channel value `p` in 0..=255 becomes
/// `(p * scale - mean[c]) / std[c]`, with `c` in the model's channel order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Resizing and cropping.
    pub resize: Resize,
    /// Channel order the model expects.
    pub channel_order: ChannelOrder,
    /// Multiplier applied to the 0..=255 value first.
    pub scale: f32,
    /// Per-channel mean subtracted after scaling, in the model's channel order.
    pub mean: [f32; 3],
    /// Per-channel divisor applied last, in the model's channel order.
    pub std: [f32; 3],
    /// Layout of the produced tensor.
    pub layout: Layout,
}

/// One model output exposed by the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The model's own output name.
    pub name: String,
    /// Other names clients may use for it (e.g. a TensorFlow tensor name).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Apply softmax along the last axis (the model outputs logits).
    #[serde(default)]
    pub softmax: bool,
}

/// Labels attached to a classifier: how many, and where their text lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsRef {
    /// sha256 of the labels blob (one label per line, UTF-8).
    pub sha256: String,
    /// Number of labels.
    pub count: usize,
}

/// A complete pipeline: input handling, preprocessing, outputs, postprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// What requests carry.
    pub input_kind: InputKind,
    /// The model's input name. Empty means "the model's first input".
    #[serde(default)]
    pub input_name: String,
    /// Other names clients may use for the input (e.g. `Placeholder:0`, `images`).
    #[serde(default)]
    pub input_aliases: Vec<String>,
    /// Image preprocessing; required when `input_kind` is `encoded-images`.
    #[serde(default)]
    pub preprocess: Option<Preprocess>,
    /// Outputs exposed. Empty means "every model output, as is".
    #[serde(default)]
    pub outputs: Vec<OutputSpec>,
    /// How many classes `top-k` reports by default.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Class labels, if any.
    #[serde(default)]
    pub labels: Option<LabelsRef>,
    /// Detection postprocessing. When set, the pipeline answers with
    /// `detection_boxes`, `detection_classes`, `detection_scores` and
    /// `num_detections` (plus any `outputs` listed explicitly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<crate::detection::SsdSpec>,
}

fn default_top_k() -> usize {
    5
}

/// Named starting points for common model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// torchvision / ONNX Model Zoo: shorter side 256, crop 224, ÷255,
    /// ImageNet mean/std, RGB, NCHW; the model outputs logits (softmax applied).
    Torchvision,
    /// Azure ML Hardware Accelerated Models (`preprocess_array`): shorter side
    /// 256, crop 224, 0..255 minus 123.68/116.779/103.939, no std, RGB, NHWC.
    AzuremlAccel,
    /// The seed's SSD-VGG 300 detector: plain resize to 300×300, 0..255 minus
    /// the VGG means R 123, G 117, B 104, RGB, NHWC; SSD postprocessing with
    /// the seed's anchors (21 VOC classes). The head outputs are matched to
    /// the layers by their sizes when the model is registered.
    SsdVgg300,
}

impl std::str::FromStr for Preset {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "torchvision" => Ok(Preset::Torchvision),
            "azureml-accel" => Ok(Preset::AzuremlAccel),
            "ssd-vgg-300" => Ok(Preset::SsdVgg300),
            other => Err(CoreError::Spec(format!(
                "unknown preset {other:?} (expected torchvision, azureml-accel or ssd-vgg-300)"
            ))),
        }
    }
}

impl Preset {
    /// The pipeline this preset stands for. Input and output names are left
    /// empty: they are filled from the model when it is registered.
    pub fn spec(self) -> PipelineSpec {
        if self == Preset::SsdVgg300 {
            return ssd_vgg_300_spec();
        }
        let resize = Resize::ShorterSideCenterCrop {
            shorter_side: 256,
            crop_width: 224,
            crop_height: 224,
        };
        let (preprocess, softmax) = match self {
            Preset::Torchvision => (
                Preprocess {
                    resize,
                    channel_order: ChannelOrder::Rgb,
                    scale: 1.0 / 255.0,
                    mean: [0.485, 0.456, 0.406],
                    std: [0.229, 0.224, 0.225],
                    layout: Layout::Nchw,
                },
                true,
            ),
            Preset::AzuremlAccel | Preset::SsdVgg300 => (
                Preprocess {
                    resize,
                    channel_order: ChannelOrder::Rgb,
                    scale: 1.0,
                    mean: [123.68, 116.779, 103.939],
                    std: [1.0, 1.0, 1.0],
                    layout: Layout::Nhwc,
                },
                false,
            ),
        };
        PipelineSpec {
            input_kind: InputKind::EncodedImages,
            input_name: String::new(),
            input_aliases: vec!["images".into()],
            preprocess: Some(preprocess),
            outputs: vec![OutputSpec {
                name: String::new(),
                aliases: vec![],
                softmax,
            }],
            top_k: 5,
            labels: None,
            detection: None,
        }
    }
}

fn ssd_vgg_300_spec() -> PipelineSpec {
    PipelineSpec {
        input_kind: InputKind::EncodedImages,
        input_name: String::new(),
        input_aliases: vec!["images".into()],
        preprocess: Some(Preprocess {
            resize: Resize::Plain {
                width: 300,
                height: 300,
            },
            channel_order: ChannelOrder::Rgb,
            scale: 1.0,
            mean: [123.0, 117.0, 104.0],
            std: [1.0, 1.0, 1.0],
            layout: Layout::Nhwc,
        }),
        outputs: vec![],
        top_k: 5,
        labels: None,
        detection: Some(crate::detection::SsdSpec::ssd_vgg_300(&[])),
    }
}

impl Preprocess {
    /// Switches to BGR, reordering `mean` and `std` so each still applies to
    /// the same colour.
    pub fn set_channel_order(&mut self, order: ChannelOrder) {
        if order != self.channel_order {
            self.mean.reverse();
            self.std.reverse();
            self.channel_order = order;
        }
    }
}

impl PipelineSpec {
    /// Parses a spec from TOML or JSON text (JSON if it starts with `{`).
    pub fn parse(text: &str) -> Result<Self, CoreError> {
        let spec: PipelineSpec = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| CoreError::Spec(e.to_string()))?
        } else {
            toml::from_str(text).map_err(|e| CoreError::Spec(e.to_string()))?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks internal consistency.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |m: &str| Err(CoreError::Spec(m.to_string()));
        if self.input_kind == InputKind::EncodedImages && self.preprocess.is_none() {
            return bad("input_kind = encoded-images needs a [preprocess] section");
        }
        if let Some(p) = &self.preprocess {
            let (w, h) = p.resize.output_size();
            if w == 0 || h == 0 || w > 8192 || h > 8192 {
                return bad("resize output must be between 1 and 8192 pixels per side");
            }
            if let Resize::ShorterSideCenterCrop {
                shorter_side,
                crop_width,
                crop_height,
            } = p.resize
            {
                if shorter_side < crop_width.min(crop_height) || shorter_side > 16384 {
                    return bad(
                        "shorter_side must be at least the smaller crop side, at most 16384",
                    );
                }
            }
            if !p.scale.is_finite() || p.scale == 0.0 {
                return bad("scale must be a finite, non-zero number");
            }
            if p.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
                return bad("std values must be finite and non-zero");
            }
            if p.mean.iter().any(|m| !m.is_finite()) {
                return bad("mean values must be finite");
            }
        }
        if self.top_k == 0 {
            return bad("top_k must be at least 1");
        }
        if let Some(d) = &self.detection {
            d.validate()?;
        }
        Ok(())
    }

    /// Serializes as pretty JSON (the stored form).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("spec serializes")
    }

    /// Serializes as TOML (the form users edit).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("spec serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_toml_and_json() {
        for preset in [Preset::Torchvision, Preset::AzuremlAccel, Preset::SsdVgg300] {
            let spec = preset.spec();
            spec.validate().unwrap();
            assert_eq!(PipelineSpec::parse(&spec.to_toml()).unwrap(), spec);
            assert_eq!(PipelineSpec::parse(&spec.to_json()).unwrap(), spec);
        }
    }

    #[test]
    fn inconsistent_specs_are_refused_with_the_reason() {
        let mut spec = Preset::Torchvision.spec();
        spec.preprocess.as_mut().unwrap().std = [0.0, 1.0, 1.0];
        assert!(spec.validate().unwrap_err().to_string().contains("std"));
        let mut spec = Preset::Torchvision.spec();
        spec.preprocess = None;
        assert!(spec
            .validate()
            .unwrap_err()
            .to_string()
            .contains("preprocess"));
        let err = PipelineSpec::parse("input_kind = \"encoded-images\"\nbogus = 1").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn bgr_reorders_mean_and_std() {
        let mut p = Preset::AzuremlAccel.spec().preprocess.unwrap();
        p.set_channel_order(ChannelOrder::Bgr);
        assert_eq!(p.mean, [103.939, 116.779, 123.68]);
    }
}

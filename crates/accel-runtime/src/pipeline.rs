//! Compiled pipelines: encoded images → preprocessing → engine → softmax /
//! top-k. Compiled once per loaded model; immutable and `Send + Sync`.

use crate::detect::SsdDecoder;
use crate::engine::{Plan, TensorInfo};
use crate::error::RuntimeError;
use crate::image::geometry::SourceGeometry;
use crate::image::{decode_rgb, preprocess_into};
use crate::limits::Limits;
use crate::onnx_info::ModelIo;
use crate::postprocess::{softmax_rows, top_k};
use accel_core::detection::{outputs as det_out, SsdSpec};
use accel_core::spec::{InputKind, Layout, OutputSpec, PipelineSpec};
use accel_core::{DType, Tensor, TensorData};
use std::time::Instant;

/// Per-stage wall times of one call, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Timings {
    /// Decoding and preprocessing every image of the batch.
    pub preprocess_ms: f64,
    /// The engine's run.
    pub inference_ms: f64,
    /// Softmax and output assembly.
    pub postprocess_ms: f64,
}

/// One exposed output of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedOutput {
    /// The model's output name.
    pub name: String,
    /// Other names the pipeline answers to.
    pub aliases: Vec<String>,
    /// The values (softmax applied when the spec says so).
    pub tensor: Tensor,
}

/// One class of a top-k answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassScore {
    /// Class index.
    pub index: usize,
    /// Label, when the model has labels.
    pub label: Option<String>,
    /// Score (probability when softmax applies).
    pub score: f32,
}

/// The top-k classes of one image.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImageResult {
    /// Best first.
    pub top: Vec<ClassScore>,
}

/// A preprocessed batch: the model's input and where each item came from.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The model-ready input tensor.
    pub tensor: Tensor,
    /// Per item, how model-input positions map back to the original image
    /// (empty for raw tensor requests).
    pub sources: Vec<SourceGeometry>,
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DetectedObject {
    /// Class index.
    pub class: usize,
    /// Label, when the model has labels.
    pub label: Option<String>,
    /// Score.
    pub score: f32,
    /// `[ymin, xmin, ymax, xmax]` in pixels of the original image.
    pub bbox: [f32; 4],
}

/// Information about one exposed output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputInfo {
    /// The name.
    pub name: String,
    /// Other names the pipeline answers to.
    pub aliases: Vec<String>,
    /// Element type.
    pub dtype: DType,
    /// Dimensions; `None` where dynamic (the batch).
    pub shape: Vec<Option<usize>>,
}

/// Fills the names a spec leaves empty from the model, and checks that the
/// spec's preprocessing produces what the model's input expects.
pub fn resolve_spec(mut spec: PipelineSpec, io: &ModelIo) -> Result<PipelineSpec, RuntimeError> {
    if io.inputs.len() != 1 {
        return Err(RuntimeError::Spec(format!(
            "the model has {} inputs; Accel pipelines take models with exactly one",
            io.inputs.len()
        )));
    }
    let input = &io.inputs[0];
    if spec.input_name.is_empty() {
        spec.input_name = input.name.clone();
    } else if spec.input_name != input.name {
        return Err(RuntimeError::Spec(format!(
            "the spec names input {:?}, the model's input is {:?}",
            spec.input_name, input.name
        )));
    }
    if let Some(det) = spec.detection.as_mut() {
        resolve_detection(det, io)?;
        // Detection pipelines expose the detections, plus only the outputs
        // listed explicitly (a preset's unnamed default output is dropped).
        spec.outputs.retain(|o| !o.name.is_empty());
    } else if spec.outputs.is_empty() {
        spec.outputs = io
            .outputs
            .iter()
            .map(|o| OutputSpec {
                name: o.name.clone(),
                aliases: vec![],
                softmax: false,
            })
            .collect();
    }
    if spec.outputs.len() == 1 && spec.outputs[0].name.is_empty() {
        if io.outputs.len() != 1 {
            return Err(RuntimeError::Spec(format!(
                "the model has {} outputs ({}); name the one to expose",
                io.outputs.len(),
                io.outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        spec.outputs[0].name = io.outputs[0].name.clone();
    }
    for o in &spec.outputs {
        if !io.outputs.iter().any(|m| m.name == o.name) {
            return Err(RuntimeError::Spec(format!(
                "the spec names output {:?}, which the model does not have",
                o.name
            )));
        }
    }
    if let (InputKind::EncodedImages, Some(pre)) = (spec.input_kind, &spec.preprocess) {
        if input.dtype != DType::F32 {
            return Err(RuntimeError::Spec(format!(
                "input {:?} is {}, image preprocessing produces float32",
                input.name, input.dtype
            )));
        }
        let (w, h) = pre.resize.output_size();
        let want = match pre.layout {
            Layout::Nchw => [3, h as usize, w as usize],
            Layout::Nhwc => [h as usize, w as usize, 3],
        };
        let dims = &input.shape;
        let fits = dims.len() == 4
            && dims[1..]
                .iter()
                .zip(want)
                .all(|(d, w)| d.is_none_or(|d| d == w));
        if !fits {
            return Err(RuntimeError::Spec(format!(
                "input {:?} has shape {}, preprocessing produces [N, {}, {}, {}] ({:?}); \
                 check the layout and the resize size",
                input.name,
                shape_text(dims),
                want[0],
                want[1],
                want[2],
                pre.layout
            )));
        }
    }
    spec.validate()
        .map_err(|e| RuntimeError::Spec(e.to_string()))?;
    Ok(spec)
}

/// Static element count of one batch item of an output, if known.
fn item_elements(info: &TensorInfo) -> Option<usize> {
    info.shape
        .iter()
        .skip(1)
        .try_fold(1usize, |acc, d| d.map(|d| acc * d))
}

/// Fills a detection spec's empty layer names from the model's outputs,
/// matched by their sizes, and checks named ones exist with the right size.
fn resolve_detection(det: &mut SsdSpec, io: &ModelIo) -> Result<(), RuntimeError> {
    let classes = det.num_classes;
    let listing = || {
        io.outputs
            .iter()
            .map(|o| format!("{} {}", o.name, shape_text(&o.shape)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut taken: Vec<String> = det
        .layers
        .iter()
        .flat_map(|l| [l.scores.clone(), l.boxes.clone()])
        .filter(|n| !n.is_empty())
        .collect();
    for (i, layer) in det.layers.iter_mut().enumerate() {
        let anchors = layer.anchor_count();
        let (fh, fw, per_cell) = (
            layer.feature_size[0],
            layer.feature_size[1],
            layer.anchors_per_cell(),
        );
        for (name, width, what) in [
            (&mut layer.scores, classes, "scores"),
            (&mut layer.boxes, 4, "boxes"),
        ] {
            let want = anchors * width;
            if name.is_empty() {
                let found = io
                    .outputs
                    .iter()
                    .find(|o| item_elements(o) == Some(want) && !taken.contains(&o.name))
                    .ok_or_else(|| {
                        RuntimeError::Spec(format!(
                            "ssd layer {i} ({fh}x{fw}, {per_cell} anchors per cell) needs a {what} output of {want} values per image; the model's outputs are: {}",
                            listing()
                        ))
                    })?;
                *name = found.name.clone();
                taken.push(found.name.clone());
            } else {
                let out = io.outputs.iter().find(|o| o.name == *name).ok_or_else(|| {
                    RuntimeError::Spec(format!(
                        "ssd layer {i} names output {name:?}, which the model does not have                          (it has: {})",
                        listing()
                    ))
                })?;
                if item_elements(out).is_some_and(|n| n != want) {
                    return Err(RuntimeError::Spec(format!(
                        "ssd layer {i}: output {name:?} has shape {}, the layer needs {want}                          {what} values per image",
                        shape_text(&out.shape)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Renders a shape with `?` for dynamic dimensions.
pub fn shape_text(dims: &[Option<usize>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// A model's plan bound to its pipeline spec, labels and limits.
pub struct CompiledPipeline {
    plan: Box<dyn Plan>,
    spec: PipelineSpec,
    labels: Option<Vec<String>>,
    limits: Limits,
    outputs: Vec<(usize, OutputSpec)>,
    detector: Option<Detector>,
    infos: Vec<OutputInfo>,
    fixed_batch: Option<usize>,
}

/// The SSD stage: the decoder and, per layer, the plan outputs it reads.
struct Detector {
    decoder: SsdDecoder,
    /// `(scores, boxes)` plan output indices per layer.
    layers: Vec<(usize, usize)>,
}

impl std::fmt::Debug for CompiledPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPipeline")
            .field("engine", &self.plan.engine())
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

fn find_output(outputs: &[TensorInfo], name: &str) -> Option<usize> {
    outputs.iter().position(|o| o.name == name)
}

impl CompiledPipeline {
    /// Binds a plan to a (resolved) spec.
    pub fn new(
        plan: Box<dyn Plan>,
        spec: PipelineSpec,
        labels: Option<Vec<String>>,
        limits: Limits,
    ) -> Result<Self, RuntimeError> {
        if plan.inputs().len() != 1 {
            return Err(RuntimeError::Spec(format!(
                "the plan has {} inputs, pipelines need exactly one",
                plan.inputs().len()
            )));
        }
        let outputs = spec
            .outputs
            .iter()
            .map(|o| {
                // tract may rename outputs; fall back on position for single-output models.
                let ix = find_output(plan.outputs(), &o.name)
                    .or_else(|| (plan.outputs().len() == 1).then_some(0))
                    .ok_or_else(|| {
                        RuntimeError::Spec(format!("the plan has no output {:?}", o.name))
                    })?;
                Ok((ix, o.clone()))
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let detector = match &spec.detection {
            None => None,
            Some(det) => {
                let index = |name: &str| {
                    find_output(plan.outputs(), name).ok_or_else(|| {
                        RuntimeError::Spec(format!("the plan has no ssd output {name:?}"))
                    })
                };
                let layers = det
                    .layers
                    .iter()
                    .map(|l| Ok((index(&l.scores)?, index(&l.boxes)?)))
                    .collect::<Result<Vec<_>, RuntimeError>>()?;
                Some(Detector {
                    decoder: SsdDecoder::new(det.clone())?,
                    layers,
                })
            }
        };
        let fixed_batch = plan.inputs()[0].shape.first().copied().flatten();
        let infos = output_infos(plan.outputs(), &outputs, detector.as_ref());
        Ok(CompiledPipeline {
            plan,
            spec,
            labels,
            limits,
            outputs,
            detector,
            infos,
            fixed_batch,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// The engine plan.
    pub fn plan(&self) -> &dyn Plan {
        self.plan.as_ref()
    }

    /// The labels, if any.
    pub fn labels(&self) -> Option<&[String]> {
        self.labels.as_deref()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decodes and preprocesses a batch of encoded images into the model's
    /// input tensor.
    pub fn preprocess(&self, images: &[&[u8]]) -> Result<Tensor, RuntimeError> {
        self.preprocess_batch(images).map(|b| b.tensor)
    }

    /// Decodes and preprocesses a batch of encoded images into the model's
    /// input tensor, keeping each image's geometry (for detection boxes).
    pub fn preprocess_batch(&self, images: &[&[u8]]) -> Result<Batch, RuntimeError> {
        let pre = self.spec.preprocess.as_ref().ok_or_else(|| {
            RuntimeError::InvalidInput("this pipeline takes tensors, not encoded images".into())
        })?;
        self.check_batch(images.len())?;
        let (w, h) = pre.resize.output_size();
        let item = 3 * w as usize * h as usize;
        let mut data = vec![0f32; item * images.len()];
        let mut sources = Vec::with_capacity(images.len());
        for (i, (bytes, out)) in images.iter().zip(data.chunks_exact_mut(item)).enumerate() {
            let img =
                decode_rgb(bytes, &self.limits).map_err(|e| with_index(e, i, images.len()))?;
            preprocess_into(&img, pre, out)?;
            sources.push(SourceGeometry::of(img.width, img.height, &pre.resize));
        }
        let shape = match pre.layout {
            Layout::Nchw => vec![images.len(), 3, h as usize, w as usize],
            Layout::Nhwc => vec![images.len(), h as usize, w as usize, 3],
        };
        let tensor = Tensor::new(shape, TensorData::F32(data))
            .map_err(|e| RuntimeError::InvalidInput(e.to_string()))?;
        Ok(Batch { tensor, sources })
    }

    fn check_batch(&self, n: usize) -> Result<(), RuntimeError> {
        if n == 0 {
            return Err(RuntimeError::InvalidInput("empty batch".into()));
        }
        if n > self.limits.max_batch {
            return Err(RuntimeError::InvalidInput(format!(
                "batch of {n} is over the limit of {}",
                self.limits.max_batch
            )));
        }
        Ok(())
    }

    /// Checks a model-ready input tensor's dtype, shape and batch size
    /// against the plan, without running anything (the request core calls
    /// this before admission).
    pub fn check_input(&self, input: &Tensor) -> Result<(), RuntimeError> {
        let info = &self.plan.inputs()[0];
        if input.dtype() != info.dtype {
            return Err(RuntimeError::InvalidInput(format!(
                "input {:?} must be {}, got {}",
                info.name,
                info.dtype,
                input.dtype()
            )));
        }
        let shape = input.shape();
        let fits = shape.len() == info.shape.len()
            && shape
                .iter()
                .zip(&info.shape)
                .skip(1)
                .all(|(s, d)| d.is_none_or(|d| d == *s));
        if !fits || shape.is_empty() {
            return Err(RuntimeError::InvalidInput(format!(
                "input {:?} must have shape {}, got {:?}",
                info.name,
                shape_text(&info.shape),
                shape
            )));
        }
        self.check_batch(shape[0])
    }

    /// Runs the engine on a model-ready input tensor and applies the output
    /// postprocessing (softmax where the spec asks for it; detection boxes
    /// in pixels of the input).
    pub fn infer(&self, input: &Tensor) -> Result<Vec<NamedOutput>, RuntimeError> {
        self.infer_inner(input, &[])
    }

    /// As [`Self::infer`] on a preprocessed batch: detection boxes come back
    /// in pixels of each original image.
    pub fn infer_batch(&self, batch: &Batch) -> Result<Vec<NamedOutput>, RuntimeError> {
        self.infer_inner(&batch.tensor, &batch.sources)
    }

    fn infer_inner(
        &self,
        input: &Tensor,
        sources: &[SourceGeometry],
    ) -> Result<Vec<NamedOutput>, RuntimeError> {
        let raw = self.run_plan(input)?;
        let batch = input.shape()[0];
        let mut result = Vec::with_capacity(self.outputs.len() + 4);
        if let Some(det) = &self.detector {
            let per_image = self.detect_raw(det, &raw, batch)?;
            result.extend(self.detection_outputs(det, per_image, input, sources)?);
        }
        for (ix, spec) in &self.outputs {
            let mut tensor = raw[*ix].clone();
            if spec.softmax {
                let width = *tensor.shape().last().unwrap_or(&0);
                let (shape, data) = tensor.into_parts();
                let TensorData::F32(mut v) = data else {
                    return Err(RuntimeError::Spec(format!(
                        "softmax needs a float32 output, {:?} is not",
                        spec.name
                    )));
                };
                softmax_rows(&mut v, width);
                tensor = Tensor::new(shape, TensorData::F32(v))
                    .map_err(|e| RuntimeError::Spec(e.to_string()))?;
            }
            result.push(NamedOutput {
                name: spec.name.clone(),
                aliases: spec.aliases.clone(),
                tensor,
            });
        }
        Ok(result)
    }

    /// Checks the input and runs the plan (item by item for batch-1 models).
    fn run_plan(&self, input: &Tensor) -> Result<Vec<Tensor>, RuntimeError> {
        self.check_input(input)?;
        let batch = input.shape()[0];
        let raw = match self.fixed_batch {
            Some(fixed) if fixed != batch => {
                if fixed != 1 {
                    return Err(RuntimeError::InvalidInput(format!(
                        "the model takes batches of exactly {fixed}, got {batch}"
                    )));
                }
                self.run_item_by_item(input)?
            }
            _ => self.plan.run(std::slice::from_ref(input))?,
        };
        Ok(raw)
    }

    /// Decodes the SSD heads of every image of the batch.
    fn detect_raw(
        &self,
        det: &Detector,
        raw: &[Tensor],
        batch: usize,
    ) -> Result<Vec<Vec<crate::detect::Detection>>, RuntimeError> {
        let f32_of = |ix: usize| {
            raw[ix].as_f32().ok_or_else(|| {
                RuntimeError::Spec(format!(
                    "ssd output {:?} must be float32",
                    self.plan.outputs()[ix].name
                ))
            })
        };
        let layers = det
            .layers
            .iter()
            .map(|(s, b)| Ok((f32_of(*s)?, f32_of(*b)?)))
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        for (ix, (s, b)) in det.layers.iter().zip(&layers) {
            for (out, data) in [(ix.0, s), (ix.1, b)] {
                if data.len() % batch != 0 {
                    return Err(RuntimeError::Spec(format!(
                        "ssd output {:?} holds {} values, not a multiple of the batch {batch}",
                        self.plan.outputs()[out].name,
                        data.len()
                    )));
                }
            }
        }
        (0..batch)
            .map(|i| {
                fn item(v: &[f32], i: usize, batch: usize) -> &[f32] {
                    let n = v.len() / batch;
                    &v[i * n..(i + 1) * n]
                }
                let scores: Vec<&[f32]> = layers.iter().map(|(s, _)| item(s, i, batch)).collect();
                let boxes: Vec<&[f32]> = layers.iter().map(|(_, b)| item(b, i, batch)).collect();
                det.decoder.detect(&scores, &boxes)
            })
            .collect()
    }

    /// Packs detections as the four TF Object Detection API outputs, padded
    /// to `keep_top_k`, boxes in pixels of the original images.
    fn detection_outputs(
        &self,
        det: &Detector,
        per_image: Vec<Vec<crate::detect::Detection>>,
        input: &Tensor,
        sources: &[SourceGeometry],
    ) -> Result<Vec<NamedOutput>, RuntimeError> {
        let k = det.decoder.spec().keep_top_k;
        let n = per_image.len();
        let identity = self.input_geometry(input);
        let mut boxes = vec![0f32; n * k * 4];
        let mut classes = vec![0f32; n * k];
        let mut scores = vec![0f32; n * k];
        let mut count = vec![0f32; n];
        for (i, found) in per_image.into_iter().enumerate() {
            let geometry = sources.get(i).copied().unwrap_or(identity);
            count[i] = found.len().min(k) as f32;
            for (j, d) in found.into_iter().take(k).enumerate() {
                boxes[(i * k + j) * 4..(i * k + j + 1) * 4]
                    .copy_from_slice(&geometry.to_original(d.bbox));
                classes[i * k + j] = d.class as f32;
                scores[i * k + j] = d.score;
            }
        }
        let named = |name: &str, shape: Vec<usize>, v: Vec<f32>| {
            Ok(NamedOutput {
                name: name.to_string(),
                aliases: vec![],
                tensor: Tensor::from_f32(shape, v)
                    .map_err(|e| RuntimeError::Spec(e.to_string()))?,
            })
        };
        Ok(vec![
            named(det_out::BOXES, vec![n, k, 4], boxes)?,
            named(det_out::CLASSES, vec![n, k], classes)?,
            named(det_out::SCORES, vec![n, k], scores)?,
            named(det_out::NUM, vec![n], count)?,
        ])
    }

    /// The geometry of a raw input tensor: boxes in pixels of the input.
    fn input_geometry(&self, input: &Tensor) -> SourceGeometry {
        let shape = input.shape();
        let nhwc = self
            .spec
            .preprocess
            .as_ref()
            .is_some_and(|p| p.layout == Layout::Nhwc);
        let (h, w) = match (shape.len(), nhwc) {
            (4, true) => (shape[1], shape[2]),
            (4, false) => (shape[2], shape[3]),
            _ => {
                let d = self.detector.as_ref().map(|d| d.decoder.spec().image_size);
                d.map_or((1, 1), |[h, w]| (h as usize, w as usize))
            }
        };
        SourceGeometry::identity(w as u32, h as u32)
    }

    /// Everything the pipeline returns, in order: detections first (when it
    /// detects), then the listed outputs.
    pub fn output_infos(&self) -> &[OutputInfo] {
        &self.infos
    }

    /// Whether the pipeline answers with detections.
    pub fn detects(&self) -> bool {
        self.detector.is_some()
    }

    /// The objects found in each image, best first, with labels.
    pub fn detect(
        &self,
        images: &[&[u8]],
    ) -> Result<(Vec<Vec<DetectedObject>>, Timings), RuntimeError> {
        let det = self.detector.as_ref().ok_or_else(|| {
            RuntimeError::Spec("this pipeline classifies; it has no detection stage".into())
        })?;
        let t0 = Instant::now();
        let batch = self.preprocess_batch(images)?;
        let t1 = Instant::now();
        let raw = self.run_plan(&batch.tensor)?;
        let t2 = Instant::now();
        let found = self.detect_raw(det, &raw, images.len())?;
        let results = found
            .into_iter()
            .zip(&batch.sources)
            .map(|(list, geometry)| {
                list.into_iter()
                    .map(|d| DetectedObject {
                        class: d.class,
                        label: self.labels.as_ref().and_then(|l| l.get(d.class).cloned()),
                        score: d.score,
                        bbox: geometry.to_original(d.bbox),
                    })
                    .collect()
            })
            .collect();
        let timings = Timings {
            preprocess_ms: ms(t1 - t0),
            inference_ms: ms(t2 - t1),
            postprocess_ms: ms(t2.elapsed()),
        };
        Ok((results, timings))
    }

    fn run_item_by_item(&self, input: &Tensor) -> Result<Vec<Tensor>, RuntimeError> {
        let shape = input.shape();
        let batch = shape[0];
        let TensorData::F32(data) = input.data() else {
            return Err(RuntimeError::InvalidInput(
                "batch splitting supports float32 inputs only".into(),
            ));
        };
        let item = data.len() / batch;
        let mut item_shape = shape.to_vec();
        item_shape[0] = 1;
        let mut per_output: Vec<(Vec<usize>, Vec<f32>)> = Vec::new();
        for chunk in data.chunks_exact(item) {
            let t = Tensor::from_f32(item_shape.clone(), chunk.to_vec())
                .map_err(|e| RuntimeError::InvalidInput(e.to_string()))?;
            let outs = self.plan.run(std::slice::from_ref(&t))?;
            if per_output.is_empty() {
                per_output = outs
                    .iter()
                    .map(|o| (o.shape().to_vec(), Vec::new()))
                    .collect();
            }
            for (acc, o) in per_output.iter_mut().zip(outs) {
                let v = o.as_f32().ok_or_else(|| {
                    RuntimeError::Spec("batch splitting supports float32 outputs only".into())
                })?;
                acc.1.extend_from_slice(v);
            }
        }
        per_output
            .into_iter()
            .map(|(mut shape, v)| {
                if let Some(first) = shape.first_mut() {
                    *first = batch;
                }
                Tensor::from_f32(shape, v).map_err(|e| RuntimeError::Spec(e.to_string()))
            })
            .collect()
    }

    /// Encoded images in, exposed outputs out, with per-stage timings.
    pub fn run_images(
        &self,
        images: &[&[u8]],
    ) -> Result<(Vec<NamedOutput>, Timings), RuntimeError> {
        let t0 = Instant::now();
        let input = self.preprocess(images)?;
        let t1 = Instant::now();
        let outputs = self.infer(&input)?;
        let t2 = Instant::now();
        let timings = Timings {
            preprocess_ms: ms(t1 - t0),
            inference_ms: ms(t2 - t1),
            postprocess_ms: 0.0,
        };
        Ok((outputs, timings))
    }

    /// Top-`k` classes of each image from the first exposed output.
    pub fn classify(
        &self,
        images: &[&[u8]],
        k: usize,
    ) -> Result<(Vec<ImageResult>, Timings), RuntimeError> {
        let (outputs, mut timings) = self.run_images(images)?;
        let t0 = Instant::now();
        let first = outputs
            .first()
            .ok_or_else(|| RuntimeError::Spec("the pipeline exposes no output".into()))?;
        let scores = first
            .tensor
            .as_f32()
            .ok_or_else(|| RuntimeError::Spec("top-k needs a float32 output".into()))?;
        let width = scores.len() / images.len().max(1);
        let results = scores
            .chunks_exact(width.max(1))
            .map(|row| ImageResult {
                top: top_k(row, k)
                    .into_iter()
                    .map(|(index, score)| ClassScore {
                        index,
                        label: self.labels.as_ref().and_then(|l| l.get(index).cloned()),
                        score,
                    })
                    .collect(),
            })
            .collect();
        timings.postprocess_ms = ms(t0.elapsed());
        Ok((results, timings))
    }

    /// Runs the engine once on zeros so the first real request is not slow.
    pub fn warm_up(&self) -> Result<(), RuntimeError> {
        let info = &self.plan.inputs()[0];
        if info.dtype != DType::F32 {
            return Ok(());
        }
        let shape: Vec<usize> = info.shape.iter().map(|d| d.unwrap_or(1)).collect();
        let n = shape.iter().product();
        let t =
            Tensor::from_f32(shape, vec![0.0; n]).map_err(|e| RuntimeError::Spec(e.to_string()))?;
        self.plan.run(std::slice::from_ref(&t)).map(|_| ())
    }
}

fn output_infos(
    plan: &[TensorInfo],
    outputs: &[(usize, OutputSpec)],
    detector: Option<&Detector>,
) -> Vec<OutputInfo> {
    let mut infos = Vec::new();
    if let Some(det) = detector {
        let k = det.decoder.spec().keep_top_k;
        for (name, shape) in [
            (det_out::BOXES, vec![None, Some(k), Some(4)]),
            (det_out::CLASSES, vec![None, Some(k)]),
            (det_out::SCORES, vec![None, Some(k)]),
            (det_out::NUM, vec![None]),
        ] {
            infos.push(OutputInfo {
                name: name.to_string(),
                aliases: vec![],
                dtype: DType::F32,
                shape,
            });
        }
    }
    for (ix, o) in outputs {
        let meta = &plan[*ix];
        infos.push(OutputInfo {
            name: o.name.clone(),
            aliases: o.aliases.clone(),
            dtype: meta.dtype,
            shape: meta.shape.clone(),
        });
    }
    infos
}

fn with_index(e: RuntimeError, i: usize, n: usize) -> RuntimeError {
    if n == 1 {
        return e;
    }
    match e {
        RuntimeError::Decode(m) => RuntimeError::Decode(format!("image {i} of the batch: {m}")),
        other => other,
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

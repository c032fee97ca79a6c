//! Compiled pipelines: encoded images → preprocessing → engine → softmax /
//! top-k. Compiled once per loaded model; immutable and `Send + Sync`.

use crate::engine::{Plan, TensorInfo};
use crate::error::RuntimeError;
use crate::image::{decode_rgb, preprocess_into};
use crate::limits::Limits;
use crate::onnx_info::ModelIo;
use crate::postprocess::{softmax_rows, top_k};
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
    if spec.outputs.is_empty() {
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
    fixed_batch: Option<usize>,
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
        let fixed_batch = plan.inputs()[0].shape.first().copied().flatten();
        Ok(CompiledPipeline {
            plan,
            spec,
            labels,
            limits,
            outputs,
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
        let pre = self.spec.preprocess.as_ref().ok_or_else(|| {
            RuntimeError::InvalidInput("this pipeline takes tensors, not encoded images".into())
        })?;
        self.check_batch(images.len())?;
        let (w, h) = pre.resize.output_size();
        let item = 3 * w as usize * h as usize;
        let mut data = vec![0f32; item * images.len()];
        for (i, (bytes, out)) in images.iter().zip(data.chunks_exact_mut(item)).enumerate() {
            let img =
                decode_rgb(bytes, &self.limits).map_err(|e| with_index(e, i, images.len()))?;
            preprocess_into(&img, pre, out)?;
        }
        let shape = match pre.layout {
            Layout::Nchw => vec![images.len(), 3, h as usize, w as usize],
            Layout::Nhwc => vec![images.len(), h as usize, w as usize, 3],
        };
        Tensor::new(shape, TensorData::F32(data))
            .map_err(|e| RuntimeError::InvalidInput(e.to_string()))
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
    /// postprocessing (softmax where the spec asks for it).
    pub fn infer(&self, input: &Tensor) -> Result<Vec<NamedOutput>, RuntimeError> {
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
        let mut result = Vec::with_capacity(self.outputs.len());
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

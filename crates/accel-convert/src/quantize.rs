//! Static int8 QDQ quantization from calibrated activation ranges.
//!
//! Bit-compatible with ONNX Runtime's
//! `quantize_static(quant_format=QDQ, per_channel=True, activation_type=QInt8,
//! weight_type=QInt8)` (onnxruntime 1.31 `quantization/`): same parameters
//! (`quant_utils.compute_scale_zp`, `quantize_nparray`,
//! `base_quantizer.quantize_bias_static_impl`, the weight-scale adjustment
//! for int32 biases), same rewiring and the same initializer and node names
//! where names do not clash:
//!
//! - weights of `Conv`, `Gemm`, `MatMul` (float initializers): int8 symmetric
//!   `[-127, 127]`, zero point 0, per output channel (`Conv` axis 0,
//!   `MatMul` `B[K,N]` axis 1, `Gemm` axis 0 if `transB` else 1), read
//!   through `DequantizeLinear(axis)`; biases int32 with scale
//!   `x_scale·w_scale`;
//! - activations: int8 asymmetric `[-128, 127]` per tensor, a
//!   `QuantizeLinear → DequantizeLinear` pair after the producer, every
//!   consumer reading the `DequantizeLinear` output;
//! - data-movement ops (`MaxPool`, `Reshape`, `Transpose`, `Flatten`,
//!   `Split`, `Squeeze`, `Unsqueeze`) give their outputs the scale and zero
//!   point of their input; `Add`, `Concat`, `AveragePool`,
//!   `GlobalAveragePool` have quantized inputs and outputs;
//! - a `Relu` or `Clip` whose input is a quantized tensor read by nothing
//!   else is removed (ORT's `QDQRemovableActivation`): the producer writes the
//!   activation's output, quantized with that output's range, whose clamp
//!   reproduces the activation (checked: the clip's bounds must hold 0);
//! - everything else stays float, reading `DequantizeLinear` outputs; graph
//!   outputs stay float.
//!
//! Where this differs from ONNX Runtime, on purpose: graph outputs get no
//! QDQ (ORT quantizes them too); an op whose only reader is the graph
//! output is not turned into an int8 op; `MatMul` is quantized only with a
//! 2-D initializer `B`; a `Gemm` bias only when `beta = 1` and it is 1-D;
//! `Split` does not quantize a float input; `AveragePool` has its own output
//! range (ORT shares the input's).

use crate::error::ConvertError;
use crate::graph::{self, pb, GraphIndex, Names};
use crate::opset;
use pb::tensor_proto::DataType;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The measured range of a float tensor.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Range {
    /// Smallest value seen.
    pub min: f32,
    /// Largest value seen.
    pub max: f32,
}

/// The range a removed `Clip` gives its output (the producer's quantized
/// output, whose clamp now does the clip's work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClipRanges {
    /// The calibrated range, clamped to the clip's bounds (ONNX Runtime's
    /// `quantize_static`).
    #[default]
    Calibrated,
    /// The clip's bounds when both are finite (ReLU6 → [0, 6], as TFLite
    /// quantizes it): values the calibration images never produced are not
    /// saturated. Relu and half-open clips keep the calibrated range.
    Bounds,
}

impl ClipRanges {
    /// `calibrated` or `clip-bounds`, as the report states it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClipRanges::Calibrated => "calibrated",
            ClipRanges::Bounds => "clip-bounds",
        }
    }
}

/// The element type of quantized activations (weights are always int8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActType {
    /// int8, [-128, 127] (S8S8: ONNX Runtime's default).
    #[default]
    Int8,
    /// uint8, [0, 255] (U8S8: what x86 integer dot-product instructions
    /// multiply natively).
    Uint8,
}

impl ActType {
    fn range(self) -> (i32, i32) {
        match self {
            ActType::Int8 => (-128, 127),
            ActType::Uint8 => (0, 255),
        }
    }

    /// `int8` or `uint8`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActType::Int8 => "int8",
            ActType::Uint8 => "uint8",
        }
    }

    /// A quantized tensor of this type from values already in range.
    fn tensor(self, name: &str, dims: &[i64], values: &[i32]) -> pb::TensorProto {
        match self {
            ActType::Int8 => {
                let v: Vec<i8> = values.iter().map(|&x| x.clamp(-128, 127) as i8).collect();
                graph::int8_tensor(name, dims, &v)
            }
            ActType::Uint8 => {
                let v: Vec<u8> = values.iter().map(|&x| x.clamp(0, 255) as u8).collect();
                graph::uint8_tensor(name, dims, &v)
            }
        }
    }
}

/// Choices of [`QuantPlan::quantize_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuantOptions {
    /// Ranges of removed clips.
    pub clip_ranges: ClipRanges,
    /// Activation element type.
    pub activations: ActType,
}

/// What the quantized model is, in numbers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantSummary {
    /// How activations are quantized: `"int8 asymmetric per-tensor"`.
    pub activations: String,
    /// How weights are quantized: `"int8 symmetric per-channel"`.
    pub weights: String,
    /// Nodes that run on quantized data, by op type.
    pub quantized_ops: BTreeMap<String, usize>,
    /// Nodes left in float, by op type (`domain:op` outside `ai.onnx`).
    pub float_ops: BTreeMap<String, usize>,
    /// `Relu`/`Clip` nodes folded into the quantization of their input.
    pub removed_activations: usize,
    /// The range removed clips gave their outputs ([`ClipRanges::as_str`]).
    #[serde(default)]
    pub clip_ranges: String,
}

/// A quantized model.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// The QDQ model (ONNX, default-domain opset ≥ 13).
    pub model: Vec<u8>,
    /// What was quantized.
    pub summary: QuantSummary,
}

/// Decisions taken on the float model: which tensors get QDQ, which weights
/// and biases are quantized, which activations are removed. Turned into a
/// QDQ model by [`QuantPlan::quantize`] once ranges are measured.
#[derive(Debug, Clone)]
pub struct QuantPlan {
    /// The float model, upgraded to opset 13.
    model: pb::ModelProto,
    /// Marks in the order they were made; `None` once withdrawn.
    marks: Vec<Option<(String, Mark)>>,
    /// Tensor name → position in `marks`.
    mark_of: HashMap<String, usize>,
    /// Biases to quantize, in marking order.
    biases: Vec<Bias>,
    /// Removed activation nodes (node index).
    removed: HashSet<usize>,
    /// Producer output renamed to the removed activation's output.
    renamed: HashMap<String, String>,
    /// Clip bounds a removed activation's output range must stay within.
    bounds: HashMap<String, (f32, f32)>,
    /// Node indices that run quantized.
    quantized_nodes: HashSet<usize>,
    /// Activation tensors whose range is needed (marking order).
    tensors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Mark {
    /// An activation with its own range.
    Act,
    /// An activation that reuses the scale and zero point of another.
    Shared(String),
    /// A weight initializer, symmetric per channel along `axis`.
    Weight { axis: usize },
    /// An initializer read as an activation (e.g. an `Add` operand):
    /// asymmetric per tensor from its own min/max.
    ActInit,
}

#[derive(Debug, Clone)]
struct Bias {
    node: usize,
    slot: usize,
    name: String,
    input: String,
    weight: String,
}

const W_QMIN: i32 = -127;
const W_QMAX: i32 = 127;

/// ORT's `quant_utils.compute_scale_zp`: the range is widened to hold 0
/// (and made symmetric if asked); the scale is computed in f64 and stored as
/// f32; a scale below the smallest normal f32 becomes 1 with zero point 0.
/// Returns `(scale, zero_point)`.
pub(crate) fn compute_scale_zp(
    rmin: f32,
    rmax: f32,
    qmin: i32,
    qmax: i32,
    symmetric: bool,
) -> (f32, i32) {
    let mut rmin = rmin.min(0.0);
    let mut rmax = rmax.max(0.0);
    if symmetric {
        let absmax = rmin.abs().max(rmax.abs());
        rmin = -absmax;
        rmax = absmax;
    }
    let dr = f64::from(rmax) - f64::from(rmin);
    let dq = f64::from(qmax) - f64::from(qmin);
    let scale = dr / dq;
    if scale < f64::from(f32::MIN_POSITIVE) {
        return (1.0, 0);
    }
    let zp = if symmetric {
        ((f64::from(qmin) + f64::from(qmax)) / 2.0).round_ties_even()
    } else {
        (f64::from(qmin) - f64::from(rmin) / scale).round_ties_even()
    };
    (scale as f32, zp as i32)
}

/// ORT's `quantize_nparray` for int8: `clamp(round(x / scale) + zp)` in f32.
fn quantize_value(x: f32, scale: f32, zp: i32) -> i8 {
    let q = (x / scale).round_ties_even() + zp as f32;
    q.clamp(-128.0, 127.0) as i8
}

/// Ops whose output takes its element type from input 0.
const TYPE_PRESERVING: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Ceil",
    "Clip",
    "Concat",
    "Conv",
    "ConvTranspose",
    "Cos",
    "CumSum",
    "DepthToSpace",
    "Div",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gemm",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "InstanceNormalization",
    "LRN",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "LpPool",
    "MatMul",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mul",
    "Neg",
    "PRelu",
    "Pad",
    "Pow",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "Round",
    "Selu",
    "Sigmoid",
    "Sin",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Tile",
    "TopK",
    "Transpose",
    "Unsqueeze",
];

/// Element types of the graph's tensors: declared ones, initializers, and
/// what the ops above propagate. Tensors of unknown type are never
/// quantized.
fn elem_types(graph: &pb::GraphProto) -> HashMap<String, i32> {
    let mut types = graph::declared_elem_types(graph);
    for t in &graph.initializer {
        types.entry(t.name.clone()).or_insert(t.data_type);
    }
    let float = DataType::Float as i32;
    let int64 = DataType::Int64 as i32;
    for n in &graph.node {
        if !graph::is_default_domain(n) {
            continue;
        }
        let input_type = |i: usize| n.input.get(i).and_then(|x| types.get(x)).copied();
        let out: Option<i32> = match n.op_type.as_str() {
            "Constant" => n.attribute.first().and_then(|a| match a.name.as_str() {
                "value" => a.t.as_ref().map(|t| t.data_type),
                "value_float" | "value_floats" => Some(float),
                "value_int" | "value_ints" => Some(int64),
                _ => None,
            }),
            "Cast" => graph::attr(n, "to").map(|a| a.i as i32),
            "Shape" | "Size" | "ArgMax" | "ArgMin" | "NonZero" => Some(int64),
            "DequantizeLinear" => Some(float),
            "Where" => input_type(1),
            op if TYPE_PRESERVING.contains(&op) => input_type(0),
            _ => None,
        };
        let Some(ty) = out else { continue };
        // Split and Concat-like ops: every output has the type; others only
        // their first (MaxPool indices, TopK indices, Dropout mask).
        let outputs = if n.op_type == "Split" {
            &n.output[..]
        } else {
            &n.output[..n.output.len().min(1)]
        };
        for o in outputs.iter().filter(|o| !o.is_empty()) {
            types.entry(o.clone()).or_insert(ty);
        }
    }
    types
}

/// The value of a constant float scalar input (an initializer).
fn scalar_f32(graph: &pb::GraphProto, ix: &GraphIndex, name: &str) -> Option<f32> {
    let t = ix.initializer(graph, name)?;
    match graph::tensor_f32(t).ok()?.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// Ops that already carry quantized data: the converter starts from float.
fn is_quantized_op(n: &pb::NodeProto) -> bool {
    matches!(
        n.op_type.as_str(),
        "QuantizeLinear"
            | "DequantizeLinear"
            | "DynamicQuantizeLinear"
            | "QLinearConv"
            | "QLinearMatMul"
            | "ConvInteger"
            | "MatMulInteger"
    ) || (n.domain == "com.microsoft" && n.op_type.starts_with("QLinear"))
}

/// Reads the float model, upgrades its opset, decides which tensors get QDQ.
pub fn prepare(model: &[u8]) -> Result<QuantPlan, ConvertError> {
    let mut model = graph::decode(model)?;
    opset::upgrade_to_13(&mut model)?;
    let graph = graph::graph(&model)?;
    graph::check_topological(graph)?;
    if let Some(n) = graph.node.iter().find(|n| is_quantized_op(n)) {
        return Err(ConvertError::Unsupported(format!(
            "the model is already quantized (node {:?} is {}); start from the float model",
            n.name, n.op_type
        )));
    }
    let mut planner = Planner {
        graph,
        ix: GraphIndex::new(graph),
        types: elem_types(graph),
        plan: QuantPlan {
            model: pb::ModelProto::default(),
            marks: Vec::new(),
            mark_of: HashMap::new(),
            biases: Vec::new(),
            removed: HashSet::new(),
            renamed: HashMap::new(),
            bounds: HashMap::new(),
            quantized_nodes: HashSet::new(),
            tensors: Vec::new(),
        },
    };
    for (i, node) in graph.node.iter().enumerate() {
        planner.visit(i, node)?;
    }
    let mut plan = planner.plan;
    plan.tensors = plan
        .marks
        .iter()
        .flatten()
        .filter(|(_, m)| *m == Mark::Act)
        .map(|(t, _)| t.clone())
        .collect();
    plan.model = model;
    Ok(plan)
}

struct Planner<'g> {
    graph: &'g pb::GraphProto,
    ix: GraphIndex,
    types: HashMap<String, i32>,
    plan: QuantPlan,
}

impl Planner<'_> {
    fn is_float(&self, t: &str) -> bool {
        !t.is_empty() && self.types.get(t) == Some(&(DataType::Float as i32))
    }

    fn float_init(&self, t: &str) -> Option<&pb::TensorProto> {
        self.ix
            .initializer(self.graph, t)
            .filter(|w| w.data_type == DataType::Float as i32)
    }

    /// A float tensor computed at run time (not an initializer).
    fn is_float_act(&self, t: &str) -> bool {
        self.is_float(t) && !self.ix.is_initializer(t)
    }

    fn mark(&self, t: &str) -> Option<&Mark> {
        let i = *self.plan.mark_of.get(t)?;
        self.plan.marks[i].as_ref().map(|(_, m)| m)
    }

    /// Whether `t` is a quantized activation (its own range or shared).
    fn is_quantized_act(&self, t: &str) -> bool {
        matches!(self.mark(t), Some(Mark::Act | Mark::Shared(_)))
    }

    fn has_readers(&self, t: &str) -> bool {
        !self.ix.consumers(t).is_empty()
    }

    fn set_mark(&mut self, t: &str, m: Mark) {
        self.plan.marks.push(Some((t.to_string(), m)));
        self.plan
            .mark_of
            .insert(t.to_string(), self.plan.marks.len() - 1);
    }

    fn unmark(&mut self, t: &str) {
        if let Some(i) = self.plan.mark_of.remove(t) {
            self.plan.marks[i] = None;
        }
    }

    /// ORT's `quantize_activation_tensor`: first mark wins.
    fn mark_act(&mut self, t: &str) {
        if !self.is_float(t) || self.plan.mark_of.contains_key(t) {
            return;
        }
        let m = if self.ix.is_initializer(t) {
            Mark::ActInit
        } else {
            Mark::Act
        };
        self.set_mark(t, m);
    }

    /// Marks a node output with its own range, if something reads it.
    fn mark_output(&mut self, t: &str) {
        if self.has_readers(t) {
            self.mark_act(t);
        }
    }

    fn mark_weight(&mut self, t: &str, axis: usize) {
        if !self.plan.mark_of.contains_key(t) {
            self.set_mark(t, Mark::Weight { axis });
        }
    }

    fn visit(&mut self, i: usize, n: &pb::NodeProto) -> Result<(), ConvertError> {
        if !graph::is_default_domain(n) {
            return Ok(());
        }
        let input = |k: usize| n.input.get(k).map_or("", String::as_str);
        let output = |k: usize| n.output.get(k).map_or("", String::as_str);
        match n.op_type.as_str() {
            "Conv" => self.weighted(i, n, 0, true)?,
            "MatMul" => {
                let w = input(1);
                if self.float_init(w).is_some_and(|t| t.dims.len() == 2) {
                    self.weighted(i, n, 1, false)?;
                }
            }
            "Gemm" => {
                let w = input(1);
                if self.float_init(w).is_some_and(|t| t.dims.len() == 2) {
                    let axis = if graph::attr_int(n, "transB", 0) != 0 {
                        0
                    } else {
                        1
                    };
                    let beta = graph::attr_float(n, "beta", 1.0);
                    self.weighted(i, n, axis, beta == 1.0)?;
                }
            }
            "Relu" | "Clip" => self.activation(i, n),
            "MaxPool" | "Reshape" | "Transpose" | "Flatten" | "Squeeze" | "Unsqueeze" | "Split" => {
                let x = input(0).to_string();
                if self.is_quantized_act(&x) {
                    let outs = if n.op_type == "Split" {
                        &n.output[..]
                    } else {
                        &n.output[..1.min(n.output.len())]
                    };
                    for o in outs {
                        if self.is_float(o)
                            && self.has_readers(o)
                            && !self.plan.mark_of.contains_key(o)
                        {
                            self.set_mark(o, Mark::Shared(x.clone()));
                            self.plan.quantized_nodes.insert(i);
                        }
                    }
                }
            }
            "Add" | "Concat" | "AveragePool" | "GlobalAveragePool" => {
                let out = output(0);
                if self.is_float_act(out) && self.has_readers(out) {
                    for x in &n.input {
                        self.mark_act(x);
                    }
                    self.mark_act(out);
                    self.plan.quantized_nodes.insert(i);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `Conv`, `MatMul`, `Gemm`: input 0 an activation, input 1 a float
    /// initializer quantized per channel along `axis`, input 2 a bias
    /// (quantized when `bias_ok` and it is 1-D with one value per channel;
    /// `MatMul` has none).
    fn weighted(
        &mut self,
        i: usize,
        n: &pb::NodeProto,
        axis: usize,
        bias_ok: bool,
    ) -> Result<(), ConvertError> {
        let x = n.input.first().map_or("", String::as_str);
        let w = n.input.get(1).map_or("", String::as_str);
        let Some(wt) = self.float_init(w) else {
            return Ok(());
        };
        if !self.is_float_act(x) || wt.dims.len() <= axis {
            return Ok(());
        }
        let channels = wt.dims[axis];
        self.mark_act(x);
        if let Some(out) = n.output.first() {
            self.mark_output(out);
        }
        self.mark_weight(w, axis);
        self.plan.quantized_nodes.insert(i);
        let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) else {
            return Ok(());
        };
        let bias_1d = self
            .float_init(b)
            .is_some_and(|t| t.dims.len() == 1 && t.dims[0] == channels);
        let weight_axis_ok = self.mark(w) == Some(&Mark::Weight { axis });
        if bias_ok && bias_1d && weight_axis_ok && !self.plan.mark_of.contains_key(b) {
            self.plan.biases.push(Bias {
                node: i,
                slot: 2,
                name: b.clone(),
                input: x.to_string(),
                weight: w.to_string(),
            });
        }
        Ok(())
    }

    /// `Relu` / `Clip`: removed when its input is a quantized activation
    /// read by nothing else (ORT's `QDQRemovableActivation`), else its output
    /// is quantized if its input is.
    fn activation(&mut self, i: usize, n: &pb::NodeProto) {
        let x = n.input.first().map_or("", String::as_str);
        let Some(y) = n.output.first().filter(|y| !y.is_empty()) else {
            return;
        };
        if !self.is_quantized_act(x) || !self.is_float(y) {
            return;
        }
        let bounds = if n.op_type == "Relu" {
            Some((0.0, f32::INFINITY))
        } else {
            let bound = |k: usize, default: f32| match n.input.get(k).filter(|s| !s.is_empty()) {
                None => Some(default),
                Some(name) => scalar_f32(self.graph, &self.ix, name),
            };
            bound(1, f32::NEG_INFINITY).zip(bound(2, f32::INFINITY))
        };
        let removable = bounds.is_some_and(|(lo, hi)| lo <= 0.0 && 0.0 <= hi)
            && self.ix.consumers(x) == [i]
            && self.ix.producer(x).is_some()
            && !self.ix.is_graph_output(x)
            && !self.ix.is_graph_input(x)
            && !self.ix.is_graph_output(y);
        if let (true, Some((lo, hi))) = (removable, bounds) {
            let (lo, hi) = match self.plan.bounds.get(x) {
                Some(&(a, b)) => (lo.max(a), hi.min(b)),
                None => (lo, hi),
            };
            self.unmark(x);
            self.plan.bounds.remove(x);
            self.plan.renamed.insert(x.to_string(), y.clone());
            self.plan.removed.insert(i);
            self.set_mark(y, Mark::Act);
            self.plan.bounds.insert(y.clone(), (lo, hi));
        } else {
            self.mark_output(y);
            if self.plan.mark_of.contains_key(y.as_str()) {
                self.plan.quantized_nodes.insert(i);
            }
        }
    }
}

/// Parameters of a quantized activation and the initializers holding them.
#[derive(Debug, Clone)]
struct ActParams {
    scale: f32,
    zp: i32,
    scale_name: String,
    zp_name: String,
}

/// A quantized initializer (weight or activation-like), ready to emit.
struct InitQ {
    dq_output: String,
    inits: Vec<pb::TensorProto>,
    node: pb::NodeProto,
}

impl QuantPlan {
    /// Float tensor names whose ranges calibration must measure (graph
    /// order, stable).
    pub fn tensors(&self) -> &[String] {
        &self.tensors
    }

    /// The float model (same results as the input) with every name of
    /// `tensors()` appended as graph outputs after the model's own outputs.
    pub fn calibration_model(&self) -> Result<Vec<u8>, ConvertError> {
        let mut model = self.model.clone();
        graph::add_outputs(&mut model, &self.tensors)?;
        Ok(graph::encode(&model))
    }

    fn mark(&self, t: &str) -> Option<&Mark> {
        let i = *self.mark_of.get(t)?;
        self.marks[i].as_ref().map(|(_, m)| m)
    }

    /// The final name of a producer output (after activation removals).
    fn resolve<'a>(&'a self, mut t: &'a str) -> &'a str {
        while let Some(next) = self.renamed.get(t) {
            t = next;
        }
        t
    }

    /// The QDQ model from measured ranges (a missing range is
    /// InvalidArgument naming it).
    pub fn quantize(&self, ranges: &BTreeMap<String, Range>) -> Result<Quantized, ConvertError> {
        self.quantize_with(ranges, QuantOptions::default())
    }

    /// [`QuantPlan::quantize`] with a choice of ranges for removed clips.
    pub fn quantize_with(
        &self,
        ranges: &BTreeMap<String, Range>,
        options: QuantOptions,
    ) -> Result<Quantized, ConvertError> {
        let QuantOptions {
            clip_ranges,
            activations,
        } = options;
        let (act_qmin, act_qmax) = activations.range();
        let mut model = self.model.clone();
        let graph = graph::graph_mut(&mut model)?;
        let ix = GraphIndex::new(graph);
        let mut names = Names::of_graph(graph);

        // Activation parameters, in marking order (names are reserved in a
        // stable order).
        let mut acts: HashMap<String, ActParams> = HashMap::new();
        for (t, m) in self.marks.iter().flatten() {
            match m {
                Mark::Act => {
                    let r = ranges.get(t).ok_or_else(|| {
                        ConvertError::InvalidArgument(format!(
                            "no calibrated range for tensor {t:?}"
                        ))
                    })?;
                    if !(r.min.is_finite() && r.max.is_finite() && r.min <= r.max) {
                        return Err(ConvertError::InvalidArgument(format!(
                            "the range of tensor {t:?} is not a finite interval: [{}, {}]",
                            r.min, r.max
                        )));
                    }
                    let (mut lo, mut hi) = (r.min, r.max);
                    if let Some(&(blo, bhi)) = self.bounds.get(t) {
                        // A removed clip (bounds hold 0): the quantized
                        // range, which holds 0 too, stays inside it, so its
                        // clamp reproduces the clip.
                        if clip_ranges == ClipRanges::Bounds && blo.is_finite() && bhi.is_finite() {
                            (lo, hi) = (blo, bhi);
                        } else {
                            lo = lo.max(blo);
                            hi = hi.min(bhi);
                        }
                    }
                    let (scale, zp) = compute_scale_zp(lo, hi, act_qmin, act_qmax, false);
                    acts.insert(
                        t.clone(),
                        ActParams {
                            scale,
                            zp,
                            scale_name: names.fresh(&format!("{t}_scale")),
                            zp_name: names.fresh(&format!("{t}_zero_point")),
                        },
                    );
                }
                Mark::Shared(p) => {
                    let p = acts.get(p).cloned().ok_or_else(|| {
                        ConvertError::InvalidModel(format!(
                            "tensor {t:?} shares the parameters of {p:?}, which has none"
                        ))
                    })?;
                    acts.insert(t.clone(), p);
                }
                Mark::Weight { .. } | Mark::ActInit => {}
            }
        }

        // Weight scales (per channel), adjusted for their int32 biases as
        // ORT does, then the weights themselves.
        let mut weight_scales: HashMap<String, Vec<f32>> = HashMap::new();
        for (t, m) in self.marks.iter().flatten() {
            if let Mark::Weight { axis } = m {
                let w = ix.initializer(graph, t).ok_or_else(|| {
                    ConvertError::InvalidModel(format!("weight {t:?} is not an initializer"))
                })?;
                weight_scales.insert(t.clone(), weight_channel_scales(w, *axis)?);
            }
        }
        let mut bias_ok = vec![true; self.biases.len()];
        for (k, b) in self.biases.iter().enumerate() {
            let (Some(x), Some(bt)) = (acts.get(&b.input), ix.initializer(graph, &b.name)) else {
                bias_ok[k] = false;
                continue;
            };
            let bias = graph::tensor_f32(bt)?;
            let Some(ws) = weight_scales.get_mut(&b.weight) else {
                bias_ok[k] = false;
                continue;
            };
            adjust_weight_scales_for_bias(x.scale, ws, &bias);
        }

        // Quantized initializers (weights and activation-like operands).
        let mut quantized_inits: HashMap<String, InitQ> = HashMap::new();
        for (t, m) in self.marks.iter().flatten() {
            let Some(w) = ix.initializer(graph, t) else {
                continue;
            };
            match m {
                Mark::Weight { axis } => {
                    let scales = &weight_scales[t];
                    quantized_inits
                        .insert(t.clone(), quantize_weight(w, *axis, scales, &mut names)?);
                }
                Mark::ActInit => {
                    quantized_inits
                        .insert(t.clone(), quantize_act_init(w, &mut names, activations)?);
                }
                _ => {}
            }
        }

        // Biases: int32 with scale x_scale·w_scale.
        let mut biases: HashMap<(usize, usize), InitQ> = HashMap::new();
        for (k, b) in self.biases.iter().enumerate() {
            if !bias_ok[k] {
                continue;
            }
            let (Some(x), Some(bt), Some(ws)) = (
                acts.get(&b.input),
                ix.initializer(graph, &b.name),
                weight_scales.get(&b.weight),
            ) else {
                continue;
            };
            let only_reader = ix.consumers(&b.name) == [b.node];
            if let Some(q) = quantize_bias(bt, x.scale, ws, only_reader, &mut names)? {
                biases.insert((b.node, b.slot), q);
            }
        }

        // Emit: nodes in order, each quantized activation's Q/DQ right after
        // its producer (graph inputs: before their first reader), weight and
        // bias DQ right before their first reader.
        let mut nodes: Vec<pb::NodeProto> = Vec::with_capacity(graph.node.len() * 2);
        let mut new_inits: Vec<pb::TensorProto> = Vec::new();
        let mut emitted: HashSet<String> = HashSet::new();
        let mut emitted_params: HashSet<String> = HashSet::new();
        let mut dq_of: HashMap<String, String> = HashMap::new();
        let emit_qdq = |t: &str,
                        nodes: &mut Vec<pb::NodeProto>,
                        new_inits: &mut Vec<pb::TensorProto>,
                        emitted_params: &mut HashSet<String>,
                        names: &mut Names,
                        dq_of: &mut HashMap<String, String>| {
            let p = &acts[t];
            if emitted_params.insert(p.scale_name.clone()) {
                new_inits.push(graph::f32_tensor(&p.scale_name, &[], &[p.scale]));
                new_inits.push(activations.tensor(&p.zp_name, &[], &[p.zp]));
            }
            let q_out = names.fresh(&format!("{t}_QuantizeLinear_Output"));
            let dq_out = names.fresh(&format!("{t}_DequantizeLinear_Output"));
            let q_name = names.fresh(&format!("{t}_QuantizeLinear"));
            let dq_name = names.fresh(&format!("{t}_DequantizeLinear"));
            nodes.push(graph::make_node(
                "QuantizeLinear",
                &q_name,
                &[t, &p.scale_name, &p.zp_name],
                &[&q_out],
                vec![],
            ));
            nodes.push(graph::make_node(
                "DequantizeLinear",
                &dq_name,
                &[&q_out, &p.scale_name, &p.zp_name],
                &[&dq_out],
                vec![],
            ));
            dq_of.insert(t.to_string(), dq_out);
        };

        for (i, node) in graph.node.iter().enumerate() {
            if self.removed.contains(&i) {
                continue;
            }
            let mut n = node.clone();
            for o in &mut n.output {
                *o = self.resolve(o).to_string();
            }
            for (slot, x) in n.input.iter_mut().enumerate() {
                if x.is_empty() {
                    continue;
                }
                if let Some(b) = biases.remove(&(i, slot)) {
                    new_inits.extend(b.inits);
                    nodes.push(b.node);
                    *x = b.dq_output;
                    continue;
                }
                match self.mark(x) {
                    Some(Mark::Weight { .. } | Mark::ActInit) => {
                        if let Some(w) = quantized_inits.remove(x.as_str()) {
                            new_inits.extend(w.inits);
                            nodes.push(w.node);
                            dq_of.insert(x.clone(), w.dq_output);
                        }
                        if let Some(d) = dq_of.get(x.as_str()) {
                            *x = d.clone();
                        }
                    }
                    Some(Mark::Act | Mark::Shared(_)) => {
                        if emitted.insert(x.clone()) {
                            // A graph input: no producer emitted its pair.
                            emit_qdq(
                                x,
                                &mut nodes,
                                &mut new_inits,
                                &mut emitted_params,
                                &mut names,
                                &mut dq_of,
                            );
                        }
                        if let Some(d) = dq_of.get(x.as_str()) {
                            *x = d.clone();
                        }
                    }
                    None => {}
                }
            }
            let outputs = n.output.clone();
            nodes.push(n);
            for o in outputs {
                if matches!(self.mark(&o), Some(Mark::Act | Mark::Shared(_)))
                    && emitted.insert(o.clone())
                {
                    emit_qdq(
                        &o,
                        &mut nodes,
                        &mut new_inits,
                        &mut emitted_params,
                        &mut names,
                        &mut dq_of,
                    );
                }
            }
        }

        // Initializers nothing reads any more (quantized weights and
        // biases, bounds of removed clips) go, with their input entries.
        let mut read: HashSet<&str> = HashSet::new();
        let mut written: HashSet<&str> = HashSet::new();
        for n in &nodes {
            read.extend(n.input.iter().map(String::as_str));
            written.extend(n.output.iter().map(String::as_str));
        }
        let outputs: HashSet<&str> = graph.output.iter().map(|v| v.name.as_str()).collect();
        let was_read: HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .collect();
        let dropped: HashSet<String> = graph
            .initializer
            .iter()
            .map(|t| t.name.as_str())
            .filter(|t| {
                // Unread now (and read before), or replaced by the output of
                // a bias DequantizeLinear of the same name.
                (was_read.contains(t) && !read.contains(t) && !outputs.contains(t))
                    || written.contains(t)
            })
            .map(str::to_string)
            .collect();
        let renamed_away: HashSet<&str> = self
            .renamed
            .keys()
            .map(String::as_str)
            .filter(|t| !read.contains(t))
            .collect();
        let summary = self.summary(graph, options);
        graph.initializer.retain(|t| !dropped.contains(&t.name));
        graph.initializer.extend(new_inits);
        graph.input.retain(|v| !dropped.contains(&v.name));
        graph
            .value_info
            .retain(|v| !renamed_away.contains(v.name.as_str()));
        graph.node = nodes;
        Ok(Quantized {
            model: graph::encode(&model),
            summary,
        })
    }

    fn summary(&self, graph: &pb::GraphProto, options: QuantOptions) -> QuantSummary {
        let mut quantized_ops = BTreeMap::new();
        let mut float_ops = BTreeMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            if self.removed.contains(&i) {
                continue;
            }
            let op = if graph::is_default_domain(n) {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            };
            let table = if self.quantized_nodes.contains(&i) {
                &mut quantized_ops
            } else {
                &mut float_ops
            };
            *table.entry(op).or_insert(0) += 1;
        }
        QuantSummary {
            activations: format!("{} asymmetric per-tensor", options.activations.as_str()),
            weights: "int8 symmetric per-channel".into(),
            quantized_ops,
            float_ops,
            removed_activations: self.removed.len(),
            clip_ranges: options.clip_ranges.as_str().to_string(),
        }
    }
}

/// The element count of one slice along `axis` and the stride structure:
/// `(outer, channels, inner)` with `len = outer·channels·inner`.
fn split_axis(dims: &[i64], axis: usize) -> (usize, usize, usize) {
    let d = |s: &[i64]| s.iter().map(|&v| v.max(0) as usize).product::<usize>();
    (
        d(&dims[..axis]),
        dims[axis].max(0) as usize,
        d(&dims[axis + 1..]),
    )
}

/// Per-channel symmetric int8 scales of a weight (ORT's
/// `compute_data_quant_params` on `take(c, axis)` of each channel).
fn weight_channel_scales(w: &pb::TensorProto, axis: usize) -> Result<Vec<f32>, ConvertError> {
    let data = graph::tensor_f32(w)?;
    if data.iter().any(|v| !v.is_finite()) {
        return Err(ConvertError::InvalidModel(format!(
            "weight {:?} holds non-finite values",
            w.name
        )));
    }
    let (outer, channels, inner) = split_axis(&w.dims, axis);
    let mut lo = vec![f32::INFINITY; channels];
    let mut hi = vec![f32::NEG_INFINITY; channels];
    for o in 0..outer {
        for (c, (lo, hi)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
            let start = (o * channels + c) * inner;
            for &v in &data[start..start + inner] {
                *lo = lo.min(v);
                *hi = hi.max(v);
            }
        }
    }
    Ok(lo
        .iter()
        .zip(&hi)
        .map(|(&lo, &hi)| {
            if lo > hi {
                1.0 // an empty channel: ORT's default scale
            } else {
                compute_scale_zp(lo, hi, W_QMIN, W_QMAX, true).0
            }
        })
        .collect())
}

/// ORT's `_adjust_weight_scale_for_int32_bias` (per channel): when
/// `x_scale·w_scale` is too small for the bias to fit int32, the weight
/// scale grows by the needed ratio.
fn adjust_weight_scales_for_bias(x_scale: f32, w_scales: &mut [f32], bias: &[f32]) {
    let qrange = f64::from(i32::MAX) - f64::from(i32::MIN + 1);
    for (ws, &b) in w_scales.iter_mut().zip(bias) {
        let smallest = f64::from(1.0001f32 * (2.0f32 * b.abs())) / qrange;
        let candidate = f64::from(x_scale) * f64::from(*ws);
        if candidate < smallest && candidate > 0.0 {
            *ws = (f64::from(*ws) * (smallest / candidate)) as f32;
        }
    }
}

/// A per-channel int8 weight: `W_quantized`, `W_scale`, `W_zero_point` and
/// `DequantizeLinear(axis) -> W_DequantizeLinear_Output`.
fn quantize_weight(
    w: &pb::TensorProto,
    axis: usize,
    scales: &[f32],
    names: &mut Names,
) -> Result<InitQ, ConvertError> {
    let data = graph::tensor_f32(w)?;
    let (_, channels, inner) = split_axis(&w.dims, axis);
    let q: Vec<i8> = data
        .iter()
        .enumerate()
        .map(|(i, &v)| quantize_value(v, scales[(i / inner.max(1)) % channels.max(1)], 0))
        .collect();
    let t = &w.name;
    let q_name = names.fresh(&format!("{t}_quantized"));
    let scale_name = names.fresh(&format!("{t}_scale"));
    let zp_name = names.fresh(&format!("{t}_zero_point"));
    let dq_out = names.fresh(&format!("{t}_DequantizeLinear_Output"));
    let dq_name = names.fresh(&format!("{t}_DequantizeLinear"));
    let m = [channels as i64];
    Ok(InitQ {
        inits: vec![
            graph::int8_tensor(&zp_name, &m, &vec![0; channels]),
            graph::f32_tensor(&scale_name, &m, scales),
            graph::int8_tensor(&q_name, &w.dims, &q),
        ],
        node: graph::make_node(
            "DequantizeLinear",
            &dq_name,
            &[&q_name, &scale_name, &zp_name],
            &[&dq_out],
            vec![graph::make_attr_int("axis", axis as i64)],
        ),
        dq_output: dq_out,
    })
}

/// An initializer read as an activation: int8 asymmetric per tensor from its
/// own min/max.
fn quantize_act_init(
    w: &pb::TensorProto,
    names: &mut Names,
    activations: ActType,
) -> Result<InitQ, ConvertError> {
    let (act_qmin, act_qmax) = activations.range();
    let data = graph::tensor_f32(w)?;
    let (lo, hi) = data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let (scale, zp) = if data.is_empty() {
        (1.0, 0)
    } else {
        compute_scale_zp(lo, hi, act_qmin, act_qmax, false)
    };
    let q: Vec<i32> = data
        .iter()
        .map(|&v| ((v / scale).round_ties_even() as i32).saturating_add(zp))
        .collect();
    let t = &w.name;
    let q_name = names.fresh(&format!("{t}_quantized"));
    let scale_name = names.fresh(&format!("{t}_scale"));
    let zp_name = names.fresh(&format!("{t}_zero_point"));
    let dq_out = names.fresh(&format!("{t}_DequantizeLinear_Output"));
    let dq_name = names.fresh(&format!("{t}_DequantizeLinear"));
    Ok(InitQ {
        inits: vec![
            activations.tensor(&zp_name, &[], &[zp]),
            graph::f32_tensor(&scale_name, &[], &[scale]),
            activations.tensor(&q_name, &w.dims, &q),
        ],
        node: graph::make_node(
            "DequantizeLinear",
            &dq_name,
            &[&q_name, &scale_name, &zp_name],
            &[&dq_out],
            vec![],
        ),
        dq_output: dq_out,
    })
}

/// An int32 bias (ORT's `quantize_bias_static_impl`): scale
/// `x_scale·w_scale` in f32, values `round(b / scale)` in f64. Its
/// `DequantizeLinear` writes the bias's own name when the node is its only
/// reader (as ORT does), else a fresh one. `None` if a scale is 0 (the bias
/// then stays float).
fn quantize_bias(
    b: &pb::TensorProto,
    x_scale: f32,
    w_scales: &[f32],
    only_reader: bool,
    names: &mut Names,
) -> Result<Option<InitQ>, ConvertError> {
    let data = graph::tensor_f32(b)?;
    let scales: Vec<f32> = w_scales.iter().map(|&w| x_scale * w).collect();
    if scales.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
        return Ok(None);
    }
    let q: Vec<i32> = data
        .iter()
        .zip(&scales)
        .map(|(&v, &s)| {
            (f64::from(v) / f64::from(s))
                .round_ties_even()
                .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
        })
        .collect();
    let base = if only_reader {
        b.name.clone()
    } else {
        names.fresh(&b.name)
    };
    let q_name = names.fresh(&format!("{base}_quantized"));
    let scale_name = names.fresh(&format!("{base}_quantized_scale"));
    let zp_name = names.fresh(&format!("{base}_quantized_zero_point"));
    let dq_name = names.fresh(&format!("{base}_DequantizeLinear"));
    let m = scales.len();
    let (zp, axis) = if m > 1 {
        (
            graph::int32_tensor(&zp_name, &[m as i64], &vec![0; m]),
            vec![graph::make_attr_int("axis", 0)],
        )
    } else {
        (graph::int32_tensor(&zp_name, &[], &[0]), vec![])
    };
    Ok(Some(InitQ {
        inits: vec![
            graph::int32_tensor(&q_name, &b.dims, &q),
            graph::f32_tensor(&scale_name, &[m as i64], &scales),
            zp,
        ],
        node: graph::make_node(
            "DequantizeLinear",
            &dq_name,
            &[&q_name, &scale_name, &zp_name],
            &[&base],
            axis,
        ),
        dq_output: base,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_zp_of_an_empty_range_is_one_and_zero() {
        assert_eq!(compute_scale_zp(0.0, 0.0, -128, 127, false), (1.0, 0));
        assert_eq!(compute_scale_zp(0.0, 0.0, -127, 127, true), (1.0, 0));
        // rmin == rmax != 0: the range is widened to hold 0.
        let (s, zp) = compute_scale_zp(2.0, 2.0, -128, 127, false);
        assert_eq!(s, (2.0f64 / 255.0) as f32);
        assert_eq!(zp, -128);
        let (s, zp) = compute_scale_zp(-3.0, -3.0, -128, 127, false);
        assert_eq!(s, (3.0f64 / 255.0) as f32);
        assert_eq!(zp, 127);
        // Below the smallest normal f32: scale 1, zero point 0 (ORT).
        assert_eq!(compute_scale_zp(0.0, 1e-37, -128, 127, false), (1.0, 0));
    }

    #[test]
    fn all_positive_and_all_negative_ranges_include_zero() {
        // [0.5, 6] → [0, 6]: zero point at qmin.
        let (s, zp) = compute_scale_zp(0.5, 6.0, -128, 127, false);
        assert_eq!(s, (6.0f64 / 255.0) as f32);
        assert_eq!(zp, -128);
        assert_eq!(quantize_value(0.0, s, zp), -128);
        assert_eq!(quantize_value(6.0, s, zp), 127);
        assert_eq!(quantize_value(7.0, s, zp), 127);
        // [-4, -1] → [-4, 0]: zero point at qmax.
        let (s, zp) = compute_scale_zp(-4.0, -1.0, -128, 127, false);
        assert_eq!(zp, 127);
        assert_eq!(quantize_value(-4.0, s, zp), -128);
        // Symmetric weights: zero point 0, scale absmax/127 computed in f64.
        let (s, zp) = compute_scale_zp(-0.25, 1.0, -127, 127, true);
        assert_eq!((s, zp), ((2.0f64 / 254.0) as f32, 0));
        assert_eq!(quantize_value(1.0, s, 0), 127);
        assert_eq!(quantize_value(-1.0, s, 0), -127);
    }

    #[test]
    fn asymmetric_zero_point_rounds_half_to_even() {
        // rmin/scale lands on .5: numpy.round goes to even.
        // [-1, 1.55] → scale 2.55/255 = 0.01; -128 + 100 = -28 exactly.
        let (s, zp) = compute_scale_zp(-1.0, 1.55, -128, 127, false);
        assert!((s - 0.01).abs() < 1e-7);
        assert_eq!(zp, -28);
        assert_eq!(quantize_value(0.5 * s, s, 0), 0);
        assert_eq!(quantize_value(1.5 * s, s, 0), 2);
        assert_eq!(quantize_value(-2.5 * s, s, 0), -2);
    }

    #[test]
    fn weight_scales_grow_when_the_bias_would_overflow_int32() {
        let mut ws = [1e-6f32, 0.5];
        adjust_weight_scales_for_bias(1e-6, &mut ws, &[1000.0, 1000.0]);
        assert!(ws[0] > 1e-6, "{ws:?}");
        let bias_scale = f64::from(1e-6f32 * ws[0]);
        assert!(1000.0 / bias_scale <= f64::from(i32::MAX));
        assert_eq!(ws[1], 0.5);
    }
}

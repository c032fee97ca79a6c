"""SSD test models and an independent reference for SSD postprocessing.

Models (built with onnx.helper + numpy):
- synthetic_model: the heads are constants (plus 0 x ReduceMean(input), so
  the graph has an image input); what the server must detect is known.
- ssd300_vgg16: the SSD300 VGG16 topology (Liu et al. 2016; Balanca's
  SSD-TensorFlow `ssd_vgg_300`) with deterministic random He-init weights.

Reference (what the server's answer is compared with):
- anchors: a numpy port of Balanca's `ssd_anchor_one_layer`
  (SSD-Tensorflow, nets/ssd_vgg_300.py, Apache-2.0);
- decoding: Balanca's `tf_ssd_bboxes_decode_layer`, in numpy float32;
- softmax, threshold, per-class top_k and the final keep_top_k merge in numpy;
- NMS: ONNX Runtime's `NonMaxSuppression` operator (a one-node graph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 13

# ---------------------------------------------------------------- spec


@dataclass
class Layer:
    scores: str
    boxes: str
    feature_size: tuple[int, int]
    step: tuple[float, float]
    sizes: list[float]
    ratios: list[float]

    @property
    def per_cell(self) -> int:
        return min(len(self.sizes), 2) + len(self.ratios)

    @property
    def anchors(self) -> int:
        return self.feature_size[0] * self.feature_size[1] * self.per_cell


@dataclass
class Spec:
    """An SsdSpec (crates/accel-core/src/detection.rs), with its defaults."""

    layers: list[Layer]
    num_classes: int
    image_size: tuple[int, int] = (300, 300)
    background_class: int = 0
    softmax: bool = True
    variances: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    anchor_offset: float = 0.5
    score_threshold: float = 0.5
    nms_iou: float = 0.45
    top_k: int = 400
    keep_top_k: int = 200

    @property
    def anchor_count(self) -> int:
        return sum(l.anchors for l in self.layers)


SEED_FEATURES = (37, 19, 10, 5, 3, 1)
SEED_STEPS = (8.0, 16.0, 32.0, 64.0, 100.0, 300.0)
SEED_SIZES = ((21.0, 45.0), (45.0, 99.0), (99.0, 153.0), (153.0, 207.0), (207.0, 261.0), (261.0, 315.0))
SEED_RATIOS = (
    [2.0, 0.5],
    [2.0, 0.5, 3.0, 1.0 / 3.0],
    [2.0, 0.5, 3.0, 1.0 / 3.0],
    [2.0, 0.5, 3.0, 1.0 / 3.0],
    [2.0, 0.5],
    [2.0, 0.5],
)


def vgg300_spec(names: list[tuple[str, str]], features=SEED_FEATURES, **kw) -> Spec:
    """SsdSpec::ssd_vgg_300 (the seed's layout, 37x37 first map) or, with
    other feature sizes, the same anchors on another backbone's maps."""
    layers = [
        Layer(names[i][0], names[i][1], (features[i], features[i]), (SEED_STEPS[i], SEED_STEPS[i]),
              list(SEED_SIZES[i]), list(SEED_RATIOS[i]))
        for i in range(6)
    ]
    return Spec(layers=layers, num_classes=21, **kw)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def pipeline_toml(
    spec: Spec | None,
    *,
    input_name: str = "images",
    layout: str = "nhwc",
    mean=(123.0, 117.0, 104.0),
    std=(1.0, 1.0, 1.0),
    scale: float = 1.0,
) -> str:
    """A full PipelineSpec (crates/accel-core/src/spec.rs) as TOML: encoded
    images, plain resize to the spec's input size, and the `[detection]`
    table when `spec` is given (without it every model output is exposed)."""
    h, w = spec.image_size if spec is not None else (300, 300)
    lines = [
        'input_kind = "encoded-images"',
        f"input_name = {_toml_value(input_name)}",
        "",
        "[preprocess]",
        f'resize = {{ mode = "plain", width = {w}, height = {h} }}',
        'channel_order = "rgb"',
        f"scale = {_toml_value(float(scale))}",
        f"mean = {_toml_value([float(x) for x in mean])}",
        f"std = {_toml_value([float(x) for x in std])}",
        f'layout = "{layout}"',
    ]
    if spec is not None:
        lines += [
            "",
            "[detection]",
            f"image_size = {_toml_value(list(spec.image_size))}",
            f"num_classes = {spec.num_classes}",
            f"background_class = {spec.background_class}",
            f"softmax = {_toml_value(spec.softmax)}",
            f"variances = {_toml_value([float(v) for v in spec.variances])}",
            f"anchor_offset = {_toml_value(float(spec.anchor_offset))}",
            f"score_threshold = {_toml_value(float(spec.score_threshold))}",
            f"nms_iou = {_toml_value(float(spec.nms_iou))}",
            f"top_k = {spec.top_k}",
            f"keep_top_k = {spec.keep_top_k}",
        ]
        for l in spec.layers:
            lines += [
                "",
                "[[detection.layers]]",
                f"scores = {_toml_value(l.scores)}",
                f"boxes = {_toml_value(l.boxes)}",
                f"feature_size = {_toml_value(list(l.feature_size))}",
                f"step = {_toml_value([float(s) for s in l.step])}",
                f"sizes = {_toml_value([float(s) for s in l.sizes])}",
                f"ratios = {_toml_value([float(r) for r in l.ratios])}",
            ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- reference


def f32(v: float) -> float:
    """The value the server holds after parsing `v` into an f32."""
    return float(np.float32(v))


def ssd_anchor_one_layer(img_shape, feat_shape, sizes, ratios, step, offset=0.5, dtype=np.float32):
    """Port of Balanca's `ssd_anchor_one_layer` (SSD-Tensorflow,
    nets/ssd_vgg_300.py, Apache-2.0), with `step` as (y, x) where the
    original takes one scalar for both. Returns y, x of shape [H, W, 1] and
    h, w of shape [A]."""
    y, x = np.mgrid[0 : feat_shape[0], 0 : feat_shape[1]]
    y = (y.astype(dtype) + np.float32(offset)) * np.float32(step[0]) / np.float32(img_shape[0])
    x = (x.astype(dtype) + np.float32(offset)) * np.float32(step[1]) / np.float32(img_shape[1])
    y = np.expand_dims(y, axis=-1)
    x = np.expand_dims(x, axis=-1)
    num_anchors = min(len(sizes), 2) + len(ratios)
    h = np.zeros((num_anchors,), dtype=dtype)
    w = np.zeros((num_anchors,), dtype=dtype)
    h[0] = sizes[0] / img_shape[0]
    w[0] = sizes[0] / img_shape[1]
    di = 1
    if len(sizes) > 1:
        h[1] = math.sqrt(sizes[0] * sizes[1]) / img_shape[0]
        w[1] = math.sqrt(sizes[0] * sizes[1]) / img_shape[1]
        di += 1
    for i, r in enumerate(ratios):
        h[i + di] = sizes[0] / img_shape[0] / math.sqrt(r)
        w[i + di] = sizes[0] / img_shape[1] * math.sqrt(r)
    return y, x, h, w


def reference_anchors(spec: Spec) -> np.ndarray:
    """[anchors, 4] as (cy, cx, h, w) float32, in the order layer, y, x, anchor."""
    out = []
    for l in spec.layers:
        y, x, h, w = ssd_anchor_one_layer(
            spec.image_size,
            l.feature_size,
            [f32(s) for s in l.sizes],
            [f32(r) for r in l.ratios],
            [f32(s) for s in l.step],
            offset=f32(spec.anchor_offset),
        )
        fh, fw = l.feature_size
        a = len(h)
        cy = np.broadcast_to(y, (fh, fw, a))
        cx = np.broadcast_to(x, (fh, fw, a))
        hh = np.broadcast_to(h, (fh, fw, a))
        ww = np.broadcast_to(w, (fh, fw, a))
        out.append(np.stack([cy, cx, hh, ww], axis=-1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def decode_boxes(anchors: np.ndarray, loc: np.ndarray, variances) -> np.ndarray:
    """Balanca's `tf_ssd_bboxes_decode_layer` in numpy float32: offsets in the
    order x, y, w, h; returns [ymin, xmin, ymax, xmax] in 0..1 of the input."""
    loc = loc.astype(np.float32)
    v = [np.float32(f32(x)) for x in variances]
    cya, cxa, ha, wa = anchors[:, 0], anchors[:, 1], anchors[:, 2], anchors[:, 3]
    cx = loc[:, 0] * wa * v[0] + cxa
    cy = loc[:, 1] * ha * v[1] + cya
    w = wa * np.exp(loc[:, 2] * v[2])
    h = ha * np.exp(loc[:, 3] * v[3])
    two = np.float32(2.0)
    return np.stack([cy - h / two, cx - w / two, cy + h / two, cx + w / two], axis=-1).astype(np.float32)


class OrtNms:
    """ONNX Runtime's NonMaxSuppression (center_point_box=0: boxes are
    [y1, x1, y2, x2]) for one class at a time."""

    def __init__(self):
        node = helper.make_node(
            "NonMaxSuppression",
            ["boxes", "scores", "max_out", "iou", "score_threshold"],
            ["selected"],
            center_point_box=0,
        )
        graph = helper.make_graph(
            [node],
            "nms",
            [
                helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, "n", 4]),
                helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, "n"]),
                helper.make_tensor_value_info("max_out", TensorProto.INT64, [1]),
                helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
                helper.make_tensor_value_info("score_threshold", TensorProto.FLOAT, [1]),
            ],
            [helper.make_tensor_value_info("selected", TensorProto.INT64, ["k", 3])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        onnx.checker.check_model(model)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def __call__(self, boxes: np.ndarray, scores: np.ndarray, iou: float, score_threshold: float) -> np.ndarray:
        """Indices into `boxes` that NMS keeps, in its order (best first)."""
        n = len(boxes)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        (sel,) = self.session.run(
            None,
            {
                "boxes": boxes.astype(np.float32).reshape(1, n, 4),
                "scores": scores.astype(np.float32).reshape(1, 1, n),
                "max_out": np.array([n], dtype=np.int64),
                "iou": np.array([iou], dtype=np.float32),
                "score_threshold": np.array([score_threshold], dtype=np.float32),
            },
        )
        return sel[:, 2]


@np.errstate(over="ignore", invalid="ignore", divide="ignore")
def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ih = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iw = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ih * iw
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where((area_a[:, None] > 0) & (area_b[None, :] > 0), inter / union, 0.0)


@dataclass
class Reference:
    """Expected detections of one image, best first."""

    classes: np.ndarray  # [n] int
    scores: np.ndarray  # [n] float64
    anchors: np.ndarray  # [n] int
    boxes: np.ndarray  # [n, 4] float32, 0..1 of the input
    candidates: int = 0  # above the threshold, all classes
    suppressed: int = 0  # dropped by NMS
    ambiguous: list[str] = field(default_factory=list)  # decisions within rounding
    ties: int = 0  # adjacent near-equal scores of different classes (order may swap)


def reference_detect(spec: Spec, scores: list[np.ndarray], boxes: list[np.ndarray], nms: OrtNms) -> Reference:
    """One image: `scores[l]` / `boxes[l]` hold layer l's values (any shape
    whose element order is [H, W, A, C] / [H, W, A, 4])."""
    c = spec.num_classes
    logits = np.concatenate([np.asarray(s, dtype=np.float32).reshape(-1, c) for s in scores])
    locs = np.concatenate([np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes])
    assert len(logits) == spec.anchor_count and len(locs) == spec.anchor_count
    if spec.softmax:
        z = logits.astype(np.float64)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
    else:
        probs = logits.astype(np.float64)
    decoded = decode_boxes(reference_anchors(spec), locs, spec.variances)
    t, thr = f32(spec.score_threshold), f32(spec.nms_iou)
    ambiguous = []
    near = np.abs(probs - t) <= 1e-5 * max(abs(t), 1e-3)
    near[:, spec.background_class] = False
    if near.any():
        ambiguous.append(f"{int(near.sum())} scores within 1e-5 of the threshold")
    found = []  # (score, class, anchor)
    candidates = suppressed = 0
    for k in range(c):
        if k == spec.background_class:
            continue
        idx = np.nonzero(probs[:, k] > t)[0]
        candidates += len(idx)
        if len(idx) == 0:
            continue
        # Stable order: score descending, anchor ascending; then top_k.
        order = np.lexsort((idx, -probs[idx, k]))
        idx = idx[order]
        if len(idx) > spec.top_k:
            a, b = probs[idx[spec.top_k - 1], k], probs[idx[spec.top_k], k]
            if abs(a - b) <= 1e-6 * a:
                ambiguous.append(f"class {k}: top_k boundary scores {a} / {b}")
            idx = idx[: spec.top_k]
        bx = decoded[idx]
        keep = nms(bx, probs[idx, k].astype(np.float32), thr, t)
        suppressed += len(idx) - len(keep)
        # NMS decisions near the IoU threshold: each candidate against the
        # boxes kept before it.
        kept_set = np.zeros(len(idx), dtype=bool)
        kept_set[keep] = True
        iou = _iou_matrix(bx, bx)
        for i in range(len(idx)):
            earlier = np.nonzero(kept_set[:i])[0]
            if len(earlier) and np.any(np.abs(iou[i, earlier] - thr) <= 1e-5):
                ambiguous.append(f"class {k} anchor {idx[i]}: IoU within 1e-5 of nms_iou")
        for j in keep:
            found.append((probs[idx[j], k], k, int(idx[j])))
    found.sort(key=lambda d: (-d[0], d[1], d[2]))
    ties = sum(1 for a, b in zip(found, found[1:]) if a[0] - b[0] <= 1e-6 * a[0] and a[1] != b[1])
    if len(found) > spec.keep_top_k:
        a, b = found[spec.keep_top_k - 1][0], found[spec.keep_top_k][0]
        if a - b <= 1e-6 * a:
            ambiguous.append(f"keep_top_k boundary scores {a} / {b}")
        found = found[: spec.keep_top_k]
    anchors = np.array([d[2] for d in found], dtype=np.int64)
    return Reference(
        classes=np.array([d[1] for d in found], dtype=np.int64),
        scores=np.array([d[0] for d in found], dtype=np.float64),
        anchors=anchors,
        boxes=decoded[anchors] if len(found) else np.zeros((0, 4), np.float32),
        candidates=candidates,
        suppressed=suppressed,
        ambiguous=ambiguous,
        ties=ties,
    )


def to_pixels(boxes01: np.ndarray, width: int, height: int) -> np.ndarray:
    """Plain resize: [ymin, xmin, ymax, xmax] fractions of the model input →
    pixels of the original image, clipped to it."""
    b = boxes01.astype(np.float64) * np.array([height, width, height, width], dtype=np.float64)
    return np.clip(b, 0.0, np.array([height, width, height, width], dtype=np.float64))


# ---------------------------------------------------------------- graphs


def _image_input(name: str, layout: str, size=(300, 300)):
    h, w = size
    shape = ["N", h, w, 3] if layout == "nhwc" else ["N", 3, h, w]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def synthetic_model(
    spec: Spec,
    heads: list[tuple[np.ndarray, np.ndarray]],
    *,
    layout: str = "nhwc",
    flat: bool = False,
    input_name: str = "images",
) -> onnx.ModelProto:
    """A graph whose outputs (layer by layer: scores, boxes) are the given
    constants ([H, W, A, C] and [H, W, A, 4]) plus 0 x ReduceMean(input):
    shape [N, H, W, A, C] (or [N, H*W*A, C] when `flat`)."""
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")]
    rank = 3 if flat else 5
    inits.append(numpy_helper.from_array(np.array([-1] + [1] * (rank - 1), dtype=np.int64), "ones_shape"))
    nodes.append(helper.make_node("Reshape", ["nothing", "ones_shape"], ["nothing_r"]))
    outputs = []
    for l, (cls, loc) in zip(spec.layers, heads):
        fh, fw = l.feature_size
        a = l.per_cell
        for name, value, width in ((l.scores, cls, spec.num_classes), (l.boxes, loc, 4)):
            shape = [fh * fw * a, width] if flat else [fh, fw, a, width]
            const = np.asarray(value, dtype=np.float32).reshape([1] + shape)
            inits.append(numpy_helper.from_array(const, name + "_const"))
            nodes.append(helper.make_node("Add", ["nothing_r", name + "_const"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N"] + shape))
    graph = helper.make_graph(nodes, "ssd_synthetic", [_image_input(input_name, layout)], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def synthetic_heads(spec: Spec, rng: np.random.Generator, objects: int = 30, peak: float = 9.0):
    """Random class logits (the background usually ahead) with `objects`
    clusters of peaked anchors (one class on every anchor of a cell and its
    right and lower neighbours, so NMS has work), random box offsets.
    For a spec without softmax the logits become sigmoid scores."""
    c = spec.num_classes
    heads = []
    for l in spec.layers:
        fh, fw = l.feature_size
        a = l.per_cell
        cls = rng.normal(0.0, 1.0, (fh, fw, a, c)).astype(np.float32)
        cls[..., spec.background_class] += 3.0
        loc = rng.normal(0.0, 1.0, (fh, fw, a, 4)).astype(np.float32)
        heads.append([cls, loc])
    weights = np.array([l.anchors for l in spec.layers], dtype=np.float64)
    for _ in range(objects):
        li = int(rng.choice(len(spec.layers), p=weights / weights.sum()))
        l = spec.layers[li]
        fh, fw = l.feature_size
        y, x = int(rng.integers(fh)), int(rng.integers(fw))
        k = int(rng.integers(c - 1))
        k = k + 1 if k >= spec.background_class else k
        cls = heads[li][0]
        for yy, xx in ((y, x), (y, min(x + 1, fw - 1)), (min(y + 1, fh - 1), x)):
            cls[yy, xx, :, k] = peak + rng.normal(0.0, 1.0, l.per_cell).astype(np.float32)
            # Offsets that keep the cluster's boxes close together.
            heads[li][1][yy, xx] *= np.float32(0.3)
    if not spec.softmax:
        for h in heads:
            h[0] = (1.0 / (1.0 + np.exp(-(h[0] - 2.0)))).astype(np.float32)
    return [(h[0], h[1]) for h in heads]


# ---------------------------------------------------------------- SSD300-VGG16


class _Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list = []
        self.inits: list = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, scope: str, *, stride=1, pad=None, dilation=1,
             relu=True, gain=1.0) -> str:
        pad = (k // 2) * dilation if pad is None else pad
        fan_in = cin * k * k
        w = (self.rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(gain * math.sqrt(2.0 / fan_in)))
        b = np.zeros(cout, dtype=np.float32)
        self.const(scope + "/weights", w)
        self.const(scope + "/biases", b)
        out = scope + "/conv"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, scope + "/weights", scope + "/biases"],
                [out],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                dilations=[dilation, dilation],
            )
        )
        if not relu:
            return out
        self.nodes.append(helper.make_node("Relu", [out], [scope + "/relu"]))
        return scope + "/relu"

    def pool(self, x: str, scope: str, k=2, s=2, same_upper=True) -> str:
        out = scope + "/pool"
        if same_upper:
            self.nodes.append(helper.make_node("MaxPool", [x], [out], kernel_shape=[k, k], strides=[s, s],
                                               auto_pad="SAME_UPPER"))
        else:
            p = k // 2
            self.nodes.append(helper.make_node("MaxPool", [x], [out], kernel_shape=[k, k], strides=[s, s],
                                               pads=[p, p, p, p]))
        return out


# Feature maps of this graph (TF 'SAME' pooling as in Balanca's code: 300 →
# 150 → 75 → 38 → 19), with the seed's anchor sizes, ratios and steps.
VGG_FEATURES = (38, 19, 10, 5, 3, 1)
VGG_CHANNELS = (512, 1024, 512, 256, 256, 256)
VGG_BLOCKS = ("block4", "block7", "block8", "block9", "block10", "block11")


def ssd300_vgg16(rng: np.random.Generator, *, num_classes: int = 21, cls_gain: float = 1.0,
                 input_name: str = "images") -> tuple[onnx.ModelProto, list[tuple[str, str]]]:
    """SSD300 on VGG16 (Liu et al., "SSD: Single Shot MultiBox Detector",
    2016; layer for layer Balanca's `ssd_net` in nets/ssd_vgg_300.py): input
    [N, 300, 300, 3] (NHWC, as the seed) transposed to NCHW; conv1_1..conv5_3
    with 2x2/2 max pools ('SAME'), pool5 3x3/1, conv6 3x3 dilation 6 (1024),
    conv7 1x1 (1024), extras 8_1 1x1 256 / 8_2 3x3/2 512, 9_1 1x1 128 / 9_2
    3x3/2 256, 10_1 1x1 128 / 10_2 3x3 valid 256, 11_1 1x1 128 / 11_2 3x3
    valid 256; conv4_3 L2-normalised over channels and scaled by 20; per
    feature map a 3x3 box head and a 3x3 class head, reshaped to
    [N, H, W, A, 4] and [N, H, W, A, C]. He-init random weights (zero
    biases); the class heads' weights are multiplied by `cls_gain`.

    Returns the model and the (scores, boxes) output names per layer."""
    b = _Builder(rng)
    nodes = b.nodes
    nodes.append(helper.make_node("Transpose", [input_name], ["nchw"], perm=[0, 3, 1, 2]))
    x, cin = "nchw", 3
    feats = {}
    vgg = [(1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512)]
    for block, reps, cout in vgg:
        for i in range(1, reps + 1):
            x = b.conv(x, cin, cout, 3, f"conv{block}/conv{block}_{i}")
            cin = cout
        if block == 4:
            feats["block4"] = x
        if block < 5:
            x = b.pool(x, f"pool{block}")
    x = b.pool(x, "pool5", k=3, s=1, same_upper=False)
    x = b.conv(x, 512, 1024, 3, "conv6", dilation=6)
    x = b.conv(x, 1024, 1024, 1, "conv7")
    feats["block7"] = x
    x = b.conv(x, 1024, 256, 1, "block8/conv1x1")
    x = b.conv(x, 256, 512, 3, "block8/conv3x3", stride=2, pad=1)
    feats["block8"] = x
    x = b.conv(x, 512, 128, 1, "block9/conv1x1")
    x = b.conv(x, 128, 256, 3, "block9/conv3x3", stride=2, pad=1)
    feats["block9"] = x
    x = b.conv(x, 256, 128, 1, "block10/conv1x1")
    x = b.conv(x, 128, 256, 3, "block10/conv3x3", pad=0)
    feats["block10"] = x
    x = b.conv(x, 256, 128, 1, "block11/conv1x1")
    x = b.conv(x, 128, 256, 3, "block11/conv3x3", pad=0)
    feats["block11"] = x

    # L2 normalisation of conv4_3 (tf.nn.l2_normalize, epsilon 1e-12), scale 20.
    f4 = feats["block4"]
    b.const("l2/eps", np.array(1e-12, dtype=np.float32))
    b.const("l2/gamma", np.full((1, 512, 1, 1), 20.0, dtype=np.float32))
    nodes += [
        helper.make_node("ReduceSumSquare", [f4], ["l2/sumsq"], axes=[1], keepdims=1),
        helper.make_node("Max", ["l2/sumsq", "l2/eps"], ["l2/clamped"]),
        helper.make_node("Sqrt", ["l2/clamped"], ["l2/norm"]),
        helper.make_node("Div", [f4, "l2/norm"], ["l2/normalized"]),
        helper.make_node("Mul", ["l2/normalized", "l2/gamma"], ["l2/scaled"]),
    ]
    feats["block4"] = "l2/scaled"

    outputs, names = [], []
    for i, blk in enumerate(VGG_BLOCKS):
        fs = VGG_FEATURES[i]
        a = min(len(SEED_SIZES[i]), 2) + len(SEED_RATIOS[i])
        cin = VGG_CHANNELS[i]
        loc = b.conv(feats[blk], cin, a * 4, 3, f"{blk}_box/conv_loc", relu=False)
        cls = b.conv(feats[blk], cin, a * num_classes, 3, f"{blk}_box/conv_cls", relu=False, gain=cls_gain)
        pair = []
        for head, width, src in (("cls", num_classes, cls), ("loc", 4, loc)):
            name = f"{blk}_box/{head}_pred"
            shape = b.const(f"{blk}_box/{head}_shape", np.array([-1, fs, fs, a, width], dtype=np.int64))
            nodes.append(helper.make_node("Transpose", [src], [name + "/nhwc"], perm=[0, 2, 3, 1]))
            nodes.append(helper.make_node("Reshape", [name + "/nhwc", shape], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", fs, fs, a, width]))
            pair.append(name)
        names.append((pair[0], pair[1]))

    graph = helper.make_graph(nodes, "ssd_300_vgg", [_image_input(input_name, "nhwc")], outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model, names


def calibrate_heads(model: onnx.ModelProto, names: list[tuple[str, str]], sample: np.ndarray,
                    cls_std: float = 2.0, loc_std: float = 0.5, input_name: str = "images") -> None:
    """Data-dependent init (as LSUV): runs the model once on `sample` and
    rescales each head's weights (the heads are linear, biases zero) so its
    outputs have the given standard deviation. Random VGG features are
    O(100) where trained ones are not; unscaled, every softmax saturates."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    values = dict(zip(out_names, sess.run(None, {input_name: sample})))
    inits = {i.name: i for i in model.graph.initializer}
    for cls_name, loc_name in names:
        for name, target, head in ((cls_name, cls_std, "conv_cls"), (loc_name, loc_std, "conv_loc")):
            std = float(values[name].std())
            blk = name.split("_box/")[0]
            init = inits[f"{blk}_box/{head}/weights"]
            w = numpy_helper.to_array(init) * np.float32(target / max(std, 1e-12))
            init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))

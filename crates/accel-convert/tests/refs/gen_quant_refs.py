#!/usr/bin/env python3
"""Generates the reference data the converter's quantization tests compare against.

Everything here is computed by other people's code: onnx's version converter
upgrades the float ShuffleNetV2 to opset 13, Pillow + numpy preprocess the
photos (torchvision's recipe, the same as
crates/accel-runtime/tests/refs/gen_references.py), and ONNX Runtime's own
quantizer does the rest: its MinMax calibrator measures activation ranges on
the 8 photos of fixtures/images/ and
quantize_static(quant_format=QDQ, per_channel=True, activation_type=QInt8,
weight_type=QInt8, calibrate_method=MinMax) writes the QDQ model. Run from the
repository root with a venv holding onnx==1.23.2, onnxruntime==1.31.1, numpy
and pillow:

    .venv/bin/python crates/accel-convert/tests/refs/gen_quant_refs.py

Provenance: quant_refs.json (next to this script) is the output of this
script, run with onnx 1.23.2, onnxruntime 1.31.1, numpy 2.4.6 and Pillow
(versions recorded in its "generator" field) on
fixtures/models/shufflenet-v2-12-f32.onnx and the photos of fixtures/images/.
It holds (floats that must compare exactly are written as the exact f32 value):
- ranges: name -> [min, max], the calibrated range ORT measured for every
  tensor it calibrated (feed these to our quantizer to get ORT's parameters);
- weights: per quantized weight (original initializer name): axis, dims,
  per-channel scales, whether every zero point is 0, sha256 of the int8 bytes;
- biases: per quantized bias: sha256 of the int32 bytes and of the f32 scales;
- activations: name of each tensor ORT put a QuantizeLinear on -> scale,
  zero point;
- op_counts: node counts by op type of ORT's QDQ model, and
  optimized_op_counts: of that model once ONNX Runtime optimized it
  (ORT_ENABLE_ALL) on the machine that ran this script;
- logits: ORT's QDQ model on the Pillow tensors of chelsea, coffee and china
  (raw logits, top-5). Those of chelsea and china are byte for byte the
  `.torchvision.f32` files of crates/accel-runtime/tests/refs/ (asserted
  here), so the tests can feed our model the very same input.
"""
import collections
import hashlib
import json
import pathlib
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.calibrate import load_tensors_data
from PIL import Image, ImageOps

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[3]
FIX = ROOT / "fixtures"
MODEL = FIX / "models" / "shufflenet-v2-12-f32.onnx"
CALIBRATION = sorted(p.name for p in (FIX / "images").iterdir() if p.suffix in (".png", ".jpg"))
LOGIT_PHOTOS = ["skimage_chelsea.png", "skimage_coffee.png", "sklearn_china.jpg"]
RUNTIME_REFS = ROOT / "crates" / "accel-runtime" / "tests" / "refs"


def resize_crop(img, shorter=256, crop=224):
    """torchvision.transforms.Resize(256) + CenterCrop(224) on a PIL image."""
    w, h = img.size
    if w <= h:
        nw, nh = shorter, int(shorter * h / w)
    else:
        nw, nh = int(shorter * w / h), shorter
    img = img.resize((nw, nh), Image.BILINEAR)
    top = int(round((nh - crop) / 2.0))
    left = int(round((nw - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


def torchvision_tensor(path):
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    a = np.asarray(resize_crop(img), dtype=np.float32) / 255.0
    a = (a - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return a.transpose(2, 0, 1)[None].astype(np.float32)


class Photos(CalibrationDataReader):
    def __init__(self, input_name):
        self.items = iter([{input_name: torchvision_tensor(FIX / "images" / p)} for p in CALIBRATION])

    def get_next(self):
        return next(self.items, None)


def exact(x):
    """An f32 as the f64 holding exactly the same value."""
    return float(np.float32(x))


def short(x):
    """An f32 in its shortest round-trip decimal form."""
    return float(str(np.float32(x)))


def sha256(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main():
    with tempfile.TemporaryDirectory(prefix="accel-quant-refs-") as tmp:
        refs = make_refs(pathlib.Path(tmp))
    (HERE / "quant_refs.json").write_text(json.dumps(refs, indent=0, separators=(",", ":")) + "\n")


def make_refs(tmp):
    f32 = version_converter.convert_version(onnx.load(str(MODEL)), 13)
    f32_path = tmp / "f32-opset13.onnx"
    onnx.save(f32, str(f32_path))
    qdq_path = tmp / "qdq.onnx"
    cache = tmp / "ranges.json"
    input_name = f32.graph.input[0].name
    quantize_static(
        str(f32_path),
        str(qdq_path),
        Photos(input_name),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        calibration_cache_path=str(cache),
    )
    ranges = {
        name: [exact(np.asarray(td.range_value[0]).ravel()[0]), exact(np.asarray(td.range_value[1]).ravel()[0])]
        for name, td in sorted(load_tensors_data(cache).data.items())
    }

    qdq = onnx.load(str(qdq_path))
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    weights, biases, activations = {}, {}, {}
    for n in qdq.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            q = inits[n.input[0]]
            scale, zp = inits[n.input[1]], inits[n.input[2]]
            axis = next((a.i for a in n.attribute if a.name == "axis"), None)
            if q.dtype == np.int8:
                weights[n.input[0].removesuffix("_quantized")] = {
                    "axis": axis,
                    "dims": list(q.shape),
                    "scales": [exact(s) for s in scale.ravel()],
                    "zero_points_zero": bool((zp == 0).all()),
                    "sha256": sha256(q.astype("<i1")),
                }
            elif q.dtype == np.int32:
                biases[n.output[0]] = {
                    "sha256": sha256(q.astype("<i4")),
                    "scales_sha256": sha256(scale.astype("<f4")),
                }
        elif n.op_type == "QuantizeLinear":
            activations[n.input[0]] = {
                "scale": exact(inits[n.input[1]]),
                "zero_point": int(inits[n.input[2]]),
            }

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp / "qdq-optimized.onnx")
    sess = ort.InferenceSession(str(qdq_path), so, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp / "qdq-optimized.onnx"))

    logits = {}
    for photo in LOGIT_PHOTOS:
        x = torchvision_tensor(FIX / "images" / photo)
        shared = RUNTIME_REFS / f"{photo}.torchvision.f32"
        if shared.exists():
            # The tests feed our model these very bytes (checked in by
            # accel-runtime's gen_references.py, same recipe).
            assert shared.read_bytes() == x.astype("<f4").tobytes(), shared
        out = sess.run(None, {input_name: x})[0][0]
        logits[photo] = {
            "top5": [int(i) for i in np.argsort(-out, kind="stable")[:5]],
            "logits": [short(x) for x in out],
        }

    def counts(m):
        return dict(sorted(collections.Counter(n.op_type for n in m.graph.node).items()))

    refs = {
        "model": MODEL.name,
        "calibration_images": CALIBRATION,
        "ranges": ranges,
        "weights": dict(sorted(weights.items())),
        "biases": dict(sorted(biases.items())),
        "activations": dict(sorted(activations.items())),
        "op_counts": counts(qdq),
        "optimized_op_counts": counts(optimized),
        "logits": logits,
        "generator": {
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "pillow": Image.__version__,
        },
    }
    del sess  # the session holds files of `tmp` open
    return refs


if __name__ == "__main__":
    main()

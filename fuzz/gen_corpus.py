#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ (checked in; rerun only to
change the seeds). Needs the TF Serving and tritonclient protos, e.g. the
interop venv: `python fuzz/gen_corpus.py`. Images are made with zlib (PNG)
or cut from fixtures/images (JPEG); no PIL."""

import json
import os
import struct
import zlib

from tensorflow_serving.apis import predict_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tritonclient.grpc import service_pb2

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)
CORPUS = os.path.join(ROOT, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def png(width, height, color_type, bit_depth=8, interlace=0):
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    bpp = channels * bit_depth // 8
    raw = b"".join(
        b"\x00" + bytes((x * 7 + y * 13 + c) % 256 for x in range(width) for c in range(bpp))
        for y in range(height)
    )

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def images():
    put("image_preprocess", "rgb_16x9.png", png(16, 9, 2))
    put("image_preprocess", "gray_7x31.png", png(7, 31, 0))
    put("image_preprocess", "rgba_5x5.png", png(5, 5, 6))
    put("image_preprocess", "gray_alpha_3x2.png", png(3, 2, 4))
    put("image_preprocess", "rgb16_4x4.png", png(4, 4, 2, bit_depth=16))
    put("image_preprocess", "one_pixel.png", png(1, 1, 2))
    fixtures = os.path.join(REPO, "fixtures", "images")
    with open(os.path.join(fixtures, "skimage_chelsea_q90.jpg"), "rb") as f:
        put("image_preprocess", "chelsea_q90.jpg", f.read())
    for name in ("sklearn_china.jpg", "mobilenet_caffe_cat.jpg"):
        with open(os.path.join(fixtures, name), "rb") as f:
            put("image_preprocess", "head4k_" + name, f.read(4096))


def shape(*dims):
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])


def tfs():
    with open(os.path.join(REPO, "fixtures", "images", "skimage_chelsea_q90.jpg"), "rb") as f:
        jpeg = f.read(512)
    reqs = {}
    r = predict_pb2.PredictRequest()
    r.model_spec.name = "resnet"
    r.model_spec.signature_name = "serving_default"
    r.inputs["images"].CopyFrom(
        tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape(1), string_val=[jpeg])
    )
    reqs["images_string"] = r
    r = predict_pb2.PredictRequest()
    r.model_spec.name = "raw"
    r.model_spec.version.value = 3
    r.inputs["x"].CopyFrom(
        tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape(2, 4), float_val=[float(i) for i in range(8)])
    )
    reqs["f32_float_val"] = r
    r = predict_pb2.PredictRequest()
    r.inputs["x"].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, tensor_shape=shape(1, 4), tensor_content=struct.pack("<4f", 1, 2, 3, 4)
        )
    )
    r.output_filter.append("probabilities")
    reqs["f32_tensor_content"] = r
    r = predict_pb2.PredictRequest()
    r.inputs["x"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape(3, 4), float_val=[0.5]))
    reqs["f32_broadcast"] = r
    for dt, field, vals in (
        (types_pb2.DT_INT64, "int64_val", [1, -2, 3]),
        (types_pb2.DT_INT32, "int_val", [7, 8, 9]),
        (types_pb2.DT_UINT8, "int_val", [0, 128, 255]),
        (types_pb2.DT_INT8, "int_val", [-128, 0, 127]),
    ):
        r = predict_pb2.PredictRequest()
        t = tensor_pb2.TensorProto(dtype=dt, tensor_shape=shape(1, 3))
        getattr(t, field).extend(vals)
        r.inputs["x"].CopyFrom(t)
        reqs["dtype_" + types_pb2.DataType.Name(dt).lower()] = r
    r = predict_pb2.PredictRequest()
    r.model_spec.version_label = "stable"
    r.inputs["x"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape(1, 4), float_val=[1, 2, 3, 4]))
    reqs["version_label"] = r
    for name, req in reqs.items():
        put("tfs_predict", name + ".pb", req.SerializeToString())


def kserve():
    reqs = {}
    r = service_pb2.ModelInferRequest(model_name="raw", model_version="1", id="a")
    t = r.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    t.contents.fp32_contents.extend(float(i) for i in range(8))
    r.outputs.add(name="logits")
    reqs["fp32_contents"] = r
    r = service_pb2.ModelInferRequest(model_name="raw")
    r.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    r.raw_input_contents.append(struct.pack("<4f", 1, 2, 3, 4))
    reqs["fp32_raw"] = r
    r = service_pb2.ModelInferRequest(model_name="resnet")
    r.inputs.add(name="images", datatype="BYTES", shape=[2])
    r.raw_input_contents.append(struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0))
    reqs["bytes_raw"] = r
    r = service_pb2.ModelInferRequest(model_name="resnet")
    t = r.inputs.add(name="data", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(png(2, 2, 2))
    reqs["bytes_contents"] = r
    for dt, field, vals, raw in (
        ("INT64", "int64_contents", [1, -2], struct.pack("<2q", 1, -2)),
        ("INT32", "int_contents", [1, -2], struct.pack("<2i", 1, -2)),
        ("UINT8", "uint_contents", [1, 255], b"\x01\xff"),
        ("INT8", "int_contents", [-1, 2], b"\xff\x02"),
    ):
        r = service_pb2.ModelInferRequest(model_name="raw", model_version="2")
        t = r.inputs.add(name="x", datatype=dt, shape=[1, 2])
        getattr(t.contents, field).extend(vals)
        reqs["contents_" + dt.lower()] = r
        r = service_pb2.ModelInferRequest(model_name="raw")
        r.inputs.add(name="x", datatype=dt, shape=[1, 2])
        r.raw_input_contents.append(raw)
        reqs["raw_" + dt.lower()] = r
    for name, req in reqs.items():
        put("kserve_infer", name + ".pb", req.SerializeToString())


def rest():
    tfs_bodies = {
        "row_numbers": {"instances": [[1.0, 2.0, 3.0, 4.0]]},
        "row_named": {"signature_name": "serving_default", "instances": [{"x": [1, 2, 3, 4]}]},
        "row_b64": {"instances": [{"b64": "iVBORw0KGgo="}]},
        "columnar": {"inputs": {"x": [[1, 2, 3, 4], [5, 6, 7, 8]]}},
        "columnar_b64": {"inputs": [{"b64": "/9j/4AAQ"}]},
    }
    for name, body in tfs_bodies.items():
        put("rest_json", "tfs_" + name + ".json", b"\x00" + json.dumps(body).encode())
    kserve_bodies = {
        "fp32": ({"id": "1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, b""),
        "nested": ({"inputs": [{"name": "x", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, 4]]}],
                    "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
                    "parameters": {"binary_data_output": False, "timeout": 1000}}, b""),
        "bytes_json": ({"inputs": [{"name": "data", "datatype": "BYTES", "shape": [1], "data": ["aGVsbG8="]}]}, b""),
        "binary_fp32": ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                     "parameters": {"binary_data_size": 16}}]}, struct.pack("<4f", 1, 2, 3, 4)),
        "binary_bytes": ({"inputs": [{"name": "data", "datatype": "BYTES", "shape": [1],
                                      "parameters": {"binary_data_size": 7}}]}, struct.pack("<I", 3) + b"abc"),
    }
    for name, (body, binary) in kserve_bodies.items():
        put("rest_json", "kserve_" + name + ".bin", b"\x01" + json.dumps(body).encode() + b"\x00" + binary)


def specs():
    # The presets' own TOML/JSON (and metadata/stored_spec_*.bin, a 3 byte
    # then the JSON) were written from `Preset::spec()` with `input_name =
    # "data"` via `to_toml()` / `to_json()`; here only hand-written variants.
    put("pipeline_spec", "raw_tensor.toml",
        'input_kind = "tensor"\ninput_name = "x"\ntop_k = 1\n\n[[outputs]]\nname = "logits"\n')
    put("pipeline_spec", "bgr_nhwc.json", json.dumps({
        "input_kind": "encoded-images", "input_name": "input", "input_aliases": [], "top_k": 3,
        "preprocess": {"channel_order": "bgr", "scale": 1.0, "mean": [103.9, 116.8, 123.7],
                       "std": [1.0, 1.0, 1.0], "layout": "nhwc",
                       "resize": {"mode": "plain", "width": 299, "height": 299}},
        "outputs": [{"name": "probs", "aliases": ["scores"], "softmax": False}]}, indent=1))


if __name__ == "__main__":
    images()
    tfs()
    kserve()
    rest()
    specs()

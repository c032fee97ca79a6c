"""What every Python peer shares: Accel's torchvision preprocessing done in
Pillow + numpy, one ONNX Runtime session set up as Accel sets up its own,
softmax, and the KServe v2 REST wire format (binary data extension).

Preprocessing, step by step as torchvision's ``Resize(256)`` +
``CenterCrop(224)`` + ``ToTensor()`` + ``Normalize`` apply to a PIL image,
which is also what Accel's ``--preset torchvision`` reproduces:

1. decode the JPEG with Pillow and convert to RGB;
2. scale so the shorter side is 256: the longer side becomes
   ``int(256 * long / short)`` and ``Image.resize(..., BILINEAR)`` resamples
   (a convolution whose support grows with the downscale: antialiased);
3. cut the centred 224 x 224 window, offsets ``int(round((size - 224) / 2))``;
4. ``/255``, minus mean ``[0.485, 0.456, 0.406]``, over std
   ``[0.229, 0.224, 0.225]``, NCHW float32, batch 1.

The session: CPUExecutionProvider, ``intra_op_num_threads`` (2 by default),
one inter-op thread, graph optimization level ORT_ENABLE_ALL. The output is
the softmax of the model's logits (both models here output logits).
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
from typing import Optional

import numpy as np
from PIL import Image

SHORTER_SIDE = 256
CROP = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)

# Name of the FP32 output every peer returns.
OUTPUT_NAME = "probabilities"


def scaled_size(width: int, height: int) -> tuple[int, int]:
    """torchvision ``Resize(256)``: shorter side 256, longer truncated."""
    if width <= height:
        return SHORTER_SIDE, int(SHORTER_SIDE * height / width)
    return int(SHORTER_SIDE * width / height), SHORTER_SIDE


def preprocess(jpeg: bytes) -> np.ndarray:
    """Encoded image bytes -> (1, 3, 224, 224) float32, normalized."""
    img = Image.open(io.BytesIO(jpeg)).convert("RGB")
    w, h = scaled_size(*img.size)
    img = img.resize((w, h), Image.BILINEAR)
    left = int(round((w - CROP) / 2.0))
    top = int(round((h - CROP) / 2.0))
    img = img.crop((left, top, left + CROP, top + CROP))
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    x = (x - MEAN) / STD
    return x[np.newaxis].astype(np.float32, copy=False)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the last axis, float32."""
    z = logits.astype(np.float32) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def threads() -> int:
    """Intra-op threads: $PEER_THREADS, default 2 (Accel's `--threads 2`)."""
    return int(os.environ.get("PEER_THREADS", "2"))


class Classifier:
    """One ONNX Runtime session plus the preprocessing: JPEG in, softmax out."""

    def __init__(self, model_path: str, intra_op_threads: Optional[int] = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = intra_op_threads or threads()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            model_path, sess_options=so, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def predict(self, jpeg: bytes) -> np.ndarray:
        """(1, classes) float32 probabilities for one encoded image."""
        x = preprocess(jpeg)
        (logits,) = self.session.run([self.output_name], {self.input_name: x})
        return softmax(logits.reshape(logits.shape[0], -1))


# --- KServe v2 REST ---------------------------------------------------------


class BadRequest(ValueError):
    """The request body is not a v2 infer request we can serve."""


def split_bytes_tensor(raw: bytes) -> list[bytes]:
    """A serialized BYTES tensor: each element a 4-byte LE length + bytes."""
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise BadRequest("truncated BYTES element length")
        (n,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + n > len(raw):
            raise BadRequest("truncated BYTES element")
        out.append(raw[i : i + n])
        i += n
    return out


def parse_v2_images(body: bytes, header_length: Optional[str]) -> list[bytes]:
    """The encoded images of a v2 infer request's first input.

    With ``Inference-Header-Content-Length`` (the binary data extension) the
    JSON header is followed by the tensors' bytes; a BYTES input there is
    4-byte LE length-prefixed elements. Without it the body is plain JSON, and
    a BYTES input's ``data`` holds base64 strings (our convention: v2 JSON has
    no standard way to carry arbitrary bytes).
    """
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest("bad Inference-Header-Content-Length") from None
        if not 0 < n <= len(body):
            raise BadRequest("Inference-Header-Content-Length out of range")
        header, rest = json.loads(body[:n]), body[n:]
    else:
        header, rest = json.loads(body), b""
    inputs = header.get("inputs") or []
    if not inputs:
        raise BadRequest("no inputs")
    offset = 0
    for inp in inputs:
        size = (inp.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = rest[offset : offset + int(size)]
            offset += int(size)
            if inp is inputs[0]:
                if inp.get("datatype") != "BYTES":
                    raise BadRequest("the input must be BYTES (encoded images)")
                return split_bytes_tensor(raw)
        elif inp is inputs[0]:
            data = inp.get("data")
            if not isinstance(data, list):
                raise BadRequest("input has neither data nor binary_data_size")
            flat = data[0] if data and isinstance(data[0], list) else data
            return [base64.b64decode(s) for s in flat]
    raise BadRequest("no input")


def v2_response(model_name: str, probs: np.ndarray, request_id: Optional[str] = None) -> bytes:
    """A v2 infer response, JSON, with the softmax as one FP32 output."""
    doc = {
        "model_name": model_name,
        "outputs": [
            {
                "name": OUTPUT_NAME,
                "shape": list(probs.shape),
                "datatype": "FP32",
                "data": probs.ravel().tolist(),
            }
        ],
    }
    if request_id:
        doc["id"] = request_id
    return json.dumps(doc).encode()


def v2_binary_request(jpeg: bytes, input_name: str = "input") -> tuple[bytes, dict]:
    """Body and headers of a binary-extension infer request for one image
    (what ``accel bench --protocol kserve-http`` sends); used by run.py."""
    tensor = struct.pack("<I", len(jpeg)) + jpeg
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ]
        }
    ).encode()
    return header + tensor, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


def top1_from_v2_json(doc: dict) -> tuple[int, float]:
    """(class index, probability) of a v2 JSON response's first output."""
    out = doc["outputs"][0]
    data = np.asarray(out["data"], dtype=np.float32).ravel()
    i = int(np.argmax(data))
    return i, float(data[i])

"""Peer (c): KServe's Python model server (kserve 0.21.0) + ONNX Runtime.

    python kserve_server.py --model-path M.onnx --model_name NAME \
        --http_port P --grpc_port Q

A custom ``kserve.Model`` whose ``predict`` takes the v2 request's BYTES
input (encoded JPEGs), runs the shared Pillow/numpy preprocessing and the ONNX
Runtime session, and answers the softmax as one FP32 output. KServe's own
ModelServer serves it: v2 REST on --http_port (health: GET
/v2/health/ready), v2 gRPC (``ModelInfer``) on --grpc_port, one worker.
``predict`` is synchronous, so KServe runs it on its event loop: one request
at a time, like Accel's single engine worker.

Over REST, kserve 0.21 accepts the binary data extension but converts a BYTES
input to UTF-8 strings on the way in (``InferRequest.from_bytes`` calls
``set_data_from_numpy(..., binary_data=False)``), so a JPEG there is refused
("Failed to encode ... using UTF-8"). The harness therefore drives KServe over
v2 gRPC, where ``raw_input_contents`` reach the model as bytes. The flags are
KServe's own (``--http_port``, ``--grpc_port``, ``--model_name``, ...): its
ModelServer parses ``sys.argv`` itself.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kserve  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: E402
from kserve.errors import InvalidInput  # noqa: E402

from common import OUTPUT_NAME, Classifier  # noqa: E402


class OnnxImageClassifier(Model):
    """JPEG bytes in (v2 BYTES input), softmax out (v2 FP32 output)."""

    def __init__(self, name: str, model_path: str):
        super().__init__(name)
        self.model_path = model_path
        self.clf = None

    def load(self) -> bool:
        self.clf = Classifier(self.model_path)
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        if not isinstance(payload, InferRequest) or not payload.inputs:
            raise InvalidInput("expected a v2 infer request with one BYTES input")
        images = payload.inputs[0].as_numpy().ravel()
        if images.size != 1:
            raise InvalidInput("send one image per request")
        img = images[0]
        if isinstance(img, str):  # REST JSON path: not usable for JPEG bytes
            raise InvalidInput("the image must arrive as bytes")
        probs = self.clf.predict(bytes(img))
        out = InferOutput(name=OUTPUT_NAME, shape=list(probs.shape), datatype="FP32")
        out.set_data_from_numpy(probs, binary_data=payload.use_binary_outputs)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=[out],
            use_binary_outputs=payload.use_binary_outputs,
        )


def main() -> None:
    ap = argparse.ArgumentParser(parents=[kserve.model_server.parser], add_help=False)
    ap.add_argument("--model-path", required=True)
    a, _ = ap.parse_known_args()
    model = OnnxImageClassifier(a.model_name, a.model_path)
    model.load()
    ModelServer(http_port=a.http_port, grpc_port=a.grpc_port, workers=1).start([model])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Regenerates the golden wire files used by crates/accel-proto/tests/wire.rs.

Every message is built with the *official* generated Python classes, not with
our own .proto files, so the bytes are produced by someone else's compiler:

  * tensorflow-serving-api (tensorflow_serving.apis.*_pb2)  -- installed with
    --no-deps, plus tensorflow-protobuf for the tensorflow.core.* modules it
    imports (no TensorFlow needed);
  * tritonclient[grpc] (tritonclient.grpc.service_pb2, package `inference`);
  * tensorboard (tensorboard.compat.proto, TensorFlow core protos synced from
    a recent TensorFlow; only used for the reference descriptors).

Run it outside the repository's environment, e.g.:

  python3 -m venv /tmp/protovenv
  /tmp/protovenv/bin/pip install tensorflow-protobuf 'tritonclient[grpc]'
  /tmp/protovenv/bin/pip install --no-deps tensorflow-serving-api tensorboard
  /tmp/protovenv/bin/python crates/accel-proto/tests/golden/make_golden.py

Messages are serialized with deterministic=True (map entries sorted by key),
so regenerating gives the same bytes.

Besides the *.bin messages it writes reference_descriptors.bin, a
FileDescriptorSet of the official definitions, which wire.rs compares
field-by-field (numbers, types, labels) with accel-proto's own descriptors.
"""

import importlib.metadata as md
import os
import struct

import numpy as np
from google.protobuf import descriptor_pb2, wrappers_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2,
)
import tritonclient.grpc as tgrpc
from tritonclient.grpc import _utils as triton_utils
from tritonclient.grpc import service_pb2

HERE = os.path.dirname(os.path.abspath(__file__))

# Starts like a JPEG (SOI + APP0/JFIF), ends with EOI; includes bytes >= 0x80
# and a NUL so any string/bytes confusion shows.
JPEG_LIKE = (
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    + bytes(range(0x80, 0x90))
    + b"\xff\xd9"
)


def write(name, msg):
    data = msg.SerializeToString(deterministic=True)
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes ({msg.DESCRIPTOR.full_name})")


def shape(*dims):
    s = tensor_shape_pb2.TensorShapeProto()
    for d in dims:
        s.dim.add().size = d
    return s


def model_spec(spec, name, version=None, signature=None):
    spec.name = name
    if version is not None:
        spec.version.CopyFrom(wrappers_pb2.Int64Value(value=version))
    if signature is not None:
        spec.signature_name = signature


# --- TensorFlow Serving ------------------------------------------------------

# 1. PredictRequest exactly as Azure ML's PredictionClient (azureml-accel-models,
#    PredictionClient.score_file -> score_tensors) builds it: no model_spec,
#    one DT_STRING tensor "images" of shape [1] holding the file bytes. Same
#    statements, same order.
req = predict_pb2.PredictRequest()
req.inputs["images"].string_val.append(JPEG_LIKE)
req.inputs["images"].dtype = types_pb2.DT_STRING
dim = tensor_shape_pb2.TensorShapeProto.Dim()
dim.size = 1
req.inputs["images"].tensor_shape.dim.extend([dim])
write("tfs_predict_request_azure.bin", req)

# 2. PredictRequest with a full model_spec, a float tensor via tensor_content,
#    a float tensor via float_val, an int64 tensor via int64_val and an
#    output_filter.
req = predict_pb2.PredictRequest()
model_spec(req.model_spec, "resnet", version=3, signature="serving_default")
pix = req.inputs["pixels"]
pix.dtype = types_pb2.DT_FLOAT
pix.tensor_shape.CopyFrom(shape(1, 2, 3))
pix.tensor_content = np.array(
    [0.0, 0.5, 1.0, -1.5, 2.25, 3.0e-3], dtype="<f4"
).tobytes()
scale = req.inputs["scale"]
scale.dtype = types_pb2.DT_FLOAT
scale.tensor_shape.CopyFrom(shape(2))
scale.float_val.extend([0.5, -2.0])
ids = req.inputs["ids"]
ids.dtype = types_pb2.DT_INT64
ids.tensor_shape.CopyFrom(shape(3))
ids.int64_val.extend([7, -1, 1 << 40])
req.output_filter.extend(["probabilities", "classes"])
write("tfs_predict_request_full.bin", req)

# 3. PredictRequest choosing the version by label (field 4, after
#    signature_name = 3 on the wire although the oneof is declared first).
req = predict_pb2.PredictRequest()
model_spec(req.model_spec, "resnet", signature="classify")
req.model_spec.version_label = "stable"
t = req.inputs["flag"]
t.dtype = types_pb2.DT_BOOL
t.tensor_shape.CopyFrom(shape(2))
t.bool_val.extend([True, False])
write("tfs_predict_request_label.bin", req)

# 4. PredictResponse with one float output.
resp = predict_pb2.PredictResponse()
model_spec(resp.model_spec, "resnet", version=3, signature="serving_default")
out = resp.outputs["probabilities"]
out.dtype = types_pb2.DT_FLOAT
out.tensor_shape.CopyFrom(shape(1, 3))
out.float_val.extend([0.125, 0.75, 0.125])
write("tfs_predict_response.bin", resp)

# 5. GetModelMetadataRequest as the TF Serving client tools send it.
mreq = get_model_metadata_pb2.GetModelMetadataRequest()
model_spec(mreq.model_spec, "resnet")
mreq.metadata_field.append("signature_def")
write("tfs_get_model_metadata_request.bin", mreq)

# 6. GetModelMetadataResponse: metadata["signature_def"] = Any(SignatureDefMap).
sig = meta_graph_pb2.SignatureDef()
sig.method_name = "tensorflow/serving/predict"
i = sig.inputs["images"]
i.name = "input_bytes:0"
i.dtype = types_pb2.DT_STRING
i.tensor_shape.CopyFrom(shape(-1))
o = sig.outputs["scores"]
o.name = "softmax:0"
o.dtype = types_pb2.DT_FLOAT
o.tensor_shape.CopyFrom(shape(-1, 1000))
sdm = get_model_metadata_pb2.SignatureDefMap()
sdm.signature_def["serving_default"].CopyFrom(sig)
mresp = get_model_metadata_pb2.GetModelMetadataResponse()
model_spec(mresp.model_spec, "resnet", version=3)
mresp.metadata["signature_def"].Pack(sdm)
write("tfs_get_model_metadata_response.bin", mresp)

# --- KServe v2 / Open Inference Protocol (Triton's service_pb2) -------------

# 7. ModelInferRequest with typed contents: a BYTES input in
#    contents.bytes_contents, an FP32 input in contents.fp32_contents, request,
#    tensor and output parameters of every InferParameter kind.
ireq = service_pb2.ModelInferRequest()
ireq.model_name = "resnet"
ireq.model_version = "1"
ireq.id = "req-42"
ireq.parameters["content_type"].string_param = "image/jpeg"
ireq.parameters["binary_data_output"].bool_param = True
ireq.parameters["timeout"].int64_param = -5
ireq.parameters["temperature"].double_param = 0.25
ireq.parameters["priority"].uint64_param = 1 << 63
t = ireq.inputs.add()
t.name = "IMAGE"
t.datatype = "BYTES"
t.shape.extend([1])
t.parameters["binary_data_size"].int64_param = len(JPEG_LIKE)
t.contents.bytes_contents.append(JPEG_LIKE)
t = ireq.inputs.add()
t.name = "SCALE"
t.datatype = "FP32"
t.shape.extend([1, 2])
t.contents.fp32_contents.extend([0.5, -2.0])
o = ireq.outputs.add()
o.name = "scores"
o.parameters["classification"].int64_param = 3
write("kserve_infer_request_contents.bin", ireq)

# 8. ModelInferRequest exactly as tritonclient.grpc builds it: every input as
#    raw_input_contents (BYTES elements length-prefixed, FP32 little-endian),
#    priority as uint64_param, timeout as int64_param, plus custom parameters.
image = tgrpc.InferInput("IMAGE", [1], "BYTES")
image.set_data_from_numpy(np.array([JPEG_LIKE], dtype=np.object_))
scale = tgrpc.InferInput("SCALE", [1, 2], "FP32")
scale.set_data_from_numpy(np.array([[0.5, -2.0]], dtype=np.float32))
wanted = tgrpc.InferRequestedOutput("scores")
ireq = triton_utils._get_inference_request(
    model_name="resnet",
    inputs=[image, scale],
    model_version="1",
    request_id="req-43",
    outputs=[wanted],
    sequence_id=0,
    sequence_start=False,
    sequence_end=False,
    priority=7,
    timeout=1000,
    parameters={"mode": "fast", "top_k": 5},
)
write("kserve_infer_request_tritonclient.bin", ireq)

# 9. ModelInferResponse with one FP32 output in raw_output_contents.
iresp = service_pb2.ModelInferResponse()
iresp.model_name = "resnet"
iresp.model_version = "1"
iresp.id = "req-43"
iresp.parameters["sequence_end"].bool_param = False
o = iresp.outputs.add()
o.name = "scores"
o.datatype = "FP32"
o.shape.extend([1, 3])
iresp.raw_output_contents.append(struct.pack("<3f", 0.125, 0.75, 0.125))
write("kserve_infer_response.bin", iresp)

# 10. ModelMetadataResponse.
mm = service_pb2.ModelMetadataResponse()
mm.name = "resnet"
mm.versions.extend(["1", "2"])
mm.platform = "onnxruntime_onnx"
t = mm.inputs.add()
t.name = "IMAGE"
t.datatype = "BYTES"
t.shape.extend([-1])
t = mm.outputs.add()
t.name = "scores"
t.datatype = "FP32"
t.shape.extend([-1, 1000])
write("kserve_model_metadata_response.bin", mm)

# --- Reference descriptors ----------------------------------------------------


def rename_tensorboard(fdp):
    """tensorboard ships TF's core protos re-packaged as `tensorboard`."""
    fdp.package = "tensorflow"
    fdp.name = fdp.name.replace("tensorboard/compat/proto/", "tensorboard_tf/")
    deps = [d.replace("tensorboard/compat/proto/", "tensorboard_tf/") for d in fdp.dependency]
    del fdp.dependency[:]
    fdp.dependency.extend(deps)

    def fix_msg(m):
        for f in m.field:
            if f.type_name.startswith(".tensorboard."):
                f.type_name = ".tensorflow." + f.type_name[len(".tensorboard."):]
        for n in m.nested_type:
            fix_msg(n)

    for m in fdp.message_type:
        fix_msg(m)


fds = descriptor_pb2.FileDescriptorSet()
seen = set()


def add(fd, tensorboard=False):
    if fd.name in seen:
        return
    seen.add(fd.name)
    for dep in fd.dependencies:
        add(dep, tensorboard)
    p = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(p)
    if tensorboard:
        rename_tensorboard(p)
    fds.file.append(p)


# TF core messages as of a recent TensorFlow (tensorboard's synced copies);
# TF Serving APIs from tensorflow-serving-api; the core messages they import
# from tensorflow-protobuf are skipped where tensorboard has a newer copy.
from tensorboard.compat.proto import meta_graph_pb2 as tb_meta_graph_pb2

add(tb_meta_graph_pb2.DESCRIPTOR, tensorboard=True)
for name in [
    "tensorflow/core/framework/types.proto",
    "tensorflow/core/framework/tensor_shape.proto",
    "tensorflow/core/framework/resource_handle.proto",
    "tensorflow/core/framework/tensor.proto",
    "tensorflow/core/protobuf/struct.proto",
    "tensorflow/core/protobuf/meta_graph.proto",
]:
    seen.add(name)
tf_core_files = set(seen)
add(prediction_service_pb2.DESCRIPTOR)
add(service_pb2.DESCRIPTOR)
# Files skipped above are still named as dependencies; that is fine for the
# field-by-field comparison, which looks messages up by full name only.
with open(os.path.join(HERE, "reference_descriptors.bin"), "wb") as f:
    f.write(fds.SerializeToString(deterministic=True))
print(f"reference_descriptors.bin: {len(fds.file)} files")

versions = {
    p: md.version(p)
    for p in [
        "tensorflow-serving-api",
        "tensorflow-protobuf",
        "tritonclient",
        "tensorboard",
        "protobuf",
        "numpy",
    ]
}
with open(os.path.join(HERE, "PROVENANCE"), "w") as f:
    f.write(
        "Generated by make_golden.py with: "
        + ", ".join(f"{k}=={v}" for k, v in versions.items())
        + "\n"
    )
print(versions)

# --- gRPC method paths, as the official Python stubs call them ---------------


class RecordingChannel:
    """Stands in for grpc.Channel and records the method paths a stub binds."""

    def __init__(self):
        self.paths = []

    def unary_unary(self, path, *args, **kwargs):
        self.paths.append(path)

    unary_stream = stream_unary = stream_stream = unary_unary


from tensorflow_serving.apis import prediction_service_pb2_grpc
from tritonclient.grpc import service_pb2_grpc

channel = RecordingChannel()
prediction_service_pb2_grpc.PredictionServiceStub(channel)
service_pb2_grpc.GRPCInferenceServiceStub(channel)
with open(os.path.join(HERE, "grpc_paths.txt"), "w") as f:
    f.write("\n".join(channel.paths) + "\n")
print(f"grpc_paths.txt: {len(channel.paths)} paths")

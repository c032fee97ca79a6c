"""TensorFlow Serving gRPC (tensorflow.serving.PredictionService) with the
official Python stubs, sent the way Azure's PredictionClient sends them."""

from __future__ import annotations

import grpc
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, predict_pb2

import support
from support import (
    OUTPUT,
    OUTPUT_ALIAS,
    PHOTOS,
    RPC_TIMEOUT_S,
    azure_metadata,
    azure_request,
    check_probs,
    float_tensor_values,
    image_bytes,
    string_tensor,
    tfs_stub,
)


@pytest.mark.parametrize("photo", PHOTOS)
def test_azure_prediction_client_request(server, photo):
    stub = tfs_stub(server)
    resp = stub.Predict(
        azure_request([image_bytes(photo)]), timeout=RPC_TIMEOUT_S, metadata=azure_metadata("shuffle")
    )
    assert list(resp.outputs) == [OUTPUT_ALIAS], (
        f"outputs must have exactly one entry keyed by the first output alias {OUTPUT_ALIAS!r}; got {list(resp.outputs)}"
    )
    tensor = resp.outputs[OUTPUT_ALIAS]
    assert [d.size for d in tensor.tensor_shape.dim] == [1, 1000], f"output shape {tensor.tensor_shape}"
    arr = float_tensor_values(tensor, "Predict output")
    check_probs(arr[0], photo, f"TFS gRPC Predict {photo}")


@pytest.mark.parametrize("input_name", ["Placeholder:0", "images", "input"])
def test_model_spec_input_alias_and_output_filter(server, input_name):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "shuffle"
    request.inputs[input_name].CopyFrom(string_tensor([image_bytes("coffee")]))
    request.output_filter.append(OUTPUT)
    resp = tfs_stub(server).Predict(request, timeout=RPC_TIMEOUT_S)
    assert list(resp.outputs) == [OUTPUT], f"output_filter ['output'] must give one output keyed 'output'; got {list(resp.outputs)}"
    check_probs(float_tensor_values(resp.outputs[OUTPUT], "output")[0], "coffee", f"Predict via {input_name!r}")


def test_model_spec_version_and_signature(server):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "shuffle"
    request.model_spec.version.value = 1
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(string_tensor([image_bytes("chelsea")]))
    resp = tfs_stub(server).Predict(request, timeout=RPC_TIMEOUT_S)
    assert len(resp.outputs) == 1, f"expected one output, got {list(resp.outputs)}"
    (tensor,) = resp.outputs.values()
    check_probs(float_tensor_values(tensor, "output")[0], "chelsea", "Predict shuffle v1 serving_default")
    if resp.HasField("model_spec"):
        assert resp.model_spec.name == "shuffle", f"response model_spec.name {resp.model_spec.name!r}"


def test_batch_of_three_photos(start_server):
    srv = start_server("--model", "shuffle", "--max-batch", "4")
    resp = tfs_stub(srv).Predict(
        azure_request([image_bytes(p) for p in PHOTOS]), timeout=RPC_TIMEOUT_S, metadata=azure_metadata("shuffle")
    )
    (tensor,) = resp.outputs.values()
    arr = float_tensor_values(tensor, "batched output")
    assert arr.shape == (3, 1000), f"batch of 3 gave shape {arr.shape}"
    for row, photo in zip(arr, PHOTOS):
        check_probs(row, photo, f"batch row {photo}")


def test_get_model_metadata_signature_def(server):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "shuffle"
    request.metadata_field.append("signature_def")
    resp = tfs_stub(server).GetModelMetadata(request, timeout=RPC_TIMEOUT_S)
    assert "signature_def" in resp.metadata, f"metadata keys: {list(resp.metadata)}"
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sigs), (
        f"metadata['signature_def'] is a {resp.metadata['signature_def'].type_url}, not a SignatureDefMap"
    )
    assert "serving_default" in sigs.signature_def, f"signatures: {list(sigs.signature_def)}"
    sig = sigs.signature_def["serving_default"]
    names = {"input", *support.INPUT_ALIASES}
    string_inputs = [
        (k, v.name)
        for k, v in sig.inputs.items()
        if (v.name in names or k in names) and v.dtype == types_pb2.DT_STRING
    ]
    assert string_inputs, f"no DT_STRING input named input/images/Placeholder:0 in {sig.inputs}"
    float_outputs = [
        k
        for k, v in sig.outputs.items()
        if v.dtype == types_pb2.DT_FLOAT and [d.size for d in v.tensor_shape.dim] in ([-1, 1000], [1, 1000])
    ]
    assert float_outputs, f"no DT_FLOAT output of shape [-1|1, 1000] in {sig.outputs}"


def test_classify_is_unimplemented(server):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "shuffle"
    with pytest.raises(grpc.RpcError) as err:
        tfs_stub(server).Classify(request, timeout=RPC_TIMEOUT_S, metadata=azure_metadata("shuffle"))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, f"Classify: {err.value.code()} {err.value.details()}"
    support.tfs_predict_ok(server)

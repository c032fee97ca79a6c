"""KServe v2 gRPC (inference.GRPCInferenceService) through tritonclient.grpc."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as tgrpc

from support import PHOTOS, RPC_TIMEOUT_S, check_probs, image_bytes


@pytest.fixture
def client(server):
    c = tgrpc.InferenceServerClient(url=server.grpc)
    yield c
    c.close()


def image_input(photo: str) -> tgrpc.InferInput:
    inp = tgrpc.InferInput("input", [1], "BYTES")
    inp.set_data_from_numpy(np.array([image_bytes(photo)], dtype=np.object_))
    return inp


def test_health(client):
    assert client.is_server_live(), "is_server_live() is False"
    assert client.is_server_ready(), "is_server_ready() is False"
    assert client.is_model_ready("shuffle"), "is_model_ready('shuffle') is False"
    assert client.is_model_ready("shuffle", "1"), "is_model_ready('shuffle', '1') is False"


def test_model_metadata(client):
    md = client.get_model_metadata("shuffle", as_json=True)
    assert md["name"] == "shuffle", f"metadata name: {md}"
    assert "1" in md.get("versions", []), f"metadata versions: {md.get('versions')}"
    assert md["inputs"][0]["datatype"] == "BYTES", f"inputs: {md['inputs']}"
    assert md["outputs"][0]["datatype"] == "FP32", f"outputs: {md['outputs']}"
    # The protobuf form, as most callers use it.
    pb = client.get_model_metadata("shuffle")
    assert pb.inputs[0].datatype == "BYTES" and pb.outputs[0].datatype == "FP32"


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("requested", [False, True], ids=["all-outputs", "requested-output"])
def test_infer(client, photo, requested):
    outputs = [tgrpc.InferRequestedOutput("output")] if requested else None
    result = client.infer("shuffle", [image_input(photo)], outputs=outputs, client_timeout=RPC_TIMEOUT_S)
    resp = result.get_response()
    names = [o.name for o in resp.outputs]
    assert names == ["output"], f"outputs: {names}"
    assert resp.outputs[0].datatype == "FP32", f"datatype {resp.outputs[0].datatype}"
    assert list(resp.outputs[0].shape) == [1, 1000], f"shape {list(resp.outputs[0].shape)}"
    # tritonclient's as_numpy() reads FP32 results only from raw_output_contents.
    assert len(resp.raw_output_contents) == 1 and len(resp.raw_output_contents[0]) == 4000, (
        "FP32 output must come in raw_output_contents (4000 bytes) for tritonclient.as_numpy; "
        f"got {len(resp.raw_output_contents)} raw buffers"
    )
    arr = result.as_numpy("output")
    assert arr.shape == (1, 1000) and arr.dtype == np.float32, f"as_numpy: {arr.shape} {arr.dtype}"
    check_probs(arr[0], photo, f"KServe gRPC {photo}")
    assert resp.model_name == "shuffle", f"model_name {resp.model_name!r}"


def test_infer_explicit_version(client):
    result = client.infer("shuffle", [image_input("coffee")], model_version="1", client_timeout=RPC_TIMEOUT_S)
    check_probs(result.as_numpy("output")[0], "coffee", "KServe gRPC shuffle v1")
    assert result.get_response().model_version == "1", f"model_version {result.get_response().model_version!r}"

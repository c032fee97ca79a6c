"""KServe v2 HTTP/REST through tritonclient.http (Triton's binary tensor
extension: BYTES inputs as length-prefixed binary after the JSON header)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import tritonclient.http as thttp

from support import PHOTOS, check_probs, image_bytes


@pytest.fixture
def client(server):
    c = thttp.InferenceServerClient(url=server.http, connection_timeout=30.0, network_timeout=30.0)
    yield c
    c.close()


def image_input(photo: str, binary: bool = True) -> thttp.InferInput:
    inp = thttp.InferInput("input", [1], "BYTES")
    inp.set_data_from_numpy(np.array([image_bytes(photo)], dtype=np.object_), binary_data=binary)
    return inp


def test_health(client):
    assert client.is_server_live(), "is_server_live() is False"
    assert client.is_server_ready(), "is_server_ready() is False"
    assert client.is_model_ready("shuffle"), "is_model_ready('shuffle') is False"


def test_model_metadata(client):
    md = client.get_model_metadata("shuffle")
    assert md["name"] == "shuffle", f"metadata: {md}"
    assert md["inputs"][0]["datatype"] == "BYTES", f"inputs: {md['inputs']}"
    assert md["outputs"][0]["datatype"] == "FP32", f"outputs: {md['outputs']}"


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize(
    "outputs",
    ["none", "binary", "json"],
    ids=["no-outputs(binary_data_output)", "requested-binary", "requested-json"],
)
def test_infer_binary_input(client, photo, outputs):
    requested = {
        "none": None,
        "binary": [thttp.InferRequestedOutput("output", binary_data=True)],
        "json": [thttp.InferRequestedOutput("output", binary_data=False)],
    }[outputs]
    result = client.infer("shuffle", [image_input(photo)], outputs=requested)
    arr = result.as_numpy("output")
    assert arr is not None, f"no 'output' in {result.get_response()}"
    assert arr.shape == (1, 1000), f"as_numpy shape {arr.shape}"
    check_probs(arr[0], photo, f"KServe HTTP {photo} ({outputs})")
    out = result.get_output("output")
    assert out["datatype"] == "FP32", f"output: {out}"
    if outputs in ("none", "binary"):
        assert out.get("parameters", {}).get("binary_data_size") == 4000, (
            f"binary output expected (binary_data_size 4000), got {out}"
        )


def test_infer_json_input(client):
    """BYTES sent as JSON (binary_data=False): tritonclient puts the raw string in `data`."""
    inp = thttp.InferInput("input", [1], "BYTES")
    # JSON cannot carry arbitrary bytes, so send base64 text; the server takes
    # a BYTES element given as a JSON string as base64.
    inp.set_data_from_numpy(np.array([base64.b64encode(image_bytes("china"))], dtype=np.object_), binary_data=False)
    result = client.infer("shuffle", [inp], outputs=[thttp.InferRequestedOutput("output", binary_data=False)])
    check_probs(result.as_numpy("output")[0], "china", "KServe HTTP JSON string input")

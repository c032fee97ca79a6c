"""Bad requests over every protocol: the right status, a message naming the
problem, and the server keeps serving (each bad request is followed by a good
one over the same protocol)."""

from __future__ import annotations

import pytest
import tritonclient.grpc as tgrpc

from support import (
    PROTOCOLS,
    corrupt_images,
    curl,
    expect_error,
    http_get,
    image_bytes,
    send,
    small_png,
    still_serving,
)

INVALID = ("INVALID_ARGUMENT", 400)


@pytest.fixture(scope="module")
def batch2_server(module_start_server):
    return module_start_server("--model", "shuffle", "--max-batch", "2")


@pytest.fixture(scope="module")
def pixels_server(module_start_server):
    return module_start_server("--model", "shuffle", "--max-image-pixels", "10000")


@pytest.fixture(scope="module")
def size_server(module_start_server):
    return module_start_server("--model", "shuffle", "--max-message-bytes", "100000")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wrong_dtype(server, protocol):
    out = send(server, protocol, [image_bytes("coffee")], wrong_dtype=True)
    keywords = ("string", "bytes", "dtype")
    if protocol == "tfs_rest":  # TF REST has no dtype field: floats where b64 strings belong
        keywords += ("b64", "base64")
    expect_error(out, *INVALID, keywords, server)
    still_serving(server, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wrong_shape(server, protocol):
    out = send(server, protocol, [image_bytes("coffee")], shape=[1, 1])
    expect_error(out, *INVALID, "shape", server)
    still_serving(server, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_batch_over_limit(batch2_server, protocol):
    two = [image_bytes("coffee"), image_bytes("china")]
    ok = send(batch2_server, protocol, two)
    assert ok.ok, f"a batch of 2 under --max-batch 2 must work; got {ok}"
    out = send(batch2_server, protocol, two + [image_bytes("chelsea")])
    expect_error(out, *INVALID, "batch", batch2_server)
    still_serving(batch2_server, protocol)


@pytest.mark.parametrize("kind", ["random-bytes", "truncated-jpeg"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_corrupt_image(server, protocol, kind):
    out = send(server, protocol, [corrupt_images()[kind]])
    expect_error(out, *INVALID, "decode", server)
    still_serving(server, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_image_over_pixel_limit(pixels_server, protocol):
    out = send(pixels_server, protocol, [image_bytes("china")])  # 640x427 > 10000 pixels
    expect_error(out, *INVALID, "pixels", pixels_server)
    still_serving(pixels_server, protocol, image=None)  # a 64x64 image


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_or_service(server, protocol):
    out = send(server, protocol, [image_bytes("coffee")], service="nosuch")
    expect_error(out, "NOT_FOUND", 404, "nosuch", server)
    still_serving(server, protocol)


def test_unknown_model_spec_name_tfs_grpc(server):
    out = send(server, "tfs_grpc", [image_bytes("coffee")], service="nosuch", model_spec=True)
    expect_error(out, "NOT_FOUND", 404, "nosuch", server)
    still_serving(server, "tfs_grpc")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_version(server, protocol):
    out = send(server, protocol, [image_bytes("coffee")], version=7)
    expect_error(out, "NOT_FOUND", 404, ("7", "version"), server)
    still_serving(server, protocol)


def test_unknown_model_metadata_and_readiness(server):
    for path in ("/v2/models/nosuch", "/v1/models/nosuch", "/v2/models/shuffle/versions/7"):
        r = http_get(server, path)
        assert r.status_code == 404, f"GET {path}: {r.status_code} {r.text[:200]}"
    r = curl(server.url + "/v2/models/nosuch/ready")
    assert r.status != 200, f"GET /v2/models/nosuch/ready answered 200"
    client = tgrpc.InferenceServerClient(url=server.grpc)
    try:
        try:
            ready = client.is_model_ready("nosuch")
        except Exception:  # NOT_FOUND raised as an exception is fine too
            ready = False
        assert not ready, "is_model_ready('nosuch') is True"
    finally:
        client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_expired_deadline(server, protocol):
    if protocol in ("tfs_grpc", "kserve_grpc"):
        out = send(server, protocol, [image_bytes("china")], deadline_s=0.0001)
    else:
        out = send(server, protocol, [image_bytes("china")], http_timeout_ms=0)
    expect_error(out, "DEADLINE_EXCEEDED", 504, None, server)
    still_serving(server, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_message_over_size_limit(size_server, protocol):
    big = image_bytes("china")  # ~196 KB, over --max-message-bytes 100000
    assert len(big) > 150_000
    out = send(size_server, protocol, [big])
    expect_error(out, ("RESOURCE_EXHAUSTED", "OUT_OF_RANGE"), 413, None, size_server)
    still_serving(size_server, protocol, image="chelsea_jpg")  # ~35 KB


def test_small_png_helper_is_valid(server):
    """Guard for the pixel-limit test: the 64x64 image the suite makes decodes."""
    out = send(server, "tfs_grpc", [small_png()])
    assert out.ok, f"64x64 PNG made by the suite was refused: {out}"

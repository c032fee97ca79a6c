"""KServe v2 REST with plain JSON, through curl and requests."""

from __future__ import annotations

import pytest

from support import PHOTOS, b64, check_probs, curl, http_post, image_bytes, kserve_body


def test_health_with_curl(server):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/shuffle/ready"):
        r = curl(server.url + path)
        assert r.status == 200, f"GET {path}: {r.status} {r.body[:200]!r}"


def test_model_metadata_with_curl(server):
    r = curl(server.url + "/v2/models/shuffle")
    assert r.status == 200, f"GET /v2/models/shuffle: {r.status} {r.body[:200]!r}"
    md = r.json()
    for key in ("name", "versions", "platform", "inputs", "outputs"):
        assert key in md, f"model metadata lacks {key!r}: {md}"
    assert md["name"] == "shuffle", md
    assert "1" in md["versions"], f"versions {md['versions']}"
    assert md["inputs"][0]["datatype"] == "BYTES", f"inputs {md['inputs']}"
    assert md["outputs"][0]["datatype"] == "FP32", f"outputs {md['outputs']}"
    assert md["outputs"][0]["name"] == "output", f"outputs {md['outputs']}"


def check_infer_response(body: dict, photo: str, what: str) -> None:
    assert body.get("model_name") == "shuffle", f"{what}: model_name in {list(body)}: {body.get('model_name')!r}"
    assert body.get("model_version") == "1", f"{what}: model_version {body.get('model_version')!r}"
    outs = body["outputs"]
    assert len(outs) == 1, f"{what}: {len(outs)} outputs"
    out = outs[0]
    assert out["name"] == "output" and out["datatype"] == "FP32" and out["shape"] == [1, 1000], (
        f"{what}: output header {({k: v for k, v in out.items() if k != 'data'})}"
    )
    check_probs(out["data"], photo, what)


@pytest.mark.parametrize("photo", PHOTOS)
def test_infer_b64_with_curl(server, photo):
    r = curl(server.url + "/v2/models/shuffle/infer", "POST", kserve_body([image_bytes(photo)]))
    assert r.status == 200, f"infer {photo}: {r.status} {r.body[:300]!r}"
    check_infer_response(r.json(), photo, f"KServe REST {photo}")


def test_infer_plain_string_is_base64(server):
    body = {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [b64(image_bytes("coffee"))]}]}
    r = http_post(server, "/v2/models/shuffle/infer", body)
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    check_infer_response(r.json(), "coffee", "KServe REST plain base64 string")


def test_infer_versioned_path_and_requested_output(server):
    body = kserve_body([image_bytes("chelsea")])
    body["outputs"] = [{"name": "output"}]
    r = http_post(server, "/v2/models/shuffle/versions/1/infer", body)
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    check_infer_response(r.json(), "chelsea", "KServe REST versions/1")

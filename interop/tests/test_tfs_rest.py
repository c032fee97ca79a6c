"""TensorFlow Serving REST API (/v1/models/...), through curl and requests."""

from __future__ import annotations

import pytest

from support import PHOTOS, b64, check_probs, curl, http_get, http_post, image_bytes


@pytest.mark.parametrize("photo", PHOTOS)
def test_predict_instances_with_curl(server, photo):
    r = curl(server.url + "/v1/models/shuffle:predict", "POST", {"instances": [{"b64": b64(image_bytes(photo))}]})
    assert r.status == 200, f"predict {photo}: {r.status} {r.body[:300]!r}"
    body = r.json()
    assert list(body) == ["predictions"], f"row format answers {{'predictions': ...}}; got keys {list(body)}"
    assert len(body["predictions"]) == 1, f"{len(body['predictions'])} predictions for one instance"
    check_probs(body["predictions"][0], photo, f"TFS REST {photo}")


def test_predict_two_instances(server):
    body = {"signature_name": "serving_default", "instances": [{"b64": b64(image_bytes(p))} for p in ("coffee", "china")]}
    r = http_post(server, "/v1/models/shuffle:predict", body)
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    preds = r.json()["predictions"]
    assert len(preds) == 2, f"{len(preds)} predictions for two instances"
    check_probs(preds[0], "coffee", "instance 0")
    check_probs(preds[1], "china", "instance 1")


def test_predict_columnar_inputs(server):
    r = http_post(server, "/v1/models/shuffle:predict", {"inputs": {"images": [{"b64": b64(image_bytes("chelsea"))}]}})
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    body = r.json()
    assert list(body) == ["outputs"], f"columnar format answers {{'outputs': ...}}; got keys {list(body)}"
    assert len(body["outputs"]) == 1, f"outputs: {len(body['outputs'])} rows"
    check_probs(body["outputs"][0], "chelsea", "TFS REST columnar")


def test_predict_versioned_path(server):
    r = curl(server.url + "/v1/models/shuffle/versions/1:predict", "POST", {"instances": [{"b64": b64(image_bytes("coffee"))}]})
    assert r.status == 200, f"{r.status} {r.body[:300]!r}"
    check_probs(r.json()["predictions"][0], "coffee", "TFS REST versions/1")


def test_model_status(server):
    r = curl(server.url + "/v1/models/shuffle")
    assert r.status == 200, f"{r.status} {r.body[:300]!r}"
    assert r.json() == {
        "model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
    }, f"model status: {r.json()}"


def test_model_metadata(server):
    r = http_get(server, "/v1/models/shuffle/metadata")
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    body = r.json()
    try:
        sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    except (KeyError, TypeError):
        raise AssertionError(f"no metadata.signature_def.signature_def.serving_default in {body}") from None
    assert sig.get("inputs") and sig.get("outputs"), f"serving_default: {sig}"
    if "model_spec" in body:
        assert body["model_spec"].get("name") == "shuffle", f"model_spec {body['model_spec']}"

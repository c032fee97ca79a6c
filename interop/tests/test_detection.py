"""SSD detection services: `accel serve` with a `[detection]` pipeline
against an independent reference (ssd_graphs.py: Balanca's anchors and
decoding ported to numpy, NMS by ONNX Runtime's NonMaxSuppression operator,
top_k / keep_top_k in numpy).

(a) synthetic heads: models whose 12 (or 6) outputs are constants, so the
    expected detections are known; a small custom layout and the seed's
    SSD-VGG 300 layout; all four protocols; a batch of two photos.
(b) an SSD300-VGG16 graph with random weights, registered twice (with and
    without `[detection]`): the raw heads of one service, decoded by the
    reference, against the other service's detections.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
import requests
import tritonclient.grpc as tgrpc

import ssd_graphs as g
from support import (
    FIXTURES,
    HTTP_TIMEOUT_S,
    RPC_TIMEOUT_S,
    azure_metadata,
    azure_request,
    b64,
    float_tensor_values,
    kserve_body,
    run_accel,
    tfs_stub,
)

DET = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
PROTOCOLS = ("kserve_http", "kserve_grpc", "tfs_grpc", "tfs_rest")
PHOTO = FIXTURES / "images" / "sklearn_china.jpg"  # 640x427
PHOTO2 = FIXTURES / "images" / "mobilenet_caffe_cat.jpg"  # 480x360
INPUT = "images"
SCORE_RTOL = 1e-4
BOX_RTOL = 1e-4  # and 1e-4 of the image side absolute, for coordinates near 0

# Largest differences seen against the reference, printed at the end of
# each test (run with -s to see them).
_DIFFS: dict[str, float] = {}


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's SOF marker (no EXIF rotation in these files)."""
    i = 2
    while i < len(data):
        assert data[i] == 0xFF, f"bad JPEG marker at {i}"
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    raise AssertionError("no SOF marker")


# ---------------------------------------------------------------- protocols


def ask(server, protocol: str, service: str, images: list[bytes], names=DET) -> dict[str, np.ndarray]:
    """One request; returns the named outputs (batch dimension first)."""
    n = len(images)
    if protocol == "kserve_http":
        r = requests.post(
            f"{server.url}/v2/models/{service}/infer",
            json=kserve_body(images, name=INPUT),
            timeout=HTTP_TIMEOUT_S,
        )
        assert r.status_code == 200, f"{protocol}: {r.status_code} {r.text[:500]}\n{server.logs(20)}"
        out = {}
        for o in r.json()["outputs"]:
            assert o["datatype"] == "FP32", f"{protocol}: {o['name']} is {o['datatype']}"
            out[o["name"]] = np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])
    elif protocol == "kserve_grpc":
        client = tgrpc.InferenceServerClient(url=server.grpc)
        try:
            inp = tgrpc.InferInput(INPUT, [n], "BYTES")
            inp.set_data_from_numpy(np.array(images, dtype=np.object_))
            res = client.infer(service, [inp], client_timeout=RPC_TIMEOUT_S)
        finally:
            client.close()
        out = {o.name: res.as_numpy(o.name) for o in res.get_response().outputs}
        for o in res.get_response().outputs:
            assert o.datatype == "FP32", f"{protocol}: {o.name} is {o.datatype}"
    elif protocol == "tfs_grpc":
        resp = tfs_stub(server).Predict(
            azure_request(images, INPUT), timeout=RPC_TIMEOUT_S, metadata=azure_metadata(service)
        )
        out = {k: float_tensor_values(v, f"{protocol} {k}") for k, v in resp.outputs.items()}
    elif protocol == "tfs_rest":
        r = requests.post(
            f"{server.url}/v1/models/{service}:predict",
            json={"instances": [{"b64": b64(i)} for i in images]},
            timeout=HTTP_TIMEOUT_S,
        )
        assert r.status_code == 200, f"{protocol}: {r.status_code} {r.text[:500]}\n{server.logs(20)}"
        preds = r.json()["predictions"]
        assert len(preds) == n, f"{protocol}: {len(preds)} predictions for {n} instances"
        out = {k: np.asarray([p[k] for p in preds], dtype=np.float32) for k in preds[0]}
    else:
        raise ValueError(protocol)
    missing = [k for k in names if k not in out]
    assert not missing, f"{protocol}: outputs {sorted(out)} lack {missing}"
    return out


# ---------------------------------------------------------------- comparison


def check_image(got: dict[str, np.ndarray], i: int, ref: g.Reference, k: int, size: tuple[int, int], what: str):
    """Image i of a detection answer against the reference."""
    width, height = size
    boxes, classes = got["detection_boxes"][i], got["detection_classes"][i]
    scores, num = got["detection_scores"][i], got["num_detections"][i]
    assert boxes.shape == (k, 4) and classes.shape == (k,) and scores.shape == (k,), (
        f"{what}: shapes {boxes.shape} {classes.shape} {scores.shape}, expected K = keep_top_k = {k}"
    )
    n = len(ref.classes)
    assert float(num) == n, f"{what}: num_detections {num}, reference {n}"
    assert np.all(boxes[n:] == 0) and np.all(classes[n:] == 0) and np.all(scores[n:] == 0), (
        f"{what}: padding rows after {n} are not zero"
    )
    assert np.all(np.diff(scores[:n]) <= 0), f"{what}: scores not best first"
    exp_px = g.to_pixels(ref.boxes, width, height)
    atol = 1e-4 * max(width, height)
    used = np.zeros(n, dtype=bool)
    score_rel = box_abs = box_rel = 0.0
    for row in range(n):
        # The reference row at the same rank, or (scores tied within float
        # rounding, different classes) a neighbour with the same score.
        cands = [row] + [
            j for j in range(max(0, row - 3), min(n, row + 4))
            if j != row and abs(ref.scores[j] - ref.scores[row]) <= 2e-6 * ref.scores[row]
        ]
        match = None
        for j in cands:
            if used[j] or int(classes[row]) != ref.classes[j]:
                continue
            if np.allclose(boxes[row], exp_px[j], rtol=BOX_RTOL, atol=atol):
                match = j
                break
        assert match is not None, (
            f"{what}: row {row}: class {classes[row]} score {scores[row]} box {boxes[row]}; reference "
            f"class {ref.classes[row]} score {ref.scores[row]:.7f} box {exp_px[row]} (anchor {ref.anchors[row]})"
        )
        used[match] = True
        sr = abs(float(scores[row]) - ref.scores[match]) / ref.scores[match]
        assert sr <= SCORE_RTOL, f"{what}: row {row}: score {scores[row]} vs {ref.scores[match]}"
        d = np.abs(boxes[row].astype(np.float64) - exp_px[match])
        score_rel = max(score_rel, sr)
        box_abs = max(box_abs, float(d.max()))
        box_rel = max(box_rel, float((d / np.maximum(np.abs(exp_px[match]), 1.0)).max()))
    for key, v in (("score_rel", score_rel), ("box_abs_px", box_abs), ("box_rel", box_rel)):
        _DIFFS[key] = max(_DIFFS.get(key, 0.0), v)


def check_reference(ref: g.Reference, what: str):
    assert not ref.ambiguous, (
        f"{what}: the reference has decisions within float rounding (pick another seed): {ref.ambiguous[:5]}"
    )


def report(what: str):
    print(f"\n{what}: max differences vs reference: " + ", ".join(f"{k}={v:.3g}" for k, v in sorted(_DIFFS.items())))
    _DIFFS.clear()


def register(home: Path, name: str, model_path: Path, spec_toml: str, tmp: Path) -> None:
    spec_file = tmp / f"{name}.toml"
    spec_file.write_text(spec_toml)
    cp = run_accel(home, "models", "register", name, str(model_path), "--spec", str(spec_file))
    assert cp.stdout.strip() == f"{name}:1", f"register printed {cp.stdout!r}"


# ---------------------------------------------------------------- (a) synthetic heads


def small_spec() -> g.Spec:
    """Three layers (one not square), 7 classes with the background at 3,
    scores without softmax; top_k and keep_top_k small enough to bind."""
    return g.Spec(
        layers=[
            g.Layer("s_scores0", "s_boxes0", (10, 10), (30.0, 30.0), [60.0, 100.0], [2.0, 0.5]),
            g.Layer("s_scores1", "s_boxes1", (5, 5), (60.0, 60.0), [100.0, 150.0], [2.0, 0.5, 3.0, 1.0 / 3.0]),
            g.Layer("s_scores2", "s_boxes2", (2, 3), (150.0, 100.0), [200.0], [2.0]),
        ],
        num_classes=7,
        background_class=3,
        softmax=False,
        score_threshold=0.3,
        nms_iou=0.5,
        top_k=8,
        keep_top_k=25,
    )


def seed_spec() -> g.Spec:
    """The seed's SSD-VGG 300 layout (SsdSpec::ssd_vgg_300) and defaults."""
    names = [(f"ssd_300_vgg/block{i}_box/cls", f"ssd_300_vgg/block{i}_box/loc") for i in range(6)]
    return g.vgg300_spec(names)


SYNTH = {
    # name: (spec, layout, flat outputs, seed, peaked objects, preprocessing)
    "ssd-synth-small": (
        small_spec, "nchw", True, 11, 4, dict(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    ),
    "ssd-synth-seed": (seed_spec, "nhwc", False, 5, 30, dict()),
}


@pytest.fixture(scope="module")
def synthetic(accel_home, tmp_path_factory):
    """Registers the synthetic models; returns name -> (spec, reference)."""
    tmp = tmp_path_factory.mktemp("ssd-synth")
    nms = g.OrtNms()
    out = {}
    for name, (make, layout, flat, seed, objects, pre) in SYNTH.items():
        spec = make()
        heads = g.synthetic_heads(spec, np.random.default_rng(seed), objects=objects)
        model = g.synthetic_model(spec, heads, layout=layout, flat=flat, input_name=INPUT)
        path = tmp / f"{name}.onnx"
        onnx.save(model, path)
        register(accel_home, name, path, g.pipeline_toml(spec, input_name=INPUT, layout=layout, **pre), tmp)
        ref = g.reference_detect(spec, [h[0] for h in heads], [h[1] for h in heads], nms)
        check_reference(ref, name)
        # The same without the top_k / keep_top_k limits, to show they bind.
        loose = g.reference_detect(
            dataclasses.replace(spec, top_k=10**6, keep_top_k=10**6),
            [h[0] for h in heads],
            [h[1] for h in heads],
            nms,
        )
        out[name] = (spec, ref, loose)
    return out


@pytest.fixture(scope="module")
def synth_server(module_start_server, synthetic):
    return module_start_server(*[a for name in SYNTH for a in ("--model", name)], "--max-batch", "4")


def test_synthetic_references_exercise_the_rules(synthetic):
    """The data is shaped so each rule matters: several classes, NMS drops
    boxes, the background never shows; in the small layout top_k and
    keep_top_k change the answer."""
    small, ref, loose = synthetic["ssd-synth-small"]
    assert len(ref.classes) == small.keep_top_k, f"keep_top_k not reached: {len(ref.classes)}"
    assert len(loose.classes) > small.keep_top_k
    top = loose.anchors[: small.keep_top_k]
    assert len(top) != len(ref.anchors) or np.any(top != ref.anchors), "top_k changes nothing"
    assert ref.suppressed > 0 and len(set(ref.classes.tolist())) > 2
    assert small.background_class not in ref.classes
    assert ref.scores.min() < 0.9, "only the peaked anchors are reported"
    seed, ref, loose = synthetic["ssd-synth-seed"]
    assert 20 <= len(ref.classes) < seed.keep_top_k, len(ref.classes)
    assert ref.suppressed > 0 and len(set(ref.classes.tolist())) > 5
    assert 0 not in ref.classes


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", list(SYNTH))
def test_synthetic_heads(synth_server, synthetic, model, protocol):
    spec, ref, _ = synthetic[model]
    photo = PHOTO.read_bytes()
    got = ask(synth_server, protocol, model, [photo])
    assert got["detection_boxes"].shape == (1, spec.keep_top_k, 4), got["detection_boxes"].shape
    assert got["num_detections"].shape == (1,), got["num_detections"].shape
    check_image(got, 0, ref, spec.keep_top_k, jpeg_size(photo), f"{model} {protocol}")
    report(f"{model} {protocol}")


@pytest.mark.parametrize("protocol", ("kserve_http", "tfs_grpc"))
def test_synthetic_batch_of_two_photos(synth_server, synthetic, protocol):
    """Same heads for both images; boxes in each image's own pixels."""
    spec, ref, _ = synthetic["ssd-synth-seed"]
    photos = [PHOTO.read_bytes(), PHOTO2.read_bytes()]
    got = ask(synth_server, protocol, "ssd-synth-seed", photos)
    assert got["detection_boxes"].shape == (2, spec.keep_top_k, 4)
    for i, p in enumerate(photos):
        check_image(got, i, ref, spec.keep_top_k, jpeg_size(p), f"batch {protocol} image {i}")
    report(f"batch {protocol}")


# ---------------------------------------------------------------- (b) SSD300-VGG16


def calibration_image() -> np.ndarray:
    """A deterministic smooth image-like input, already preprocessed (0..255
    minus the VGG means), for the heads' data-dependent init."""
    yy, xx = np.mgrid[0:300, 0:300]
    img = np.stack([(xx * 0.8) % 255, (yy * 0.6) % 255, ((xx + yy) * 0.4) % 255], -1).astype(np.float32)
    img += np.random.default_rng(1).normal(0, 10, img.shape).astype(np.float32)
    return (img - np.array([123, 117, 104], np.float32))[None]


@pytest.fixture(scope="module")
def vgg(accel_home, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ssd-vgg")
    model, names = g.ssd300_vgg16(np.random.default_rng(7), input_name=INPUT)
    g.calibrate_heads(model, names, calibration_image(), cls_std=2.0, loc_std=0.5, input_name=INPUT)
    path = tmp / "ssd300_vgg16.onnx"
    onnx.save(model, path)
    del model
    spec = g.vgg300_spec(names, features=g.VGG_FEATURES, score_threshold=0.2, top_k=100, keep_top_k=200)
    register(accel_home, "ssd-vgg", path, g.pipeline_toml(spec, input_name=INPUT), tmp)
    register(accel_home, "ssd-vgg-raw", path, g.pipeline_toml(None, input_name=INPUT), tmp)
    path.unlink()
    return spec


@pytest.mark.timeout(600)
def test_ssd300_vgg16_against_its_raw_heads(module_start_server, vgg):
    """Real SSD300 topology (38/19/10/5/3/1 maps, 8,732 anchors); slow-ish
    (a 100 MB model loaded twice, ~31 GFLOPs per image)."""
    spec = vgg
    server = module_start_server("--model", "ssd-vgg", "--model", "ssd-vgg-raw")
    photo = PHOTO.read_bytes()
    head_names = [n for l in spec.layers for n in (l.scores, l.boxes)]
    raw = ask(server, "kserve_grpc", "ssd-vgg-raw", [photo], names=head_names)
    for l in spec.layers:
        fh, fw = l.feature_size
        assert raw[l.scores].shape == (1, fh, fw, l.per_cell, 21), (l.scores, raw[l.scores].shape)
        assert raw[l.boxes].shape == (1, fh, fw, l.per_cell, 4), (l.boxes, raw[l.boxes].shape)
    ref = g.reference_detect(spec, [raw[l.scores][0] for l in spec.layers], [raw[l.boxes][0] for l in spec.layers],
                             g.OrtNms())
    check_reference(ref, "ssd300-vgg16")
    assert len(ref.classes) > 20 and ref.suppressed > 0 and len(set(ref.classes.tolist())) > 2, (
        f"{len(ref.classes)} detections, {ref.suppressed} suppressed, classes {sorted(set(ref.classes.tolist()))}"
    )
    for protocol in ("kserve_grpc", "tfs_rest"):
        got = ask(server, protocol, "ssd-vgg", [photo])
        check_image(got, 0, ref, spec.keep_top_k, jpeg_size(photo), f"ssd300-vgg16 {protocol}")
    report(f"ssd300-vgg16 ({len(ref.classes)} detections, {ref.candidates} candidates, {ref.suppressed} suppressed)")

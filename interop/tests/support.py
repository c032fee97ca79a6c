"""Shared helpers of the interoperability suite: paths, the `accel serve`
launcher, and small client-side helpers for each protocol."""

from __future__ import annotations

import base64
import collections
import json
import os
import queue
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import numpy as np
import requests
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
MODEL_FILE = FIXTURES / "models" / "shufflenet-v2-12-qdq.onnx"
LABELS_FILE = FIXTURES / "labels" / "imagenet-simple-labels.json"

MODEL = "shuffle"
INPUT = "input"
INPUT_ALIASES = ("images", "Placeholder:0")
OUTPUT = "output"
OUTPUT_ALIAS = "classifier/resnet_v1_50/predictions/Softmax:0"
NUM_CLASSES = 1000

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
RPC_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 30.0


def accel_bin() -> Path:
    """The `accel` binary: $ACCEL_BIN, else <target dir>/debug/accel."""
    if os.environ.get("ACCEL_BIN"):
        return Path(os.environ["ACCEL_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "accel"


# ---------------------------------------------------------------- images

IMAGE_FILES = {
    "chelsea": FIXTURES / "images" / "skimage_chelsea.png",
    "coffee": FIXTURES / "images" / "skimage_coffee.png",
    "china": FIXTURES / "images" / "sklearn_china.jpg",  # 640x427, ~196 KB
    "chelsea_jpg": FIXTURES / "images" / "skimage_chelsea_q90.jpg",  # ~35 KB
}
CAT_CLASSES = frozenset(range(281, 286))
EXPECTED = {
    "chelsea": CAT_CLASSES,
    "coffee": frozenset({967}),  # espresso
    "china": frozenset({698}),  # palace
    "chelsea_jpg": CAT_CLASSES,
}
# The three photos every protocol is checked with.
PHOTOS = ("chelsea", "coffee", "china")

_image_cache: dict[str, bytes] = {}


def image_bytes(name: str) -> bytes:
    if name not in _image_cache:
        _image_cache[name] = IMAGE_FILES[name].read_bytes()
    return _image_cache[name]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_png(width: int, height: int, seed: int | None = None) -> bytes:
    """A valid 8-bit RGB PNG: a smooth gradient, or noise when seed is given
    (noise does not compress, so the file is about width*height*3 bytes)."""
    if seed is None:
        xs = np.arange(width, dtype=np.uint32)
        ys = np.arange(height, dtype=np.uint32)[:, None]
        r = (xs * 255 // max(width - 1, 1)) + 0 * ys
        g = (ys * 255 // max(height - 1, 1)) + 0 * xs
        b = np.full((height, width), 128, dtype=np.uint32)
        pixels = np.stack([r, g, b], axis=-1).astype(np.uint8)
    else:
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def small_png() -> bytes:
    """A 64x64 image (4096 pixels): under any pixel limit the suite sets."""
    return make_png(64, 64)


def corrupt_images() -> dict[str, bytes]:
    jpeg = image_bytes("china")
    return {
        "random-bytes": np.random.default_rng(1234).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated-jpeg": jpeg[: len(jpeg) // 3],
    }


# ---------------------------------------------------------------- checks


def check_probs(probs, expected: str | None, what: str) -> None:
    """`probs` is one row of 1000 softmax probabilities."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    assert p.shape == (NUM_CLASSES,), f"{what}: expected {NUM_CLASSES} probabilities, got shape {p.shape}"
    assert np.all(np.isfinite(p)), f"{what}: non-finite probabilities"
    total = float(p.sum())
    assert abs(total - 1.0) <= 1e-3, f"{what}: probabilities sum to {total}, not 1 +- 1e-3"
    if expected is not None:
        top = int(np.argmax(p))
        assert top in EXPECTED[expected], (
            f"{what}: top-1 class for {expected} is {top} (p={p[top]:.4f}); expected one of {sorted(EXPECTED[expected])}"
        )


def check_keyword(message: str, keywords, what: str) -> None:
    if isinstance(keywords, str):
        keywords = (keywords,)
    low = (message or "").lower()
    assert any(k.lower() in low for k in keywords), (
        f"{what}: error message {message!r} names none of {list(keywords)}"
    )


# ---------------------------------------------------------------- accel CLI


def accel_env(home: Path, extra: dict | None = None) -> dict:
    """The environment of an `accel` child: ours, less every ACCEL_* variable
    (each flag has one, e.g. ACCEL_API_KEYS, ACCEL_QUEUE), plus ACCEL_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env["ACCEL_HOME"] = str(home)
    env.update(extra or {})
    return env


def run_accel(home: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    env = accel_env(home)
    cp = subprocess.run(
        [str(accel_bin()), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and cp.returncode != 0:
        raise AssertionError(
            f"`accel {' '.join(args)}` exited {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
        )
    return cp


# ---------------------------------------------------------------- server

READY_RE = re.compile(r"ready grpc=(\S+) http=(\S+)")


def _loopback(addr: str) -> str:
    host, _, port = addr.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        host = "127.0.0.1"
    return f"{host}:{port}"


@dataclass
class Server:
    args: tuple
    proc: subprocess.Popen
    grpc: str  # HOST:PORT
    http: str  # HOST:PORT
    tls: bool
    _stdout: collections.deque = field(repr=False)
    _stderr: collections.deque = field(repr=False)
    _channels: list = field(default_factory=list, repr=False)
    _shared: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.http}"

    @property
    def port_http(self) -> int:
        return int(self.http.rpartition(":")[2])

    @property
    def port_grpc(self) -> int:
        return int(self.grpc.rpartition(":")[2])

    def logs(self, lines: int = 60) -> str:
        out = list(self._stderr)[-lines:]
        return "\n".join(out)

    def channel(self) -> grpc.Channel:
        """A plaintext channel to the gRPC port, closed at teardown."""
        ch = grpc.insecure_channel(self.grpc)
        self._channels.append(ch)
        return ch

    def shared_channel(self) -> grpc.Channel:
        """One plaintext channel reused by the helpers."""
        if self._shared is None:
            self._shared = self.channel()
        return self._shared

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM, wait 10 s, then SIGKILL. Returns the exit status."""
        for ch in self._channels:
            try:
                ch.close()
            except Exception:
                pass
        self._channels.clear()
        self._shared = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        return self.proc.returncode


def _die_with_parent_prefix() -> list[str]:
    """`setpriv --pdeathsig KILL` when available: the server is killed if the
    test process dies (e.g. by pytest-timeout) instead of being left behind.
    (Not a preexec_fn: forking this grpc-using process without exec aborts.)"""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


def _drain(stream, sink: collections.deque, q: queue.Queue | None) -> None:
    for line in iter(stream.readline, ""):
        line = line.rstrip("\n")
        sink.append(line)
        if q is not None:
            q.put(line)
    if q is not None:
        q.put(None)


class Launcher:
    """Starts `accel serve` processes and stops them all on close()."""

    def __init__(self, home: Path):
        self.home = home
        self.servers: list[Server] = []

    def __call__(self, *args: str, env: dict | None = None) -> Server:
        cmd = [
            str(accel_bin()),
            "serve",
            *args,
            "--host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
        ]
        full_env = accel_env(self.home, env)
        proc = subprocess.Popen(
            _die_with_parent_prefix() + cmd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        out: collections.deque = collections.deque(maxlen=2000)
        err: collections.deque = collections.deque(maxlen=2000)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_drain, args=(proc.stdout, out, lines), daemon=True).start()
        threading.Thread(target=_drain, args=(proc.stderr, err, None), daemon=True).start()

        deadline = time.monotonic() + READY_TIMEOUT_S
        match = None
        while match is None:
            left = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(left, 0.01)) if left > 0 else None
            except queue.Empty:
                line = None
                left = 0
            if line is None:
                timed_out = left <= 0
                if proc.poll() is None:
                    proc.kill()
                proc.wait(STOP_TIMEOUT_S)
                time.sleep(0.2)  # let the drain threads catch the last lines
                why = (
                    f"no `ready grpc=HOST:PORT http=HOST:PORT` line within {READY_TIMEOUT_S:.0f} s"
                    if timed_out
                    else f"exited with status {proc.returncode} before printing its ready line"
                )
                pytest.fail(
                    f"`{' '.join(cmd)}` {why}\nstdout:\n" + "\n".join(out) + "\nstderr:\n" + "\n".join(err),
                    pytrace=False,
                )
            match = READY_RE.search(line)
        server = Server(
            args=tuple(args),
            proc=proc,
            grpc=_loopback(match.group(1)),
            http=_loopback(match.group(2)),
            tls="--tls-cert" in args,
            _stdout=out,
            _stderr=err,
        )
        self.servers.append(server)
        return server

    def close(self) -> None:
        for s in self.servers:
            s.stop()
        self.servers.clear()


# ---------------------------------------------------------------- TF Serving gRPC



def string_tensor(values: list[bytes], shape: list[int] | None = None) -> tensor_pb2.TensorProto:
    shape = [len(values)] if shape is None else shape
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]
        ),
        string_val=values,
    )


def azure_request(images: list[bytes], input_name: str = "images") -> predict_pb2.PredictRequest:
    """Exactly what Azure's PredictionClient sends: no model_spec, one input."""
    request = predict_pb2.PredictRequest()
    request.inputs[input_name].CopyFrom(string_tensor(images))
    return request


def azure_metadata(service: str, key: str | None = None) -> list[tuple[str, str]]:
    md = []
    if key is not None:
        md.append(("authorization", f"Bearer {key}"))
    md.append(("x-ms-aml-grpc-service-route", f"/api/v1/service/{service}"))
    return md


def tfs_stub(server: Server) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(server.shared_channel())


def float_tensor_values(t: tensor_pb2.TensorProto, what: str) -> np.ndarray:
    """Decode a DT_FLOAT TensorProto (float_val or little-endian tensor_content)."""
    assert t.dtype == types_pb2.DT_FLOAT, f"{what}: dtype {types_pb2.DataType.Name(t.dtype)}, expected DT_FLOAT"
    shape = [d.size for d in t.tensor_shape.dim]
    if t.tensor_content:
        values = np.frombuffer(t.tensor_content, dtype="<f4")
    else:
        values = np.asarray(t.float_val, dtype=np.float32)
    assert values.size == int(np.prod(shape)), f"{what}: {values.size} values for shape {shape}"
    return values.reshape(shape)


def tfs_predict_ok(server: Server, image: str = "coffee", service: str = "shuffle", key: str | None = None) -> None:
    """The Azure-style request succeeds with the right class (server still serving)."""
    stub = tfs_stub(server)
    try:
        resp = stub.Predict(azure_request([image_bytes(image)]), timeout=RPC_TIMEOUT_S, metadata=azure_metadata(service, key))
    except grpc.RpcError as e:
        raise AssertionError(
            f"good Predict ({image}) failed: {e.code()} {e.details()}\nserver stderr:\n{server.logs()}"
        ) from None
    assert len(resp.outputs) == 1, f"expected one output, got {list(resp.outputs)}"
    (tensor,) = resp.outputs.values()
    arr = float_tensor_values(tensor, "Predict output")
    check_probs(arr[0], image, f"Predict {image}")


# ---------------------------------------------------------------- HTTP


def kserve_body(images: list[bytes], name: str = INPUT, datatype: str = "BYTES", shape=None) -> dict:
    return {
        "inputs": [
            {
                "name": name,
                "shape": [len(images)] if shape is None else shape,
                "datatype": datatype,
                "data": [{"b64": b64(i)} for i in images],
            }
        ]
    }


def http_post(server: Server, path: str, body, headers: dict | None = None, **kw) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return requests.post(server.url + path, data=data, headers=h, timeout=HTTP_TIMEOUT_S, **kw)


def http_get(server: Server, path: str, headers: dict | None = None, **kw) -> requests.Response:
    return requests.get(server.url + path, headers=headers or {}, timeout=HTTP_TIMEOUT_S, **kw)


def error_message(resp: requests.Response) -> str:
    """The `{"error": "..."}` message of an error response (asserts the shape)."""
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error response {resp.status_code} is not JSON: {resp.text[:300]!r}") from None
    assert isinstance(body, dict) and isinstance(body.get("error"), str), (
        f'error response {resp.status_code} is not {{"error": "<message>"}}: {body!r}'
    )
    return body["error"]


def kserve_http_ok(server: Server, image: str = "coffee", model: str = "shuffle", headers: dict | None = None) -> None:
    resp = http_post(server, f"/v2/models/{model}/infer", kserve_body([image_bytes(image)]), headers)
    assert resp.status_code == 200, f"good KServe infer ({image}): {resp.status_code} {resp.text[:300]}\n{server.logs()}"
    out = resp.json()["outputs"][0]
    check_probs(out["data"], image, f"KServe REST {image}")


# ---------------------------------------------------------------- curl


@dataclass
class CurlResult:
    status: int
    body: bytes

    def json(self):
        return json.loads(self.body)


def curl(
    url: str,
    method: str = "GET",
    body=None,
    headers: dict | None = None,
    cacert: Path | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> CurlResult:
    """One request with the curl binary; body (dict -> JSON) goes via stdin."""
    cmd = ["curl", "-sS", "--max-time", str(timeout), "-X", method, "-o", "-", "-w", "\n%{http_code}"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    if cacert is not None:
        cmd += ["--cacert", str(cacert)]
    cmd.append(url)
    cp = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout + 10)
    if cp.returncode != 0:
        raise AssertionError(f"curl {method} {url} failed ({cp.returncode}): {cp.stderr.decode(errors='replace')}")
    out, _, code = cp.stdout.rpartition(b"\n")
    return CurlResult(int(code), out)


# ---------------------------------------------------------------- one request, any protocol

# The `protocol` label values of accel_requests_total.
PROTOCOLS = ("tfs_grpc", "kserve_grpc", "kserve_http", "tfs_rest")
GRPC_PROTOCOLS = ("tfs_grpc", "kserve_grpc")


@dataclass
class Outcome:
    protocol: str
    ok: bool
    status: str  # gRPC code name ("OK", "NOT_FOUND", ...) or HTTP status ("200", "404", ...)
    message: str = ""
    probs: np.ndarray | None = None  # [N, 1000] when ok

    def __str__(self) -> str:
        return f"{self.protocol}: {self.status} {self.message[:300]!r}"


def send(
    server: Server,
    protocol: str,
    images: list[bytes],
    *,
    service: str = "shuffle",
    version: int | None = None,
    key: str | None = None,
    shape: list[int] | None = None,
    wrong_dtype: bool = False,
    model_spec: bool = False,
    deadline_s: float | None = None,
    http_timeout_ms: int | None = None,
) -> Outcome:
    """One inference request over `protocol`; never raises on a server error.

    tfs_grpc is sent the Azure way (no model_spec, route metadata) unless
    `model_spec` or `version` is given. wrong_dtype sends floats instead of
    encoded images; shape overrides the input's shape."""
    n = len(images)
    if protocol == "tfs_grpc":
        request = predict_pb2.PredictRequest()
        if wrong_dtype:
            t = tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n)]),
                float_val=[1.0] * n,
            )
        else:
            t = string_tensor(images, shape)
        request.inputs["images"].CopyFrom(t)
        if model_spec or version is not None:
            request.model_spec.name = service
            if version is not None:
                request.model_spec.version.value = version
            metadata = [("authorization", f"Bearer {key}")] if key else []
        else:
            metadata = azure_metadata(service, key)
        try:
            resp = tfs_stub(server).Predict(
                request, timeout=RPC_TIMEOUT_S if deadline_s is None else deadline_s, metadata=metadata
            )
        except grpc.RpcError as e:
            return Outcome(protocol, False, e.code().name, e.details() or "")
        assert len(resp.outputs) == 1, f"tfs_grpc: outputs {list(resp.outputs)}"
        (tensor,) = resp.outputs.values()
        return Outcome(protocol, True, "OK", probs=float_tensor_values(tensor, "tfs_grpc output"))

    if protocol == "kserve_grpc":
        import tritonclient.grpc as tgrpc
        from tritonclient.utils import InferenceServerException

        if wrong_dtype:
            inp = tgrpc.InferInput("input", [n], "FP32")
            inp.set_data_from_numpy(np.ones([n], dtype=np.float32))
        else:
            shp = [n] if shape is None else shape
            inp = tgrpc.InferInput("input", shp, "BYTES")
            inp.set_data_from_numpy(np.array(images, dtype=np.object_).reshape(shp))
        client = tgrpc.InferenceServerClient(url=server.grpc)
        try:
            result = client.infer(
                service,
                [inp],
                model_version="" if version is None else str(version),
                headers={"authorization": f"Bearer {key}"} if key else None,
                client_timeout=RPC_TIMEOUT_S if deadline_s is None else deadline_s,
            )
        except InferenceServerException as e:
            code = (e.status() or "").replace("StatusCode.", "")
            return Outcome(protocol, False, code, e.message() or "")
        finally:
            client.close()
        return Outcome(protocol, True, "OK", probs=result.as_numpy("output"))

    headers = {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if http_timeout_ms is not None:
        headers["X-Accel-Timeout-Ms"] = str(http_timeout_ms)
    vpath = "" if version is None else f"/versions/{version}"

    if protocol == "kserve_http":
        if wrong_dtype:
            body = {"inputs": [{"name": "input", "shape": [n], "datatype": "FP32", "data": [1.0] * n}]}
        else:
            body = kserve_body(images, shape=shape)
        r = http_post(server, f"/v2/models/{service}{vpath}/infer", body, headers)
        if r.status_code != 200:
            return Outcome(protocol, False, str(r.status_code), error_message(r))
        out = r.json()["outputs"][0]
        return Outcome(protocol, True, "200", probs=np.asarray(out["data"], dtype=np.float32).reshape(out["shape"]))

    if protocol == "tfs_rest":
        if wrong_dtype:
            body = {"instances": [1.0] * n}
        elif shape is None:
            body = {"instances": [{"b64": b64(i)} for i in images]}
        elif shape == [n, 1]:
            body = {"instances": [[{"b64": b64(i)}] for i in images]}
        else:
            raise ValueError(f"tfs_rest cannot express shape {shape}")
        r = http_post(server, f"/v1/models/{service}{vpath}:predict", body, headers)
        if r.status_code != 200:
            return Outcome(protocol, False, str(r.status_code), error_message(r))
        return Outcome(protocol, True, "200", probs=np.asarray(r.json()["predictions"], dtype=np.float32))

    raise ValueError(f"unknown protocol {protocol}")


HTTP_FOR = {
    "OK": "200",
    "INVALID_ARGUMENT": "400",
    "UNAUTHENTICATED": "401",
    "NOT_FOUND": "404",
    "DEADLINE_EXCEEDED": "504",
}


def expect_error(outcome: Outcome, grpc_codes, http_statuses, keywords=None, server: Server | None = None) -> None:
    """The request failed with one of the given statuses, naming the problem."""
    grpc_codes = (grpc_codes,) if isinstance(grpc_codes, str) else tuple(grpc_codes)
    http_statuses = (http_statuses,) if isinstance(http_statuses, (str, int)) else tuple(http_statuses)
    wanted = grpc_codes if outcome.protocol in GRPC_PROTOCOLS else tuple(str(s) for s in http_statuses)
    logs = f"\nserver stderr:\n{server.logs(20)}" if server is not None else ""
    assert not outcome.ok and outcome.status in wanted, f"expected {'/'.join(wanted)}; got {outcome}{logs}"
    if keywords:
        check_keyword(outcome.message, keywords, outcome.protocol)


def expect_ok(outcome: Outcome, expected: list[str | None], server: Server | None = None) -> None:
    logs = f"\nserver stderr:\n{server.logs(20)}" if server is not None else ""
    assert outcome.ok, f"expected success; got {outcome}{logs}"
    assert outcome.probs is not None and outcome.probs.shape == (len(expected), NUM_CLASSES), (
        f"{outcome.protocol}: result shape {None if outcome.probs is None else outcome.probs.shape}"
    )
    for row, name in zip(outcome.probs, expected):
        check_probs(row, name, f"{outcome.protocol} {name}")


def still_serving(server: Server, protocol: str, image: str | None = "coffee", **kw) -> None:
    """After a bad request the same protocol still answers a good one."""
    data = small_png() if image is None else image_bytes(image)
    expect_ok(send(server, protocol, [data], **kw), [image], server)

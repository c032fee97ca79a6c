#!/usr/bin/env python3
"""Peer harness: the same models and the same photo served by Accel and by
Python peers, each driven by the same load generator (`accel bench`), one
server after another in one run on the same cores.

    bench/peers/.venv/bin/python bench/peers/run.py [--models resnet50,shufflenet]
        [--servers accel,fastapi,kserve,ray] [--requests 200] [--duration 20]
        [--warmup 20] [--out results.json] [--accel target/release/accel]

Run from anywhere; paths default relative to the repository root. For each
model x server (x protocol): start the server in a new session, time exec ->
ready (polling its readiness endpoint), check its answer for the photo (top-1
class and probability, through the protocol it is measured with), run
`accel bench --concurrency 1 --requests N` then `--concurrency 4 --duration
S`, sum the RSS (and PSS) of every process of the server's session, stop it
(SIGTERM, then SIGKILL to the whole session) and make sure nothing is left.
At the end: all servers must agree on each model's top-1 class, and a
markdown table is printed (and results written as JSON).

Never run in CI: it takes minutes and wants a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from common import top1_from_v2_json, v2_binary_request  # noqa: E402

PHOTO = ROOT / "fixtures/images/sklearn_china.jpg"
LABELS = ROOT / "fixtures/labels/imagenet-simple-labels.json"

MODELS = {
    "resnet50": ("ResNet-50 fp32 (random weights)", ROOT / "target/models/resnet50-random.onnx"),
    "shufflenet": ("ShuffleNetV2 int8 QDQ", ROOT / "fixtures/models/shufflenet-v2-12-qdq.onnx"),
}

# Each server with the protocols it is measured over by default. KServe's
# Python server refuses a JPEG in a BYTES input over REST (kserve 0.21 turns
# BYTES into UTF-8 strings there), so it is measured over v2 gRPC; Accel is
# measured over every protocol a peer uses, plus its native TF Serving gRPC.
DEFAULT_PROTOCOLS = {
    "accel": ["tfs-grpc", "kserve-grpc", "kserve-http"],
    # Accel's throughput setting: idle engine threads sleep instead of
    # spinning, leaving the cores to image decoding under load.
    "accel-nospin": ["kserve-http"],
    "fastapi": ["kserve-http"],
    "kserve": ["kserve-grpc"],
    "ray": ["kserve-http"],
}
SPOKEN = {
    "accel": {"tfs-grpc", "kserve-grpc", "kserve-http", "tfs-rest"},
    "accel-nospin": {"tfs-grpc", "kserve-grpc", "kserve-http", "tfs-rest"},
    "fastapi": {"kserve-http"},
    "kserve": {"kserve-grpc", "kserve-http"},
    "ray": {"kserve-http"},
}
GRPC = {"tfs-grpc", "kserve-grpc"}


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def free_port() -> int:
    """A port nothing listens on now (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- processes ---------------------------------------------------------------


def session_pids(sid: int) -> list[int]:
    """Every live process whose session id is `sid` (the server started with
    start_new_session, so its pid is the session id), plus its descendants by
    parent pid in case one called setsid itself."""
    procs: dict[int, tuple[int, int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...
        rest = stat[stat.rfind(")") + 2 :].split()
        if rest[0] == "Z":
            continue
        procs[int(d)] = (int(rest[1]), int(rest[3]))
    found = {p for p, (_, s) in procs.items() if s == sid}
    if sid in procs:
        found.add(sid)
    grew = True
    while grew:
        grew = False
        for p, (ppid, _) in procs.items():
            if ppid in found and p not in found:
                found.add(p)
                grew = True
    return sorted(found)


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(sum of VmRSS, sum of Pss) over `pids`, in MiB. RSS counts pages shared
    between the processes once per process; PSS splits them."""
    rss = pss = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
        with contextlib.suppress(OSError):
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss / 1024, pss / 1024


def stop_session(proc: subprocess.Popen, grace_s: float) -> list[int]:
    """SIGTERM the server, wait `grace_s`, then SIGKILL everything left in its
    session. Returns what had to be killed."""
    sid = proc.pid
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    deadline = time.monotonic() + grace_s
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = session_pids(sid)
    for p in killed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = session_pids(sid)
    if left:
        raise RuntimeError(f"processes still running after SIGKILL: {left}")
    return killed


# --- readiness and correctness -----------------------------------------------


def http_ok(url: str, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def wait_ready(proc: subprocess.Popen, url: str, t0: float, timeout_s: float) -> float:
    """Seconds from `t0` (just before exec) to the first 200 from `url`."""
    while True:
        if http_ok(url):
            return time.monotonic() - t0
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before it was ready")
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"not ready after {timeout_s:.0f} s")
        time.sleep(0.01)


def check_kserve_http(port: int, name: str, jpeg: bytes, input_name: str) -> tuple[int, float]:
    body, headers = v2_binary_request(jpeg, input_name)
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/{name}/infer", data=body, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return top1_from_v2_json(json.loads(r.read()))
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"HTTP {e.code}: {e.read()[:300]!r}") from None


def check_kserve_grpc(port: int, name: str, jpeg: bytes, input_name: str) -> tuple[int, float]:
    import grpc
    import numpy as np
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pbg

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        stub = pbg.GRPCInferenceServiceStub(ch)
        req = pb.ModelInferRequest(
            model_name=name,
            inputs=[pb.ModelInferRequest.InferInputTensor(name=input_name, datatype="BYTES", shape=[1])],
            raw_input_contents=[struct.pack("<I", len(jpeg)) + jpeg],
        )
        r = stub.ModelInfer(req, timeout=120)
    out = r.outputs[0]
    if out.datatype != "FP32":
        raise RuntimeError(f"output {out.name} is {out.datatype}, not FP32")
    if r.raw_output_contents:
        data = np.frombuffer(r.raw_output_contents[0], dtype="<f4")
    else:
        data = np.asarray(out.contents.fp32_contents, dtype=np.float32)
    i = int(np.argmax(data))
    return i, float(data[i])


def check_tfs_rest(port: int, name: str, jpeg: bytes) -> tuple[int, float]:
    import base64

    import numpy as np

    body = json.dumps({"instances": [{"b64": base64.b64encode(jpeg).decode()}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/{name}:predict", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            pred = json.loads(r.read())["predictions"][0]
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"HTTP {e.code}: {e.read()[:300]!r}") from None
    if isinstance(pred, dict):  # several outputs: the first one
        pred = next(iter(pred.values()))
    data = np.asarray(pred, dtype=np.float32).ravel()
    i = int(np.argmax(data))
    return i, float(data[i])


def check_tfs_grpc(accel: Path, port: int, name: str, env: dict) -> tuple[int, float]:
    out = subprocess.run(
        [str(accel), "score", f"127.0.0.1:{port}", "--service", name, str(PHOTO), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"accel score: {out.stderr.strip()}")
    top = json.loads(out.stdout)["results"][0]["top"][0]
    return int(top["index"]), float(top["score"])


# --- servers -----------------------------------------------------------------


@dataclass
class Launch:
    argv: list[str]
    env: dict
    ready_url: str
    http_port: int
    grpc_port: Optional[int]
    grace_s: float = 10.0
    cwd: Path = ROOT


@dataclass
class Row:
    model: str
    server: str
    protocol: str
    ok: bool = False
    error: Optional[str] = None
    cold_start_s: Optional[float] = None
    rss_mb: Optional[float] = None
    pss_mb: Optional[float] = None
    processes: Optional[int] = None
    top1: Optional[int] = None
    top1_label: Optional[str] = None
    top1_prob: Optional[float] = None
    c1: Optional[dict] = None
    c4: Optional[dict] = None
    killed_after_sigterm: list = field(default_factory=list)


class Harness:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.py = str(Path(sys.executable))
        self.accel = Path(a.accel).resolve()
        self.tmp = Path(tempfile.mkdtemp(prefix="accel-peers-"))
        self.home = self.tmp / "accel-home"
        self.jpeg = PHOTO.read_bytes()
        self.labels = json.loads(LABELS.read_text())
        import onnxruntime

        capi = Path(onnxruntime.__file__).parent / "capi"
        dylibs = sorted(capi.glob("libonnxruntime.so*"), key=lambda p: len(p.name))
        if not dylibs:
            sys.exit(f"no libonnxruntime in {capi}")
        self.ort_dylib = str(dylibs[-1])
        self.ort_version = onnxruntime.__version__
        # Accel loads the very ONNX Runtime the Python peers use.
        self.base_env = {
            **os.environ,
            "ACCEL_HOME": str(self.home),
            "ORT_DYLIB_PATH": self.ort_dylib,
            "PEER_THREADS": str(a.threads),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }
        for k in ("ACCEL_API_KEY", "ACCEL_API_KEYS", "ACCEL_AUTH", "ACCEL_SERVE_CONFIG"):
            self.base_env.pop(k, None)

    def taskset(self, cpus: Optional[str]) -> list[str]:
        return ["taskset", "-c", cpus] if cpus else []

    def register(self, model: str, path: Path) -> None:
        out = subprocess.run(
            [str(self.accel), "models", "register", model, str(path),
             "--preset", "torchvision", "--labels", str(LABELS)],
            capture_output=True, text=True, env=self.base_env,
        )
        if out.returncode != 0:
            sys.exit(f"accel models register {model}: {out.stderr.strip()}")

    def launch(self, server: str, model: str, path: Path) -> Launch:
        http = free_port()
        env = dict(self.base_env)
        pre = self.taskset(self.a.server_cpus)
        if server in ("accel", "accel-nospin"):
            grpc = free_port()
            argv = pre + [str(self.accel), "serve", "--model", model, "--engine", "onnxruntime",
                          "--threads", str(self.a.threads), "--grpc-port", str(grpc),
                          "--http-port", str(http)]
            if server == "accel-nospin":
                argv += ["--engine-spin", "false"]
            return Launch(argv, env, f"http://127.0.0.1:{http}/v2/health/ready", http, grpc)
        if server == "fastapi":
            argv = pre + [self.py, str(HERE / "fastapi_server.py"), "--model-path", str(path),
                          "--name", model, "--port", str(http)]
            return Launch(argv, env, f"http://127.0.0.1:{http}/v2/health/ready", http, None)
        if server == "kserve":
            grpc = free_port()
            argv = pre + [self.py, str(HERE / "kserve_server.py"), "--model-path", str(path),
                          "--model_name", model, "--http_port", str(http),
                          "--grpc_port", str(grpc), "--enable_latency_logging", "false"]
            return Launch(argv, env, f"http://127.0.0.1:{http}/v2/models/{model}/ready", http, grpc)
        if server == "ray":
            ray_tmp = self.tmp / "ray"
            ray_tmp.mkdir(exist_ok=True)
            argv = pre + [self.py, str(HERE / "ray_server.py"), "--model-path", str(path),
                          "--name", model, "--port", str(http), "--num-cpus", str(self.a.ray_cpus),
                          "--temp-dir", str(ray_tmp)]
            return Launch(argv, env, f"http://127.0.0.1:{http}/v2/models/{model}/ready", http,
                          None, grace_s=30.0)
        raise ValueError(server)

    def check(self, launch: Launch, protocol: str, model: str, env: dict) -> tuple[int, float]:
        if protocol == "kserve-http":
            return check_kserve_http(launch.http_port, model, self.jpeg, self.a.input)
        if protocol == "kserve-grpc":
            return check_kserve_grpc(launch.grpc_port, model, self.jpeg, self.a.input)
        if protocol == "tfs-grpc":
            return check_tfs_grpc(self.accel, launch.grpc_port, model, env)
        if protocol == "tfs-rest":
            return check_tfs_rest(launch.http_port, model, self.jpeg)
        raise RuntimeError(f"no correctness check for {protocol}")

    def bench(self, launch: Launch, protocol: str, model: str, extra: list[str]) -> dict:
        port = launch.grpc_port if protocol in GRPC else launch.http_port
        argv = self.taskset(self.a.client_cpus) + [
            str(self.accel), "bench", f"127.0.0.1:{port}", "--service", model, str(PHOTO),
            "--protocol", protocol, "--warmup", str(self.a.warmup), "--json", *extra]
        if protocol.startswith("kserve"):
            argv += ["--input", self.a.input] if self.bench_has_input else []
        limit = 120 + 3 * self.a.duration + 2 * self.a.requests
        out = subprocess.run(argv, capture_output=True, text=True, env=self.base_env, timeout=limit)
        if out.returncode != 0:
            raise RuntimeError(f"accel bench ({protocol}): {out.stderr.strip()}")
        return json.loads(out.stdout)

    def run_row(self, model: str, path: Path, server: str, protocol: str) -> Row:
        row = Row(model, server, protocol)
        launch = self.launch(server, model, path)
        logf = open(self.tmp / f"{model}-{server}-{protocol}.log", "wb")
        t0 = time.monotonic()
        proc = subprocess.Popen(launch.argv, env=launch.env, cwd=launch.cwd, stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            row.cold_start_s = wait_ready(proc, launch.ready_url, t0, self.a.ready_timeout)
            row.top1, row.top1_prob = self.check(launch, protocol, model, launch.env)
            row.top1_label = self.labels[row.top1] if 0 <= row.top1 < len(self.labels) else None
            log(f"    ready in {row.cold_start_s:.2f} s; top-1 {row.top1} "
                f"({row.top1_label}) p={row.top1_prob:.4f}")
            row.c1 = self.bench(launch, protocol, model,
                                ["--concurrency", "1", "--requests", str(self.a.requests)])
            row.c4 = self.bench(launch, protocol, model,
                                ["--concurrency", "4", "--duration", str(self.a.duration)])
            pids = session_pids(proc.pid)
            row.processes = len(pids)
            row.rss_mb, row.pss_mb = memory_mb(pids)
            row.ok = not (row.c1.get("errors") or row.c4.get("errors"))
            if not row.ok:
                row.error = (f"bench errors: c=1 {row.c1.get('errors_by_status')}, "
                             f"c=4 {row.c4.get('errors_by_status')}")
        except Exception as e:  # noqa: BLE001 - one row failing must not stop the run
            row.error = f"{type(e).__name__}: {e}"[:2000]
            log(f"    FAILED: {row.error} (server log: {logf.name})")
        finally:
            try:
                row.killed_after_sigterm = stop_session(proc, launch.grace_s)
            finally:
                logf.close()
        return row

    def close(self) -> None:
        if not self.a.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def accel_protocols(accel: Path) -> tuple[set[str], bool]:
    """The protocols this `accel bench` speaks, and whether it has --input."""
    out = subprocess.run([str(accel), "bench", "--help"], capture_output=True, text=True)
    text = out.stdout
    protos = {p for p in ("tfs-grpc", "kserve-grpc", "kserve-http", "tfs-rest") if p in text}
    return protos, "--input" in text


def ensure_resnet(path: Path) -> None:
    if path.exists():
        return
    log(f"generating {path} (cargo run -p accel-bench --bin gen_resnet)")
    subprocess.run(["cargo", "run", "-q", "-p", "accel-bench", "--bin", "gen_resnet", "--", str(path)],
                   cwd=ROOT, check=True)


def fmt(x: Optional[float], nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def table(rows: list[Row]) -> str:
    lines = [
        "| model | server | protocol | cold start s | RSS MB (PSS) | procs | c=1 p50 / p99 ms | c=4 req/s | c=4 p99 ms | top-1 (p) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        name = MODELS[r.model][0]
        if r.c1 is None or r.c4 is None:
            why = (r.error or "?").replace("|", "/").replace("\n", " ")
            why = why if len(why) <= 90 else why[:87] + "..."
            lines.append(f"| {name} | {r.server} | {r.protocol} | {fmt(r.cold_start_s)} | – | – | "
                         f"failed: {why} | – | – | {r.top1 if r.top1 is not None else '–'} |")
            continue
        l1, l4 = r.c1["latency_ms"], r.c4["latency_ms"]
        err = "" if r.ok else " ⚠ errors"
        lines.append(
            f"| {name} | {r.server} | {r.protocol} | {fmt(r.cold_start_s)} | "
            f"{fmt(r.rss_mb, 0)} ({fmt(r.pss_mb, 0)}) | {r.processes} | "
            f"{fmt(l1['p50'])} / {fmt(l1['p99'])} | {fmt(r.c4['throughput_rps'], 1)} | "
            f"{fmt(l4['p99'])}{err} | {r.top1} {r.top1_label or ''} ({fmt(r.top1_prob, 3)}) |"
        )
    return "\n".join(lines)


def agreement(rows: list[Row]) -> tuple[bool, list[str]]:
    ok, notes = True, []
    for model in dict.fromkeys(r.model for r in rows):
        classes = {f"{r.server}/{r.protocol}": r.top1 for r in rows if r.model == model and r.top1 is not None}
        if len(set(classes.values())) > 1:
            ok = False
            notes.append(f"{model}: servers DISAGREE on top-1: {classes}")
        elif classes:
            notes.append(f"{model}: all {len(classes)} servers agree on top-1 class {next(iter(classes.values()))}")
    return ok, notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet50,shufflenet", help=f"comma list of {sorted(MODELS)}")
    ap.add_argument("--servers", default="accel,fastapi,kserve,ray",
                    help="comma list of SERVER or SERVER:PROTOCOL (SERVER alone = its default protocols: "
                    + "; ".join(f"{s}: {'+'.join(p)}" for s, p in DEFAULT_PROTOCOLS.items()) + ")")
    ap.add_argument("--requests", type=int, default=200, help="measured requests at concurrency 1")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds at concurrency 4")
    ap.add_argument("--warmup", type=int, default=20, help="unmeasured requests before each measurement")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads, every server")
    ap.add_argument("--accel", default=str(ROOT / "target/debug/accel"),
                    help="the accel binary: server for the accel rows and the load generator for all")
    ap.add_argument("--resnet50", default=str(MODELS["resnet50"][1]),
                    help="the generated ResNet-50 (written by gen_resnet when missing)")
    ap.add_argument("--input", default="input", help="v2 input name sent (kserve-* protocols)")
    ap.add_argument("--ray-cpus", type=int, default=2, help="num_cpus given to ray.init")
    ap.add_argument("--server-cpus", help="taskset CPU list for servers (e.g. 0-1); default: no pinning")
    ap.add_argument("--client-cpus", help="taskset CPU list for accel bench; default: no pinning")
    ap.add_argument("--ready-timeout", type=float, default=180.0, help="seconds a server may take to be ready")
    ap.add_argument("--out", default=str(HERE / "results.json"), help="where the JSON results go")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (server logs, Accel home)")
    a = ap.parse_args()

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m}; known: {', '.join(MODELS)}")
    accel = Path(a.accel)
    if not accel.exists():
        ap.error(f"{accel} does not exist: cargo build -p accel-cli (or --release and --accel target/release/accel)")
    protos, has_input = accel_protocols(accel)
    plan: list[tuple[str, str]] = []
    for item in (s.strip() for s in a.servers.split(",") if s.strip()):
        server, _, proto = item.partition(":")
        if server not in DEFAULT_PROTOCOLS:
            ap.error(f"unknown server {server}; known: {', '.join(DEFAULT_PROTOCOLS)}")
        for p in [proto] if proto else DEFAULT_PROTOCOLS[server]:
            if p not in SPOKEN[server]:
                ap.error(f"{server} does not speak {p}")
            if p not in protos:
                log(f"skipping {server}:{p}: `{accel} bench` has no --protocol {p} yet")
                continue
            plan.append((server, p))
    if not plan:
        ap.error("nothing to run")

    paths = dict((m, MODELS[m][1]) for m in models)
    if "resnet50" in paths:
        paths["resnet50"] = Path(a.resnet50)
        ensure_resnet(paths["resnet50"])

    h = Harness(a)
    h.bench_has_input = has_input
    rows: list[Row] = []
    started = dt.datetime.now(dt.timezone.utc)
    try:
        for m in models:
            h.register(m, paths[m])
        for m in models:
            for server, p in plan:
                log(f"== {m} / {server} / {p}")
                rows.append(h.run_row(m, paths[m], server, p))
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        h.close()

    agree, notes = agreement(rows)
    try:
        import kserve, ray  # noqa: E401
        versions = {"kserve": kserve.__version__ if hasattr(kserve, "__version__") else "?",
                    "ray": ray.__version__}
    except ImportError as e:
        versions = {"import_error": str(e)}
    import fastapi, numpy, PIL, uvicorn  # noqa: E401

    versions.update(onnxruntime=h.ort_version, fastapi=fastapi.__version__, uvicorn=uvicorn.__version__,
                    pillow=PIL.__version__, numpy=numpy.__version__, python=platform.python_version())
    acc_v = subprocess.run([str(accel), "--version"], capture_output=True, text=True).stdout.strip()
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "photo": str(PHOTO.relative_to(ROOT)),
        "settings": vars(a),
        "accel": {"binary": str(accel), "version": acc_v,
                  "profile": "release" if "/release/" in str(accel.resolve()) else "debug (dev profile)",
                  "ort_dylib": h.ort_dylib},
        "versions": versions,
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
                    "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                 if l.startswith("model name")), platform.processor())},
        "agreement": {"ok": agree, "notes": notes},
        "rows": [r.__dict__ for r in rows],
    }
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(table(rows))
    print()
    for n in notes:
        print(f"- {n}")
    print(f"- accel: {acc_v}, {doc['accel']['profile']}; ONNX Runtime {h.ort_version} in every server; "
          f"{a.threads} intra-op threads; c=1: {a.requests} requests after {a.warmup} warm-ups; "
          f"c=4: {a.duration:g} s; results in {a.out}")
    failed = [r for r in rows if not r.ok]
    return 1 if failed or not agree else 0


if __name__ == "__main__":
    sys.exit(main())

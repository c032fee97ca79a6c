"""Peer (d): Ray Serve (ray[serve] 2.60.0) with a FastAPI ingress + ONNX Runtime.

    python ray_server.py --model-path M.onnx --name NAME --port P

Starts a local single-node Ray cluster inside this process (``ray.init``:
2 CPUs, no dashboard, a 200 MB object store, usage stats off), then Serve
with its HTTP proxy on 127.0.0.1:P and one replica of a deployment whose
FastAPI ingress has the same endpoints as the FastAPI peer:

  GET  /v2/health/live, /v2/health/ready, /v2/models/{name}/ready
  POST /v2/models/{name}/infer   (binary data extension, BYTES JPEG)

Requests go client -> Serve's HTTP proxy actor -> the replica actor, i.e.
through two extra processes, as in any Ray Serve deployment. Prints
``ready`` once ``serve.run`` returns; SIGTERM/SIGINT shut Serve and Ray down.
"""

# No `from __future__ import annotations`: Serve pickles the deployment class
# and FastAPI must see real annotations (else `request: Request` becomes a
# query parameter).
import argparse
import os
import signal
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
from fastapi import FastAPI, HTTPException, Request, Response  # noqa: E402
from ray import serve  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

from common import BadRequest, Classifier, parse_v2_images, v2_response  # noqa: E402

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(num_replicas=1, max_ongoing_requests=16)
@serve.ingress(app)
class OnnxImageClassifier:
    """One replica: the shared Classifier behind the v2 REST endpoints."""

    def __init__(self, name: str, model_path: str):
        sys.path.insert(0, HERE)
        self.name = name
        self.clf = Classifier(model_path)

    @app.get("/v2/health/live")
    def live(self):
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready(self):
        return {"ready": True}

    @app.get("/v2/models/{model}/ready")
    def model_ready(self, model: str):
        if model != self.name:
            raise HTTPException(404, f"no model {model}")
        return {"name": self.name, "ready": True}

    @app.post("/v2/models/{model}/infer")
    async def infer(self, model: str, request: Request):
        if model != self.name:
            raise HTTPException(404, f"no model {model}")
        body = await request.body()
        hdr = request.headers.get("inference-header-content-length")
        try:
            images = parse_v2_images(body, hdr)
        except (BadRequest, ValueError) as e:
            raise HTTPException(400, str(e)) from None
        if len(images) != 1:
            raise HTTPException(400, "send one image per request")
        probs = await run_in_threadpool(self.clf.predict, images[0])
        return Response(v2_response(self.name, probs), media_type="application/json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--object-store-mb", type=int, default=200)
    ap.add_argument("--temp-dir", help="Ray's session/log dir (default /tmp/ray)")
    a = ap.parse_args()

    ray.init(
        num_cpus=a.num_cpus,
        include_dashboard=False,
        object_store_memory=a.object_store_mb << 20,
        runtime_env={"env_vars": {"PEER_THREADS": os.environ.get("PEER_THREADS", "2")}},
        log_to_driver=False,
        **({"_temp_dir": os.path.abspath(a.temp_dir)} if a.temp_dir else {}),
    )
    serve.start(http_options={"host": a.host, "port": a.port})
    serve.run(
        OnnxImageClassifier.bind(a.name, os.path.abspath(a.model_path)),
        name=a.name,
        route_prefix="/",
    )
    print("ready", flush=True)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

"""Peer (b): FastAPI on uvicorn + ONNX Runtime, the do-it-yourself server.

    python fastapi_server.py --model-path M.onnx --name NAME --port P

One uvicorn worker process. The infer endpoint reads the body on the event
loop and runs preprocessing + inference in Starlette's thread pool (what
FastAPI does for a plain ``def`` endpoint, as its docs advise for blocking
code); ONNX Runtime sessions are thread-safe, so concurrent requests run
concurrently, each with the session's intra-op threads.

Endpoints (KServe v2 REST subset):
  GET  /v2/health/live, /v2/health/ready, /v2/models/{name}/ready
  POST /v2/models/{name}/infer   binary data extension (BYTES input, 4-byte
                                 LE length-prefixed JPEG), or JSON with
                                 base64 strings; answers JSON with the
                                 softmax as one FP32 output.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import uvicorn  # noqa: E402
from fastapi import FastAPI, HTTPException, Request, Response  # noqa: E402

from common import BadRequest, Classifier, parse_v2_images, v2_response  # noqa: E402


def build_app(name: str, clf: Classifier) -> FastAPI:
    """The FastAPI app serving `clf` as model `name`."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/v2/health/live")
    def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready():
        return {"ready": True}

    @app.get("/v2/models/{model}/ready")
    def model_ready(model: str):
        if model != name:
            raise HTTPException(404, f"no model {model}")
        return {"name": name, "ready": True}

    # Reading the body needs the event loop, running the model must not block
    # it: the async handler reads, then hands the work to the thread pool.
    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request):
        if model != name:
            raise HTTPException(404, f"no model {model}")
        body = await request.body()
        hdr = request.headers.get("inference-header-content-length")
        try:
            images = parse_v2_images(body, hdr)
        except (BadRequest, ValueError) as e:
            raise HTTPException(400, str(e)) from None
        if len(images) != 1:
            raise HTTPException(400, "send one image per request")
        from starlette.concurrency import run_in_threadpool

        probs = await run_in_threadpool(clf.predict, images[0])
        return Response(v2_response(name, probs), media_type="application/json")

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    clf = Classifier(a.model_path)
    uvicorn.run(
        build_app(a.name, clf),
        host=a.host,
        port=a.port,
        workers=1,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()

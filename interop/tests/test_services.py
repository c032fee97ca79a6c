"""Several services in one server, engine choice, and shutdown."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from support import PHOTOS, PROTOCOLS, expect_error, expect_ok, image_bytes, send, tfs_predict_ok


def test_two_services_routed_by_name(start_server):
    srv = start_server("--model", "shuffle:1", "--service", "alpha", "--model", "shuffle", "--service", "beta")
    for service in ("alpha", "beta"):
        for protocol in PROTOCOLS:
            out = send(srv, protocol, [image_bytes("chelsea")], service=service)
            expect_ok(out, ["chelsea"], srv)
        out = send(srv, "tfs_grpc", [image_bytes("coffee")], service=service, model_spec=True)
        expect_ok(out, ["coffee"], srv)
    expect_error(send(srv, "tfs_grpc", [image_bytes("coffee")], service="nosuch"), "NOT_FOUND", 404, "nosuch", srv)


@pytest.mark.parametrize("engine", ["tract", "onnxruntime"])
def test_engine_choice(start_server, engine):
    srv = start_server("--model", "shuffle", "--engine", engine, "--threads", "1", "--workers", "2")
    for photo in PHOTOS:
        tfs_predict_ok(srv, photo)


def test_sigterm_stops_within_10s(start_server):
    srv = start_server("--model", "shuffle")
    tfs_predict_ok(srv, "coffee")
    srv.proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    try:
        code = srv.proc.wait(10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"accel serve still running 10 s after SIGTERM\n{srv.logs()}") from None
    assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), f"exit status {code} after SIGTERM\n{srv.logs()}"
    print(f"stopped in {time.monotonic() - start:.2f} s with status {code}")

"""Admission control: a full queue answers RESOURCE_EXHAUSTED at once instead
of queueing without bound."""

from __future__ import annotations

import threading
import time

import grpc

from support import (
    RPC_TIMEOUT_S,
    azure_metadata,
    azure_request,
    check_probs,
    float_tensor_values,
    image_bytes,
    tfs_predict_ok,
    tfs_stub,
)

CALLS = 20


def test_full_queue_rejects_fast(start_server):
    srv = start_server("--model", "shuffle", "--queue", "2", "--workers", "1")
    stub = tfs_stub(srv)
    tfs_predict_ok(srv, "china")  # warm up: the first inference may be slow

    request = azure_request([image_bytes("china")])
    metadata = azure_metadata("shuffle")
    done_at: dict[int, float] = {}
    lock = threading.Lock()
    all_done = threading.Event()

    def on_done(i):
        def cb(_fut):
            with lock:
                done_at[i] = time.monotonic()
                if len(done_at) == CALLS:
                    all_done.set()

        return cb

    futures, started = [], []
    for i in range(CALLS):  # fired from one thread: all in flight at once on one channel
        started.append(time.monotonic())
        fut = stub.Predict.future(request, timeout=RPC_TIMEOUT_S, metadata=metadata)
        fut.add_done_callback(on_done(i))
        futures.append(fut)
    assert all_done.wait(RPC_TIMEOUT_S + 10), "not every call finished"

    ok, rejected, other = [], [], []
    for i, fut in enumerate(futures):
        elapsed = done_at[i] - started[i]
        try:
            resp = fut.result()
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                rejected.append(elapsed)
            else:
                other.append(f"call {i}: {e.code().name} {e.details()}")
            continue
        (tensor,) = resp.outputs.values()
        check_probs(float_tensor_values(tensor, f"call {i}")[0], "china", f"overload call {i}")
        ok.append(elapsed)

    assert not other, f"calls must be OK or RESOURCE_EXHAUSTED; got {other}"
    assert ok, f"no call succeeded out of {CALLS} (queue 2, 1 worker)"
    assert rejected, f"all {CALLS} concurrent calls succeeded: nothing was rejected with --queue 2 --workers 1"
    slow = [round(t, 3) for t in rejected if t >= 1.0]
    assert not slow, f"RESOURCE_EXHAUSTED must come fast (< 1 s each); slow ones took {slow} s"
    print(f"overload: {len(ok)} OK, {len(rejected)} RESOURCE_EXHAUSTED (max {max(rejected):.3f} s)")

    tfs_predict_ok(srv, "coffee")

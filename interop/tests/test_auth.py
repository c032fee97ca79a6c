"""API keys: `--key` on the command line, and `--auth` with keys kept in the
registry and rotated with `accel services keys regenerate` on a running server."""

from __future__ import annotations

import json
import time

import pytest

from support import PROTOCOLS, expect_error, expect_ok, image_bytes, send

KEY_EFFECT_S = 2.0  # documented: a regenerated key takes effect within 2 s
SLACK_S = 0.5  # the CLI's and the request's own time


def attempt(server, protocol, key, service):
    return send(server, protocol, [image_bytes("coffee")], key=key, service=service)


def check_denied(server, protocol, key, service):
    expect_error(attempt(server, protocol, key, service), "UNAUTHENTICATED", 401, None, server)


def check_allowed(server, protocol, key, service):
    expect_ok(attempt(server, protocol, key, service), ["coffee"], server)


def wait_for(cond, what: str, limit: float = KEY_EFFECT_S + SLACK_S):
    start = time.monotonic()
    last = None
    while True:
        last = cond()
        if last is True:
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            raise AssertionError(f"{what}: not true within {limit:.1f} s (last: {last})")
        time.sleep(0.1)


def regenerate(accel, service: str, slot: str | None = None, check: bool = True):
    args = ["services", "keys", "regenerate", service] + (["--slot", slot] if slot else [])
    cp = accel(*args, check=check)
    if cp.returncode != 0:
        return None
    lines = [ln.strip() for ln in cp.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"`accel {' '.join(args)}` must print one line (the key); printed {cp.stdout!r}"
    assert len(lines[0]) >= 16, f"a key of {len(lines[0])} characters is too short: {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_command_line_keys(start_server, protocol):
    srv = start_server("--model", "shuffle", "--key", "interop-key-alpha-0123456789", "--key", "interop-key-beta-0123456789")
    check_denied(srv, protocol, None, "shuffle")  # missing
    check_denied(srv, protocol, "interop-key-wrong-0123456789", "shuffle")  # wrong
    check_allowed(srv, protocol, "interop-key-alpha-0123456789", "shuffle")
    check_allowed(srv, protocol, "interop-key-beta-0123456789", "shuffle")
    check_denied(srv, protocol, None, "shuffle")  # still denied after a success


def ok_with(srv, key, service="svc", protocol="tfs_grpc"):
    out = attempt(srv, protocol, key, service)
    return True if out.ok else str(out)


def denied_with(srv, key, service="svc", protocol="tfs_grpc"):
    out = attempt(srv, protocol, key, service)
    return True if (not out.ok and out.status in ("UNAUTHENTICATED", "401")) else str(out)


def test_registry_keys_rotate_without_restart(start_server, accel):
    # The key may be made before the server exists, or only once it has
    # registered the service; either way it must work.
    k1 = regenerate(accel, "svc", check=False)
    srv = start_server("--model", "shuffle", "--service", "svc", "--auth")
    if k1 is None:
        k1 = regenerate(accel, "svc")
    wait_for(lambda: ok_with(srv, k1), "first key accepted")
    check_denied(srv, "tfs_grpc", None, "svc")
    check_denied(srv, "tfs_grpc", "interop-key-wrong-0123456789", "svc")

    k2 = regenerate(accel, "svc")
    assert k2 != k1, "regenerate printed the same key twice"
    wait_for(lambda: ok_with(srv, k2), "regenerated key accepted")
    wait_for(lambda: denied_with(srv, k1), "old key refused")
    assert srv.alive(), "the server must not restart to take new keys"

    # The secondary slot: a second valid key beside the primary.
    k3 = regenerate(accel, "svc", slot="secondary")
    wait_for(lambda: ok_with(srv, k3), "secondary key accepted")
    assert ok_with(srv, k2) is True, "primary key stopped working when the secondary was regenerated"

    cp = accel("services", "keys", "list", "svc", "--json")
    try:
        json.loads(cp.stdout)
    except ValueError:
        raise AssertionError(f"`accel services keys list svc --json` printed no JSON: {cp.stdout!r}") from None

    # Every protocol honours the registry keys.
    for protocol in PROTOCOLS:
        check_denied(srv, protocol, None, "svc")
        check_denied(srv, protocol, k1, "svc")
        check_allowed(srv, protocol, k2, "svc")

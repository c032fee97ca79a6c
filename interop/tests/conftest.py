"""Fixtures of the interoperability suite.

- accel_home: a session-wide temporary ACCEL_HOME with ONNX Runtime and the
  model `shuffle:1` registered.
- start_server(*args, env=None): starts `accel serve *args` on ephemeral
  loopback ports, waits for its `ready grpc=HOST:PORT http=HOST:PORT` line and
  stops it (SIGTERM, 10 s, SIGKILL) at the test's teardown.
  module_start_server is the same with module lifetime.
- server: one shared `accel serve --model shuffle` for the whole session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import support
from support import Launcher, run_accel


def pytest_report_header(config):
    return f"accel binary: {support.accel_bin()}"


@pytest.fixture(scope="session")
def accel_home(tmp_path_factory) -> Path:
    binary = support.accel_bin()
    if not binary.exists():
        pytest.fail(f"no accel binary at {binary}: build it (`cargo build -p accel-cli`) or run interop/run")
    home = tmp_path_factory.mktemp("accel-home")
    provisioned = support.REPO / "target" / "accel-home" / "engines"
    if any(provisioned.glob("libonnxruntime.so*")):
        os.symlink(provisioned, home / "engines", target_is_directory=True)
    else:
        run_accel(home, "engines", "install", "onnxruntime")
    cp = run_accel(
        home,
        "models",
        "register",
        support.MODEL,
        str(support.MODEL_FILE),
        "--preset",
        "torchvision",
        "--labels",
        str(support.LABELS_FILE),
        "--input-alias",
        "Placeholder:0",
        "--output-alias",
        support.OUTPUT_ALIAS,
    )
    assert cp.stdout.strip() == "shuffle:1", f"register printed {cp.stdout!r}, expected 'shuffle:1'"
    return home


@pytest.fixture
def start_server(accel_home):
    launcher = Launcher(accel_home)
    yield launcher
    launcher.close()


@pytest.fixture(scope="module")
def module_start_server(accel_home):
    launcher = Launcher(accel_home)
    yield launcher
    launcher.close()


@pytest.fixture(scope="session")
def server(accel_home):
    launcher = Launcher(accel_home)
    yield launcher("--model", "shuffle")
    launcher.close()


@pytest.fixture
def accel(accel_home):
    """Run an `accel` CLI command against the suite's ACCEL_HOME."""

    def run(*args: str, check: bool = True):
        return run_accel(accel_home, *args, check=check)

    return run

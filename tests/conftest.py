"""Shared fixtures: real FUSE mounts, a loopback HTTP origin, a moto S3 server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import refmount
from refmount.mount.mountpoint import is_mounted, lazy_unmount
from refmount.rangeserver import RangeServer

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT / "tests" / "data" / "conformance"


@pytest.fixture(scope="session", autouse=True)
def own_state_directory(tmp_path_factory):
    """Daemons started by the suite log (and keep indexes and caches) under temporary state and
    cache directories, never the user's; and they are not system services (a CI runner under systemd sets INVOCATION_ID): the
    tests of the origin policy say when they want one."""
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("INVOCATION_ID", None)


@pytest.fixture(scope="session")
def conformance() -> Path:
    assert (CONFORMANCE / "expected").is_dir(), f"conformance fixtures not found at {CONFORMANCE}"
    return CONFORMANCE


@pytest.fixture
def mountpoint(tmp_path):
    path = tmp_path / "mnt"
    path.mkdir()
    yield str(path)
    if is_mounted(str(path)):
        lazy_unmount(str(path))


@pytest.fixture
def mount(tmp_path):
    """``with mount(source, **options) as root`` -- a real mount in its own daemon process."""
    counter = iter(range(1000))

    def _mount(source, **options):
        path = tmp_path / f"mnt{next(counter)}"
        path.mkdir()
        options.setdefault("log_file", str(tmp_path / "refmount.log"))
        return refmount.mounted(source, str(path), **options)

    return _mount


@pytest.fixture
def http_origin(tmp_path):
    """A Range-capable HTTP server on 127.0.0.1 serving ``tmp_path / "www"``."""
    www = tmp_path / "www"
    www.mkdir()
    with RangeServer(str(www), max_requests=20_000) as server:
        server.dir = www
        yield server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server mode on 127.0.0.1 (a real HTTP S3 endpoint)."""
    port = _free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def in_threads(func, args) -> list:
    """``func(arg)`` for every arg, each in its own thread; the first failure is raised here."""
    with ThreadPoolExecutor(max_workers=len(args)) as pool:
        return list(pool.map(func, args, timeout=120))


def run_cli(*args, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed ``refmount`` command line as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "refmount", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )

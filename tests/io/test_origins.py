"""Origins: HTTP with Range on 127.0.0.1, S3 through moto's server, local files, failures."""

from __future__ import annotations

import errno
import json
import os
import threading
import time

import pytest

from refmount.errors import RefmountError
from tests.conftest import in_threads

DATA = bytes(range(256)) * 4096  # 1 MiB


def _refs(tmp_path, refs: dict) -> str:
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    return str(path)


def _chunked_refs(url: str, n: int = 16, size: int = 40_000) -> dict:
    return {f"v/{i}": [url, i * size + 7, size] for i in range(n)}


def test_http_one_get_per_chunk_no_head(tmp_path, http_origin, mount):
    (http_origin.dir / "f.bin").write_bytes(DATA)
    refs = _chunked_refs(f"{http_origin.url}/f.bin")
    with mount(_refs(tmp_path, refs)) as root:
        for key, (_, off, size) in refs.items():
            os.stat(os.path.join(root, key))
            with open(os.path.join(root, key), "rb") as f:
                assert f.read() == DATA[off : off + size]
        assert http_origin.counts["GET"] == len(refs)
        assert http_origin.counts["HEAD"] == 0
        for key in refs:  # warm: served from the cache
            open(os.path.join(root, key), "rb").read()
        assert http_origin.counts["GET"] == len(refs)


def test_concurrent_readers_share_one_fetch(tmp_path, http_origin, mount):
    (http_origin.dir / "f.bin").write_bytes(DATA)
    http_origin.latency = 0.3
    with mount(_refs(tmp_path, {"c": [f"{http_origin.url}/f.bin", 0, len(DATA)]})) as root:
        def reader(_):
            with open(os.path.join(root, "c"), "rb") as f:
                return f.read()

        results = in_threads(reader, range(6))
    assert results == [DATA] * 6
    assert http_origin.counts["GET"] == 1


def test_whole_file_size_learned_once(tmp_path, http_origin, mount):
    (http_origin.dir / "w.bin").write_bytes(DATA[:5000])
    with mount(_refs(tmp_path, {"w": [f"{http_origin.url}/w.bin"]})) as root:
        for _ in range(3):
            assert os.stat(os.path.join(root, "w")).st_size == 5000
        assert open(os.path.join(root, "w"), "rb").read() == DATA[:5000]
    assert http_origin.counts["HEAD"] == 1


def test_s3_through_moto_server(tmp_path, s3_endpoint, mount):
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("bucket")
    fs.pipe("bucket/data/f.bin", DATA)
    refs = _chunked_refs("s3://bucket/data/f.bin", n=6)
    refs["whole"] = ["s3://bucket/data/f.bin"]
    options = {"s3": {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}}
    with mount(_refs(tmp_path, refs), storage_options=options) as root:
        for key, (_, off, size) in list(refs.items())[:-1]:
            assert open(os.path.join(root, key), "rb").read() == DATA[off : off + size]
        assert os.stat(os.path.join(root, "whole")).st_size == len(DATA)
        assert open(os.path.join(root, "whole"), "rb").read() == DATA


def test_one_set_mixes_local_http_and_s3(tmp_path, http_origin, s3_endpoint, mount):
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("mixed")
    fs.pipe("mixed/f.bin", DATA)
    (http_origin.dir / "f.bin").write_bytes(DATA)
    (tmp_path / "f.bin").write_bytes(DATA)
    refs = {
        "local": ["f.bin", 10, 100],  # relative to the reference file
        "http": [f"{http_origin.url}/f.bin", 20, 100],
        "s3": ["s3://mixed/f.bin", 30, 100],
    }
    options = {"s3": {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}}
    with mount(_refs(tmp_path, refs), storage_options=options) as root:
        for key, (_, off, size) in refs.items():
            assert open(os.path.join(root, key), "rb").read() == DATA[off : off + size], key


def test_origin_down_at_mount_time_is_a_clear_error(tmp_path, mountpoint):
    import socket

    import refmount
    from refmount.mount.mountpoint import is_mounted

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    refs = _refs(tmp_path, {"k": [f"http://127.0.0.1:{port}/f.bin", 0, 10]})
    with pytest.raises(RefmountError, match=f"origin http://127.0.0.1:{port} is unreachable"):
        with refmount.mounted(refs, mountpoint, log_file=str(tmp_path / "log")):
            pass
    assert not is_mounted(mountpoint)


def test_origin_failing_at_read_time_is_eio_with_a_log_line(tmp_path, http_origin, mount):
    (http_origin.dir / "f.bin").write_bytes(DATA)
    log = tmp_path / "daemon.log"
    with mount(_refs(tmp_path, {"k": [f"{http_origin.url}/f.bin", 0, 1000]}), log_file=str(log), retries=2,
               failed_ttl=1.5) as root:
        http_origin.fail = True  # 503 for everything
        with pytest.raises(OSError) as info:
            open(os.path.join(root, "k"), "rb").read()
        assert info.value.errno == errno.EIO
        # one FUSE read tried twice (retries=2); the kernel's repeat of the failed read, and
        # any other read within failed_ttl, fails at once without asking the origin again
        assert http_origin.counts["GET"] == 2
        with pytest.raises(OSError):
            open(os.path.join(root, "k"), "rb").read()
        assert http_origin.counts["GET"] == 2
        http_origin.fail = False  # recovers: after failed_ttl the range is asked for again
        time.sleep(1.6)
        assert open(os.path.join(root, "k"), "rb").read() == DATA[:1000]
    text = log.read_text()
    assert "EIO /k" in text and f"{http_origin.url}/f.bin" in text and "503" in text


def test_short_origin_read_is_eio_not_padding(tmp_path, http_origin, mount):
    (http_origin.dir / "f.bin").write_bytes(DATA[:100])
    with mount(_refs(tmp_path, {"k": [f"{http_origin.url}/f.bin", 50, 100]})) as root:
        assert os.stat(os.path.join(root, "k")).st_size == 100
        with pytest.raises(OSError) as info:
            open(os.path.join(root, "k"), "rb").read()
        assert info.value.errno == errno.EIO


def test_slow_origin_times_out_as_eio(tmp_path, http_origin, mount):
    (http_origin.dir / "f.bin").write_bytes(DATA)
    http_origin.latency = 3
    with mount(_refs(tmp_path, {"k": [f"{http_origin.url}/f.bin", 0, 10]}), timeout=0.5, retries=1) as root:
        with pytest.raises(OSError) as info:
            open(os.path.join(root, "k"), "rb").read()
        assert info.value.errno == errno.EIO


def test_missing_local_original_is_eio(tmp_path, mount):
    with mount(_refs(tmp_path, {"k": ["absent.bin", 0, 10], "ok": "x"}), allow_missing=True) as root:
        assert open(os.path.join(root, "ok"), "rb").read() == b"x"
        with pytest.raises(OSError) as info:
            open(os.path.join(root, "k"), "rb").read()
        assert info.value.errno == errno.EIO


def test_many_local_originals_read_concurrently(tmp_path, mount):
    refs = {}
    for n in range(300):  # more files than the daemon keeps descriptors for
        (tmp_path / f"f{n}.bin").write_bytes(bytes([n % 256]) * 4096)
        refs[f"k/{n}"] = [f"f{n}.bin", 100, 1000]
    with mount(_refs(tmp_path, refs)) as root:
        def reader(part):
            return [n for n in range(part, 300, 6)
                    if open(os.path.join(root, "k", str(n)), "rb").read() != bytes([n % 256]) * 1000]

        assert in_threads(reader, range(6)) == [[]] * 6


def test_local_originals_never_load_the_http_client(tmp_path):
    """aiohttp (and its parser, SSL contexts: about 10 MB of a daemon) is imported at the first
    remote read, not by a set of local files."""
    import subprocess
    import sys

    (tmp_path / "d.bin").write_bytes(DATA)
    path = _refs(tmp_path, {".zgroup": '{"zarr_format":2}', **_chunked_refs(str(tmp_path / "d.bin"))})
    code = ("import sys, refmount\n"
            f"with refmount.open({path!r}) as e:\n"
            "    assert e.read('v/3') == open(sys.argv[1], 'rb').read()[3 * 40000 + 7:4 * 40000 + 7]\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'refmount.io.http')))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d.bin")], capture_output=True, text=True,
                         timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_stopping_ends_every_wait_for_an_origin(http_origin):
    """``Origins.stop`` (a daemon told to stop): a read waiting on a stalled origin fails at
    once, without its retries, and later reads fail without a request."""
    from refmount.io.origins import Origins, Stopping

    (http_origin.dir / "f.bin").write_bytes(os.urandom(5000))
    origins = Origins(timeout=60, retries=3)
    url = f"{http_origin.url}/f.bin"
    assert origins.read(url, 0, 10) == (http_origin.dir / "f.bin").read_bytes()[:10]
    http_origin.stall, http_origin.fault = 60, "stall"
    outcome: list = []

    def read():
        try:
            outcome.append(origins.read(url, 100, 200))
        except Exception as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while http_origin.counts["GET"] < 2 and reader.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)  # (until the request waits at the origin)
    origins.stop()
    reader.join(timeout=10)
    assert not reader.is_alive() and len(outcome) == 1 and isinstance(outcome[0], Stopping)
    asked = http_origin.counts["GET"]
    with pytest.raises(Stopping):
        origins.read(url, 300, 400)
    assert http_origin.counts["GET"] == asked == 2

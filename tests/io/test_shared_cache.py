"""A disk cache shared by several daemons (one directory, as on a cluster filesystem), and the
metrics endpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import urllib.request

import pytest

from refmount.io.disk import DiskCache
from refmount.mount.mountpoint import is_mounted
from refmount.rangeserver import RangeServer

CHUNK, N = 64 << 10, 24


@pytest.fixture
def origin(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(CHUNK * N)
    (www / "f.bin").write_bytes(data)
    with RangeServer(str(www), latency=0.02, max_requests=10_000) as server:
        server.data = data
        yield server


def _refs(tmp_path, url: str) -> str:
    meta = {"shape": [N * CHUNK], "chunks": [CHUNK], "dtype": "|u1", "compressor": None, "filters": None,
            "fill_value": 0, "order": "C", "zarr_format": 2}
    refs = {".zgroup": '{"zarr_format":2}', "a/.zarray": json.dumps(meta)}
    refs.update({f"a/{i}": [url, i * CHUNK, CHUNK] for i in range(N)})
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    return str(path)


def _read_all(root: str, data: bytes) -> None:
    for i in range(N):
        with open(os.path.join(root, "a", str(i)), "rb") as f:
            assert f.read() == data[i * CHUNK : (i + 1) * CHUNK], i


def test_daemons_sharing_a_cache_fetch_each_chunk_about_once(origin, tmp_path, mount):
    cache = tmp_path / "cluster-cache"
    refs = _refs(tmp_path, f"{origin.url}/f.bin")
    mounts = [mount(refs, cache_dir=str(cache), shared_cache=True) for _ in range(3)]
    roots = [m.__enter__() for m in mounts]
    try:
        errors = []

        def walk(root):
            try:
                _read_all(root, origin.data)
            except Exception as exc:  # reported below, with the others
                errors.append(exc)

        threads = [threading.Thread(target=walk, args=(r,)) for r in roots]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
    finally:
        for m in mounts:
            m.__exit__(None, None, None)
    # three daemons read everything at once: about one origin request per chunk in all
    assert origin.counts["GET"] <= N * 1.2, origin.counts
    assert origin.counts["bytes"] <= len(origin.data) * 1.2


def test_a_dead_daemons_lease_and_half_written_entry_cost_no_wrong_byte(tmp_path):
    directory = tmp_path / "c"
    one = DiskCache(str(directory), 1 << 20, shared=True, lease_seconds=0.5)
    # a daemon took a lease and died: the lease expires and the next daemon fetches
    assert one.lease("u", 0, 4) is True
    other = DiskCache(str(directory), 1 << 20, shared=True, lease_seconds=0.5)
    assert other.lease("u", 0, 4) is False
    waited = []
    waiter = threading.Thread(target=lambda: waited.append(other.wait_for("u", 0, 4)), daemon=True)
    waiter.start()
    waiter.join(10)  # the lease expires after 0.5 s: the wait ends then, it does not hang
    assert not waiter.is_alive() and waited == [None]  # no entry came: fetch it yourself
    assert other.lease("u", 0, 4) is True  # expired: taken over
    # a torn write (a kill during it) is never served
    other.put_now("u", 0, 4, b"abcd")
    assert one.get("u", 0, 4) == b"abcd"
    name = next(p for p in directory.rglob("*") if p.is_file() and p.parent.name not in ("tmp", "leases")
                and p.name != "lock")
    name.write_bytes(name.read_bytes()[:-2])
    assert one.get("u", 0, 4) is None and not name.exists()  # discarded, refetched by the caller
    (directory / "tmp" / "x.otherhost.1.1").write_bytes(b"half")  # another node's write in progress
    DiskCache(str(directory), 1 << 20, shared=True).close()
    assert (directory / "tmp" / "x.otherhost.1.1").exists()  # not deleted by a starting daemon
    one.close()
    other.close()


def test_flipped_bytes_on_disk_are_detected_and_refetched(origin, tmp_path, mount):
    cache = tmp_path / "cluster-cache"
    refs = _refs(tmp_path, f"{origin.url}/f.bin")
    with mount(refs, cache_dir=str(cache), shared_cache=True, prefetch=False) as root:
        _read_all(root, origin.data)
    for entry in cache.rglob("*"):
        if entry.is_file() and entry.parent.name not in ("tmp", "leases") and entry.name != "lock":
            blob = bytearray(entry.read_bytes())
            blob[-10] ^= 0xFF
            entry.write_bytes(bytes(blob))
    before = origin.counts["GET"]
    with mount(refs, cache_dir=str(cache), shared_cache=True, prefetch=False) as root:
        _read_all(root, origin.data)  # every entry corrupt: discarded and fetched again, never served
    assert origin.counts["GET"] - before == N


def test_eviction_by_one_daemon_while_another_reads(origin, tmp_path, mount):
    cache = tmp_path / "cluster-cache"
    refs = _refs(tmp_path, f"{origin.url}/f.bin")
    small = CHUNK * 6  # a quarter of the data
    with mount(refs, cache_dir=str(cache), shared_cache=True, disk_cache_size=small) as one, \
            mount(refs, cache_dir=str(cache), shared_cache=True, disk_cache_size=small) as two:
        for _ in range(2):
            threads = [threading.Thread(target=_read_all, args=(r, origin.data)) for r in (one, two)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
    total = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file() and p.parent.name not in ("tmp", "leases"))
    assert total <= small * 2  # each daemon bounds what it writes; neither broke the other's reads


def test_a_full_disk_degrades_to_uncached_reads(origin, tmp_path, mount):
    cache = tmp_path / "tiny"
    cache.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(cache)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        log = tmp_path / "log"
        refs = _refs(tmp_path, f"{origin.url}/f.bin")
        with mount(refs, cache_dir=str(cache), shared_cache=True, disk_cache_size=64 << 20, log_file=str(log)) as root:
            _read_all(root, origin.data)  # never EIO for data the origin can serve
        text = log.read_text()
        assert "no space left" in text and text.count("no space left") <= 2 and "EIO" not in text
    finally:
        subprocess.run(["umount", "-l", str(cache)])


def test_metrics_endpoint_matches_the_stats(origin, tmp_path, mount):
    from prometheus_client.parser import text_string_to_metric_families

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mount(_refs(tmp_path, f"{origin.url}/f.bin"), metrics_addr=str(port), prefetch=False) as root:
        files = [open(os.path.join(root, "a", str(i)), "rb") for i in range(3)]
        for f in files:  # held open: a chunk read whole and closed leaves memory (the kernel keeps it)
            f.read()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        for f in files:
            f.close()
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
               if not s.labels}
    assert samples["refmount_origin_requests_total"] == 3 == origin.counts["GET"]
    assert samples["refmount_origin_bytes_total"] == 3 * CHUNK
    assert samples["refmount_cache_misses_total"] == 3 and samples["refmount_origin_errors_total"] == 0
    assert samples["refmount_memory_cache_bytes"] == 3 * CHUNK
    assert any(f.name == "refmount_origin_latency_seconds" for f in text_string_to_metric_families(text))
    host = origin.url.removeprefix("http://")
    by_host = {(s.name, s.labels.get("host")): s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.labels.get("host")}
    assert by_host[("refmount_origin_requests_by_host_total", host)] == 3
    assert by_host[("refmount_origin_bytes_by_host_total", host)] == 3 * CHUNK


def test_a_busy_metrics_port_is_one_line(tmp_path, mountpoint):
    from tests.conftest import run_cli

    (tmp_path / "d.bin").write_bytes(b"x" * 10)
    refs = tmp_path / "r.json"
    refs.write_text(json.dumps({"version": 1, "refs": {"k": ["d.bin", 0, 4]}}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        result = run_cli("--metrics-addr", f"127.0.0.1:{s.getsockname()[1]}", refs, mountpoint)
    assert result.returncode == 1 and result.stderr.startswith("refmount: metrics address 127.0.0.1:")
    assert not is_mounted(mountpoint)

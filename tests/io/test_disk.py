"""The persistent disk cache: bound, validation, locking, and a restarted daemon's zero fetches."""

from __future__ import annotations

import json
import os
import stat

import pytest

from refmount.io.disk import DiskCache
from refmount.errors import RefmountError
from tests.conftest import in_threads, run_cli

URL = "https://example.org/archive/file.nc"


def _entries(directory) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(directory) for f in files
            if os.path.basename(d) != "tmp" and f != "lock"]


def test_round_trip_hashed_names_and_private_directory(tmp_path):
    directory = tmp_path / "cache"
    cache = DiskCache(str(directory), 1 << 20)
    cache.put(URL, 100, 5, b"hello")
    cache.flush()
    assert cache.get(URL, 100, 5) == b"hello"
    assert cache.get(URL, 100, 6) is None and cache.get(URL, 101, 5) is None
    assert cache.get(URL, 100, 5, version="etag-2") is None  # another version of the object
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    (name,) = _entries(directory)
    assert "example" not in name and "file.nc" not in name and len(os.path.basename(name)) == 38
    cache.close()


def test_second_daemon_cannot_take_the_same_directory(tmp_path):
    cache = DiskCache(str(tmp_path / "c"), 1 << 20)
    with pytest.raises(RefmountError, match="in use by another refmount daemon"):
        DiskCache(str(tmp_path / "c"), 1 << 20)
    cache.close()
    DiskCache(str(tmp_path / "c"), 1 << 20).close()  # free again once closed


def test_a_cache_directory_that_is_a_file_says_so(tmp_path, mountpoint):
    (tmp_path / "cache").write_text("not a directory")
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"version": 1, "refs": {".zgroup": '{"zarr_format":2}'}}))
    result = run_cli("--cache-dir", tmp_path / "cache", refs, mountpoint)
    assert result.returncode == 1
    assert result.stderr.strip() == f"refmount: cache directory {tmp_path / 'cache'}: not a directory"


@pytest.mark.parametrize("damage", ["flip", "truncate", "identity"])
def test_corrupt_entry_is_discarded(tmp_path, damage):
    cache = DiskCache(str(tmp_path / "c"), 1 << 20)
    cache.put(URL, 0, 1000, bytes(range(200)) * 5)
    cache.flush()
    (path,) = _entries(tmp_path / "c")
    blob = bytearray(open(path, "rb").read())
    if damage == "flip":
        blob[-10] ^= 0xFF
    elif damage == "truncate":
        del blob[-1]
    else:  # an entry whose header names another range (a hash collision, or a stale name)
        blob = blob.replace(b'",0,1000', b'",1,1000')
    open(path, "wb").write(bytes(blob))
    assert cache.get(URL, 0, 1000) is None
    assert not os.path.exists(path)
    assert cache.stats.snapshot()["disk_corrupt"] == 1
    cache.close()


def test_bound_holds_under_concurrent_writers_and_survives_restart(tmp_path):
    bound = 256 << 10
    cache = DiskCache(str(tmp_path / "c"), bound, queue_size=10_000)
    chunk = 10_000

    def write(i: int) -> None:
        cache.put(URL, i * chunk, chunk, bytes([i % 256]) * chunk)
        assert cache.current_bytes <= bound

    in_threads(write, list(range(100)))
    cache.flush()
    on_disk = sum(os.path.getsize(p) for p in _entries(tmp_path / "c"))
    assert on_disk <= bound and cache.current_bytes == on_disk
    kept = [i for i in range(100) if cache.has(URL, i * chunk, chunk)]
    assert 20 <= len(kept) < 100 and cache.stats.snapshot()["disk_evictions"] == 100 - len(kept)
    cache.close()
    again = DiskCache(str(tmp_path / "c"), bound)
    assert all(again.get(URL, i * chunk, chunk) == bytes([i % 256]) * chunk for i in kept)
    again.close()
    smaller = DiskCache(str(tmp_path / "c"), bound // 4)  # a lower bound is applied at start
    assert smaller.current_bytes <= bound // 4
    smaller.close()


def _http_refs(tmp_path, http_origin, n=6, size=300_000) -> tuple[str, dict]:
    data = os.urandom(n * size)
    (http_origin.dir / "orig.bin").write_bytes(data)
    zarray = {"zarr_format": 2, "shape": [n * size], "chunks": [size], "dtype": "|u1", "compressor": None,
              "filters": None, "fill_value": 0, "order": "C"}
    refs = {".zgroup": '{"zarr_format": 2}', "c/.zarray": json.dumps(zarray)}
    expected = {}
    for i in range(n):
        refs[f"c/{i}"] = [f"{http_origin.url}/orig.bin", i * size, size]
        expected[f"c/{i}"] = data[i * size : (i + 1) * size]
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    return str(path), expected


def _read_all(root, expected) -> None:
    for key, value in expected.items():
        with open(os.path.join(root, key), "rb") as f:
            assert f.read() == value


def test_restarted_daemon_serves_from_disk_with_zero_origin_requests(tmp_path, http_origin, mount):
    refs, expected = _http_refs(tmp_path, http_origin)
    cache_dir = str(tmp_path / "disk")
    with mount(refs, cache_dir=cache_dir, disk_cache_size=64 << 20, prefetch=False) as root:
        _read_all(root, expected)
    assert http_origin.counts["GET"] == len(expected)
    http_origin.reset()
    with mount(refs, cache_dir=cache_dir, disk_cache_size=64 << 20) as root:
        _read_all(root, expected)
        stats = json.loads(run_cli("stats", "--json", root).stdout)
    assert http_origin.counts["GET"] == 0 and http_origin.counts["HEAD"] == 0
    assert stats["disk_hits"] == len(expected) and stats.get("origin_requests", 0) == 0

    # a damaged entry is noticed, refetched (one request) and replaced
    victim = max(_entries(cache_dir), key=os.path.getsize)
    with open(victim, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    with mount(refs, cache_dir=cache_dir, disk_cache_size=64 << 20, prefetch=False) as root:
        _read_all(root, expected)
        stats = json.loads(run_cli("stats", "--json", root).stdout)
    assert http_origin.counts["GET"] == 1
    assert stats["disk_corrupt"] == 1 and stats["disk_hits"] == len(expected) - 1
    assert "discarding corrupt or stale entry" in (tmp_path / "refmount.log").read_text()


def test_disk_bound_holds_while_reading_more_than_it(tmp_path, http_origin, mount):
    refs, expected = _http_refs(tmp_path, http_origin, n=12)
    cache_dir = tmp_path / "disk"
    bound = 1 << 20  # three of the twelve 300 kB chunks
    with mount(refs, cache_dir=str(cache_dir), disk_cache_size=bound) as root:
        _read_all(root, expected)
        stats = json.loads(run_cli("stats", "--json", root).stdout)
        assert stats["disk_cache_bytes"] <= bound
    assert sum(os.path.getsize(p) for p in _entries(cache_dir)) <= bound
    assert stats["disk_evictions"] >= 12 - 3


def test_an_entry_larger_than_the_bound_evicts_nothing(tmp_path):
    cache = DiskCache(str(tmp_path / "c"), 4096)
    cache.put(URL, 0, 100, b"a" * 100)
    cache.flush()
    cache.put(URL, 100, 5000, b"b" * 5000)
    cache.flush()
    assert cache.get(URL, 0, 100) == b"a" * 100 and cache.get(URL, 100, 5000) is None
    assert cache.current_bytes <= 4096
    cache.close()

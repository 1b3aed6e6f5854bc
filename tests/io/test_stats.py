"""Observability of a running mount: ``refmount stats`` and the per-file extended attributes."""

from __future__ import annotations

import json
import os
import subprocess

from tests.conftest import run_cli
from tests.io.test_disk import _http_refs


def test_stats_count_what_was_read(tmp_path, http_origin, mount):
    refs, expected = _http_refs(tmp_path, http_origin, n=5)
    keys = list(expected)
    with mount(refs, prefetch=False) as root:
        for key in keys[:3]:
            for _ in range(2):  # the second read is the kernel's page cache: no upcall at all
                with open(os.path.join(root, key), "rb") as f:
                    assert f.read() == expected[key]
        with open(os.path.join(root, keys[3]), "rb") as held:  # open, read in part
            assert held.read(1000) == expected[keys[3]][:1000]
            result = run_cli("stats", "--json", root)
            assert result.returncode == 0, result.stderr
            stats = json.loads(result.stdout)
            text = run_cli("stats", root).stdout
    assert stats["origin_requests"] == http_origin.counts["GET"] == 4
    assert stats["origin_bytes"] == 4 * 300_000 and stats["cache_misses"] == 4
    assert stats["origin_errors"] == 0 and stats["fetches_in_flight"] == 0
    # every counter is there, zero or not: monitoring scripts see a stable set of names
    from refmount.io.stats import COUNTERS
    assert set(COUNTERS) <= set(stats) and stats["origin_retries"] == stats["disk_hits"] == 0
    # the chunks read whole and closed are the kernel's to keep (read again above without a
    # request); the daemon's memory holds only the one still open
    assert stats["memory_cache_bytes"] == 300_000 and stats["memory_cache_entries"] == 1
    assert 0 < stats["origin_latency_p50_ms"] <= stats["origin_latency_p99_ms"] <= stats["origin_latency_max_ms"]
    assert stats["uptime_s"] >= 0
    assert "origin requests   4 reads" in text and "memory cache" in text and "prefetch" in text


def test_a_chunk_the_kernel_dropped_is_fetched_again_exactly(tmp_path, http_origin, mount):
    refs, expected = _http_refs(tmp_path, http_origin, n=3)
    key = sorted(expected)[0]
    with mount(refs, prefetch=False) as root:
        path = os.path.join(root, key)
        with open(path, "rb") as f:
            assert f.read() == expected[key]
        assert http_origin.counts["GET"] == 1
        with open(path, "rb") as f:  # the kernel lets go of its pages: the daemon no longer has them either
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        with open(path, "rb") as f:
            f.seek(123_456)
            assert f.read() == expected[key][123_456:]
        stats = json.loads(run_cli("stats", "--json", root).stdout)
    assert http_origin.counts["GET"] == 2 and stats["origin_bytes"] == 2 * 300_000


def test_stats_show_prefetch_effectiveness(tmp_path, http_origin, mount):
    refs, expected = _http_refs(tmp_path, http_origin, n=8)
    with mount(refs) as root:
        for key in sorted(expected):
            with open(os.path.join(root, key), "rb") as f:
                assert f.read() == expected[key]
        stats = json.loads(run_cli("stats", "--json", root).stdout)
    assert stats["prefetch_chunks"] >= 4  # grid-order successors were fetched ahead...
    assert stats["prefetch_used"] == stats["prefetch_chunks"]  # ...and every one was then read
    assert stats["origin_requests"] == http_origin.counts["GET"] < len(expected)  # merged requests


def test_stats_of_something_else_is_one_line(tmp_path):
    result = run_cli("stats", tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == f"refmount: {tmp_path}: not a refmount mount"


def test_stats_of_a_dead_mount_says_how_to_clear_it(tmp_path, mountpoint):
    from tests.cli.test_cli import _kill_daemon

    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"version": 1, "refs": {".zgroup": '{"zarr_format":2}'}}))
    assert run_cli(refs, mountpoint).returncode == 0
    _kill_daemon(mountpoint)
    result = run_cli("stats", mountpoint)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"refmount: {mountpoint}: its daemon is gone (it was killed or crashed); clear "
                                     f"the mount with: refmount umount {mountpoint}; then mount again")
    assert run_cli("umount", mountpoint).returncode == 0


def test_xattrs_say_where_bytes_come_from(tmp_path, http_origin, mount):
    refs, expected = _http_refs(tmp_path, http_origin, n=2)
    with mount(refs) as root:
        chunk = os.path.join(root, "c", "1")
        names = set(os.listxattr(chunk))
        assert names == {f"user.refmount.{n}" for n in ("source", "kind", "url", "offset", "length")}
        assert os.getxattr(chunk, "user.refmount.url").decode() == f"{http_origin.url}/orig.bin"
        assert os.getxattr(chunk, "user.refmount.offset") == b"300000"
        assert os.getxattr(chunk, "user.refmount.length") == b"300000"
        assert os.getxattr(chunk, "user.refmount.kind") == b"range"
        assert os.getxattr(chunk, "user.refmount.source").decode() == refs
        group = os.path.join(root, ".zgroup")
        assert os.getxattr(group, "user.refmount.kind") == b"inline"
        assert os.getxattr(group, "user.refmount.length") == str(len('{"zarr_format": 2}')).encode()
        try:
            os.getxattr(group, "user.refmount.url")
            raise AssertionError("an inline file has no URL")
        except OSError as exc:
            assert exc.errno == 61  # ENODATA
        # the standard tool reads them too
        dump = subprocess.run(["getfattr", "-d", "-m", "user.refmount", chunk], capture_output=True, text=True, check=True)
        assert f'user.refmount.url="{http_origin.url}/orig.bin"' in dump.stdout
        assert "user.refmount.stats" in os.listxattr(root)
        assert json.loads(os.getxattr(root, "user.refmount.stats"))["uptime_s"] >= 0
        assert http_origin.counts["GET"] == 0  # none of this asked the origin


def test_no_xattrs_from_the_command_line(tmp_path, http_origin, mountpoint):
    import errno

    refs, _ = _http_refs(tmp_path, http_origin, n=1)
    result = run_cli("--no-xattrs", "--no-prefetch", "--log-file", tmp_path / "log", refs, mountpoint)
    assert result.returncode == 0, result.stderr
    try:
        try:
            os.getxattr(os.path.join(mountpoint, "c", "0"), "user.refmount.url")
            raise AssertionError("xattrs were asked to be off")
        except OSError as exc:
            assert exc.errno == errno.EOPNOTSUPP
    finally:
        run_cli("umount", mountpoint)


def test_a_chunk_read_with_o_direct_stays_in_memory(tmp_path, http_origin, mount):
    # O_DIRECT reads bypass the kernel's page cache: the daemon's memory is the only copy
    refs, expected = _http_refs(tmp_path, http_origin, n=2)
    key = sorted(expected)[0]
    with mount(refs, prefetch=False) as root:
        for _ in range(3):
            fd = os.open(os.path.join(root, key), os.O_RDONLY | os.O_DIRECT)
            try:
                assert os.read(fd, 1 << 20) == expected[key]
            finally:
                os.close(fd)
    assert http_origin.counts["GET"] == 1

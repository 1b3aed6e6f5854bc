"""FUSE-level behaviour: paged listings with attributes (readdirplus), stat through listings."""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from tests.conftest import CONFORMANCE


def test_large_directory_lists_completely_with_exact_attributes(tmp_path, http_origin, mount):
    (http_origin.dir / "w.bin").write_bytes(b"x" * 1234)
    refs = {f"d/{i}": ["data.bin", i, (i % 97) + 1] for i in range(20_000)}
    refs.update({f"d/sub{i}/k": "v" for i in range(30)})
    refs["d/whole"] = [f"{http_origin.url}/w.bin"]  # size unknown until asked: listed without attributes
    (tmp_path / "refs.json").write_text(json.dumps({"version": 1, "refs": refs}))
    with mount(str(tmp_path / "refs.json"), allow_missing=True) as root:  # data.bin: never read
        with os.scandir(os.path.join(root, "d")) as entries:
            seen = {e.name: (e.is_dir(), e.stat().st_size) for e in entries}
        assert len(seen) == 20_000 + 30 + 1
        for i in range(20_000):
            assert seen[str(i)] == (False, (i % 97) + 1)
        assert all(seen[f"sub{i}"][0] for i in range(30))
        assert seen["whole"] == (False, 1234)
        assert os.stat(os.path.join(root, "d")).st_nlink == 2 + 30
        listed = subprocess.run(["ls", "-l", os.path.join(root, "d")], capture_output=True, text=True).stdout
        assert len(listed.splitlines()) == 1 + 20_000 + 30 + 1  # "total" line + entries
        assert sorted(os.listdir(os.path.join(root, "d"))) == sorted(seen)  # a second listing


def test_listing_a_file_is_enotdir(tmp_path, mount):
    (tmp_path / "refs.json").write_text(json.dumps({"f": "x"}))
    with mount(str(tmp_path / "refs.json")) as root:
        with pytest.raises(NotADirectoryError):
            os.listdir(os.path.join(root, "f"))
        with pytest.raises(OSError) as info:
            os.listdir(os.path.join(root, "nope"))
        assert info.value.errno == errno.ENOENT


def test_a_reopen_that_overtakes_the_release_still_frees_the_chunk(tmp_path, http_origin):
    """The kernel sends ``release`` after ``close`` has returned, so the next open of the same
    file can reach the daemon first. The chunk read whole through the first handle is the
    kernel's to keep either way: the daemon's memory lets it go at the last release."""
    from refmount.engine import Engine, options_for
    from refmount.mount.operations import RefFS
    from tests.io.test_disk import _http_refs

    refs, expected = _http_refs(tmp_path, http_origin, n=2)
    key = "c/0"
    with Engine(options_for(refs, mountpoint=str(tmp_path / "mnt"), prefetch=False)) as engine:
        fs = RefFS(engine.tree, engine.reader, prefetcher=None, stats=engine.stats)
        first = fs.open(key, os.O_RDONLY)
        got = b"".join(fs.read(key, 131072, offset, first) for offset in range(0, 300_000, 131072))
        assert got == expected[key]
        second = fs.open(key, os.O_RDONLY)  # the reopen arrives before the first release
        assert engine.stats()["memory_cache_bytes"] == 300_000
        fs.release(key, first)
        assert engine.stats()["memory_cache_bytes"] == 300_000  # the second is still open
        fs.release(key, second)  # read nothing: the kernel's pages served it
        assert engine.stats()["memory_cache_bytes"] == 0
        # a handle that did not read it all keeps it
        third = fs.open(key, os.O_RDONLY)
        assert fs.read(key, 1000, 0, third) == expected[key][:1000]
        fs.release(key, third)
        assert engine.stats()["memory_cache_bytes"] == 300_000


def test_after_a_reload_paths_the_kernel_may_hold_old_bypass_the_page_cache_until_dropped(tmp_path):
    """The page-cache policy across a reload, on the operations themselves. The kernel keeps the
    entries in use while a reload invalidates entries -- with the old size and pages -- so the
    paths open at the swap, opened while it settles, or held by a handle on the old tree bypass
    the cache until the kernel has been told to drop that path's attributes and pages (off the
    FUSE threads, after the swap); every other path uses the page cache at once."""
    import threading
    import time

    from refmount.engine import Engine, options_for
    from refmount.mount.operations import RefFS

    source = str(CONFORMANCE / "air.nc.v1.json")
    with Engine(options_for(source, mountpoint=str(tmp_path / "a"))) as engine, \
            Engine(options_for(source, mountpoint=str(tmp_path / "b"))) as other:
        fs = RefFS(engine.tree, engine.reader, prefetcher=None, stats=engine.stats)
        told: list[str] = []
        swapping, answer = threading.Event(), threading.Event()

        def invalidate(names, paths=()):
            if names:  # the swap's passes: the first one waits until the test lets it go
                swapping.set()
                answer.wait(10)
            told.extend(paths)

        fs.invalidate = invalidate
        held_key, settling_key, other_key = "air/0.0.0", "lat/0", "lon/0"

        def mode(path):
            fh = fs.open(path, os.O_RDONLY)
            kept = fs.cache_mode(fh)
            fs.release(path, fh)
            return kept

        def settled(path):  # bounded wait for the refresh thread to finish with ``path``
            deadline = time.monotonic() + 10
            while mode(path) != (True, False) and time.monotonic() < deadline:
                time.sleep(0.01)

        assert mode(held_key) == (True, False)  # no reload yet: pages kept across opens
        held = fs.open(held_key, os.O_RDONLY)
        swap = threading.Thread(target=fs.swap, args=(other.tree,))
        swap.start()
        assert swapping.wait(10)
        assert mode(settling_key) == (False, True)  # opened while the swap settles
        assert mode(held_key) == (False, True)  # the old tree's file is open
        answer.set()
        swap.join(timeout=30)
        assert mode(other_key) == (True, False)  # untouched during the swap: its entry was dropped
        settled(settling_key)
        assert told.count(settling_key) == 1  # asked once, however many opens came meanwhile
        assert mode(held_key) == (False, True) and told.count(held_key) == 2  # (the swap's two passes)
        fs.release(held_key, held)  # its last close has the path dropped again
        settled(held_key)
        assert told.count(held_key) == 3 and mode(held_key) == (True, False)


def test_a_chunk_read_past_the_page_cache_stays_in_memory(tmp_path, http_origin):
    """After a reload, opens bypass the page cache for a while: a chunk read whole through such
    an open is not the kernel's to keep, so the daemon keeps it (a re-read makes no request)."""
    from refmount.engine import Engine, options_for
    from refmount.mount.operations import RefFS
    from tests.io.test_disk import _http_refs

    refs, expected = _http_refs(tmp_path, http_origin, n=2)
    with Engine(options_for(refs, mountpoint=str(tmp_path / "a"), prefetch=False)) as engine, \
            Engine(options_for(refs, mountpoint=str(tmp_path / "b"), prefetch=False)) as other:
        fs = RefFS(engine.tree, engine.reader, prefetcher=None, stats=engine.stats)
        held = fs.open("c/1", os.O_RDONLY)  # open across the reload: its path bypasses the cache
        fs.swap(other.tree)
        fh = fs.open("c/1", os.O_RDONLY)
        assert fs.cache_mode(fh) == (False, True)
        key = "c/1"
        got = b"".join(fs.read(key, 131072, offset, fh) for offset in range(0, 300_000, 131072))
        fs.release(key, fh)
        fs.release(key, held)
        assert got == expected[key]
        assert engine.stats()["memory_cache_bytes"] == 300_000

"""Prefetch and coalescing: exact bytes under concurrency, fewer requests, bounded memory."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
import subprocess

import numpy as np
import pytest

from refmount.io.cache import MemoryCache
from refmount.io.origins import Origins
from refmount.index import Inline, Range, Whole
from refmount.io.order import ChunkOrder
from refmount.index import build_index
from refmount.io.reader import Reader
from tests.conftest import in_threads, run_cli

CHUNK = 50_000
N = 40


def _array_refs(url: str, gap: int = 0) -> dict:
    meta = {"shape": [N * 10], "chunks": [10], "dtype": "<f8", "compressor": None, "filters": None,
            "fill_value": None, "order": "C", "zarr_format": 2}
    refs = {".zgroup": '{"zarr_format":2}', "a/.zarray": json.dumps(meta)}
    for i in range(N):
        refs[f"a/{i}"] = [url, i * (CHUNK + gap), CHUNK]
    return refs


def _write(tmp_path, refs) -> str:
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    return str(path)


def test_sequential_walk_coalesces_back_to_back_chunks(tmp_path, http_origin, mount):
    data = os.urandom(N * CHUNK)
    (http_origin.dir / "f.bin").write_bytes(data)
    with mount(_write(tmp_path, _array_refs(f"{http_origin.url}/f.bin"))) as root:
        for i in range(N):
            with open(os.path.join(root, "a", str(i)), "rb") as f:
                assert f.read() == data[i * CHUNK : (i + 1) * CHUNK]
    assert http_origin.counts["HEAD"] == 0
    assert http_origin.counts["GET"] < N / 2  # neighbours merged into few requests
    assert http_origin.counts["bytes"] == len(data)  # and nothing fetched twice


def test_a_walk_again_after_the_kernel_dropped_its_pages_is_fetched_ahead_again(tmp_path, http_origin, mount):
    data = os.urandom(N * CHUNK)
    (http_origin.dir / "f.bin").write_bytes(data)
    with mount(_write(tmp_path, _array_refs(f"{http_origin.url}/f.bin"))) as root:
        paths = [os.path.join(root, "a", str(i)) for i in range(N)]
        for path in paths:
            with open(path, "rb") as f:
                f.read()
        first = dict(http_origin.counts)
        for path in paths:  # memory pressure, as the kernel sees it: the pages go
            with open(path, "rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        for i, path in enumerate(paths):
            with open(path, "rb") as f:
                assert f.read() == data[i * CHUNK : (i + 1) * CHUNK]
    assert first["bytes"] == len(data) and http_origin.counts["bytes"] == 2 * len(data)
    assert http_origin.counts["GET"] - first["GET"] < N / 2  # merged requests again, not one per chunk


def test_two_readers_of_different_slices_through_the_mount_are_both_fetched_ahead(tmp_path, http_origin, mount):
    data = os.urandom(N * CHUNK)
    (http_origin.dir / "f.bin").write_bytes(data)
    half = N // 2
    with mount(_write(tmp_path, _array_refs(f"{http_origin.url}/f.bin"))) as root:
        for i in range(half):  # reader A on the first half, reader B on the second, turn by turn
            for j in (i, half + i):
                with open(os.path.join(root, "a", str(j)), "rb") as f:
                    assert f.read() == data[j * CHUNK : (j + 1) * CHUNK]
    # each walk recognised: its chunks come in merged requests, none twice (each reader alone
    # asking for its own chunk would be N requests)
    assert http_origin.counts["GET"] < N / 2, http_origin.counts
    assert http_origin.counts["bytes"] == len(data)


def test_a_walk_of_nested_chunk_names_is_fetched_ahead(tmp_path, http_origin, mount):
    """Zarr v2 arrays with ``dimension_separator: "/"`` (OME-Zarr's) keep chunk ``i.j`` at
    ``i/j``: a walk of them in grid order is followed like any other, merged into few requests."""
    rows, cols = 8, 5
    data = os.urandom(rows * cols * CHUNK)
    (http_origin.dir / "f.bin").write_bytes(data)
    meta = {"shape": [rows * 10, cols * 10], "chunks": [10, 10], "dtype": "|V500", "compressor": None,
            "filters": None, "fill_value": None, "order": "C", "zarr_format": 2, "dimension_separator": "/"}
    refs = {".zgroup": '{"zarr_format":2}', "a/.zarray": json.dumps(meta)}
    for n in range(rows * cols):
        refs[f"a/{n // cols}/{n % cols}"] = [f"{http_origin.url}/f.bin", n * CHUNK, CHUNK]
    with mount(_write(tmp_path, refs)) as root:
        for n in range(rows * cols):
            with open(os.path.join(root, "a", str(n // cols), str(n % cols)), "rb") as f:
                assert f.read() == data[n * CHUNK : (n + 1) * CHUNK]
    assert http_origin.counts["bytes"] == len(data)  # nothing fetched twice
    assert http_origin.counts["GET"] < rows * cols / 2, http_origin.counts  # one each without fetching ahead


@pytest.mark.skipif(not shutil.which("rsync"), reason="rsync is not installed")
def test_rsync_of_an_array_is_fetched_ahead_in_its_order(tmp_path, http_origin, mount):
    """rsync sorts its file list as text (0, 1, 10, 100, ..., 109, 11, 110, ...): a walk in
    grid order only in short runs, interleaved. Every chunk past the first few is fetched ahead
    of its read, none twice."""
    n, size = 400, 2_000
    data = os.urandom(n * size)
    (http_origin.dir / "f.bin").write_bytes(data)
    meta = {"shape": [n], "chunks": [1], "dtype": "|V2000", "compressor": None, "filters": None,
            "fill_value": None, "order": "C", "zarr_format": 2}
    refs = {".zgroup": '{"zarr_format":2}', "a/.zarray": json.dumps(meta)}
    refs.update({f"a/{i}": [f"{http_origin.url}/f.bin", i * size, size] for i in range(n)})
    copy = tmp_path / "copy"
    with mount(_write(tmp_path, refs)) as root:
        subprocess.run(["rsync", "-r", os.path.join(root, "a") + "/", str(copy)], check=True, timeout=120)
        stats = json.loads(run_cli("stats", "--json", root).stdout)
    for i in range(n):
        assert (copy / str(i)).read_bytes() == data[i * size : (i + 1) * size]
    assert http_origin.counts["bytes"] == len(data), http_origin.counts  # nothing fetched twice
    assert stats.get("cache_misses", 0) <= 3, stats


def test_gaps_above_the_threshold_are_not_merged(tmp_path, http_origin, mount):
    gap = 200_000  # larger than the 64 KiB merge gap: every chunk its own request
    data = os.urandom(N * (CHUNK + gap))
    (http_origin.dir / "f.bin").write_bytes(data)
    with mount(_write(tmp_path, _array_refs(f"{http_origin.url}/f.bin", gap=gap))) as root:
        for i in range(N):
            with open(os.path.join(root, "a", str(i)), "rb") as f:
                start = i * (CHUNK + gap)
                assert f.read() == data[start : start + CHUNK]
    assert http_origin.counts["GET"] == N
    assert http_origin.counts["bytes"] == N * CHUNK


def test_many_readers_random_and_sequential_get_exact_bytes(tmp_path, http_origin, mount):
    data = os.urandom(N * CHUNK)
    (http_origin.dir / "f.bin").write_bytes(data)
    with mount(_write(tmp_path, _array_refs(f"{http_origin.url}/f.bin")), cache_size=6 * CHUNK) as root:
        def worker(seed):
            rng = random.Random(seed)
            order = list(range(N)) if seed % 2 else rng.sample(range(N), N)
            for i in order:
                with open(os.path.join(root, "a", str(i)), "rb") as f:
                    off = rng.randrange(CHUNK)
                    f.seek(off)
                    part = f.read(rng.randrange(1, CHUNK))
                    want = data[i * CHUNK + off : (i + 1) * CHUNK]
                    assert part == want[: len(part)] and part, (i, off)

        in_threads(worker, range(8))  # raises the first failing worker's assertion
        # other processes too: cat every chunk file while threads were reading
        out = subprocess.run(["cat", *(os.path.join(root, "a", str(i)) for i in range(N))], capture_output=True)
        assert out.stdout == data


def test_memory_cache_holds_its_bound_while_reading_more(tmp_path, http_origin):
    data = os.urandom(N * CHUNK)
    (http_origin.dir / "f.bin").write_bytes(data)
    url = f"{http_origin.url}/f.bin"
    cache = MemoryCache(5 * CHUNK)
    reader = Reader(Origins(), cache, ahead_budget=3 * CHUNK)
    try:
        for i in range(N):
            ref = Range(url, i * CHUNK, CHUNK)
            assert reader.read(ref, 0, CHUNK) == data[i * CHUNK : (i + 1) * CHUNK]
            reader.fetch_ahead([(url, j * CHUNK, CHUNK, "") for j in range(i + 1, min(i + 6, N))])
            assert cache.current_bytes <= 5 * CHUNK
    finally:
        reader.close()


def test_read_ahead_inside_a_large_whole_file(http_origin):
    data = os.urandom(5 << 20)
    (http_origin.dir / "big.bin").write_bytes(data)
    cache = MemoryCache(64 << 20)
    reader = Reader(Origins(), cache, block_size=1 << 20, whole_limit=1 << 20)
    try:
        ref = Whole(f"{http_origin.url}/big.bin")
        got = b"".join(reader.read(ref, off, 128 << 10) for off in range(0, len(data), 128 << 10))
        assert got == data
        assert cache.stats.snapshot().get("prefetch_chunks", 0) >= 3  # later blocks fetched ahead
        assert http_origin.counts["GET"] <= 5 and http_origin.counts["bytes"] == len(data)  # none twice
    finally:
        reader.close()


def test_read_spans_are_the_bytes_asked_within_and_across_blocks(tmp_path, http_origin):
    data = os.urandom(3 << 20)
    (http_origin.dir / "big.bin").write_bytes(data)
    (tmp_path / "local.bin").write_bytes(data)
    reader = Reader(Origins(), MemoryCache(64 << 20), block_size=1 << 20, whole_limit=1 << 20)
    refs = {"whole": Whole(f"{http_origin.url}/big.bin"), "range": Range(f"{http_origin.url}/big.bin", 777, 2_500_000),
            "local": Range(str(tmp_path / "local.bin"), 777, 2_500_000), "inline": Inline(data[777:2_500_777])}
    try:
        for name, ref in refs.items():
            whole = data if name == "whole" else data[777:2_500_777]
            for offset, length in ((0, 10), (5, 1 << 20), ((1 << 20) - 3, 7), (1_000_000, 1_200_000),
                                   (len(whole) - 4, 100), (len(whole), 10), (len(whole) + 5, 10), (0, 4 << 20)):
                span = reader.read_span(ref, offset, length)
                got = span[0][span[1] : span[2]]
                assert got == whole[offset : offset + length], (name, offset, length)
                assert reader.read(ref, offset, length) == got
    finally:
        reader.close()


def test_local_originals_are_read_in_place_not_cached(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(1 << 20)
    path.write_bytes(data)
    cache = MemoryCache(64 << 20)
    reader = Reader(Origins(), cache)
    try:
        ref = Range(str(path), 1000, 500_000)
        assert reader.read(ref, 0, 128 << 10) + reader.read(ref, 128 << 10, 1 << 20) == data[1000:501_000]
        assert cache.current_bytes == 0  # the page cache is the cache for local files
        short = Range(str(path), (1 << 20) - 10, 100)  # runs past the end of the original
        with pytest.raises(OSError, match="got 10 of 100 bytes"):
            reader.read(short, 0, 100)
    finally:
        reader.close()


def test_chunk_order_follows_the_grid():
    meta = {"shape": [3, 25], "chunks": [1, 10], "dtype": "<i4", "zarr_format": 2}
    tree = build_index([("v/.zarray", Inline(json.dumps(meta).encode())), ("v/0.0", Inline(b""))])
    order = ChunkOrder(tree)
    assert order.after("v/0.1", 4) == ["v/0.2", "v/1.0", "v/1.1", "v/1.2"]
    assert order.after("v/2.2", 4) == []
    assert order.position("v/.zattrs") is None and order.position("v/0.3") is None


def test_chunk_order_by_name_goes_as_a_sorted_listing_in_both_zarr_versions():
    v2 = {"shape": [12, 2], "chunks": [1, 1], "dtype": "<i4", "zarr_format": 2}
    v3 = {"zarr_format": 3, "node_type": "array", "shape": [12, 2], "data_type": "int32",
          "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 1]}},
          "chunk_key_encoding": {"name": "default"}, "codecs": [{"name": "bytes"}], "fill_value": 0}
    tree = build_index([("v/.zarray", Inline(json.dumps(v2).encode())), ("v/0.0", Inline(b"")),
                        ("w/zarr.json", Inline(json.dumps(v3).encode())), ("w/c/0/0", Inline(b""))])
    order = ChunkOrder(tree)
    assert order.after("v/1.1", 3, by_name=True) == ["v/10.0", "v/10.1", "v/11.0"]
    assert order.after("v/2.0", 3, -1, by_name=True) == ["v/11.1", "v/11.0", "v/10.1"]
    assert order.after("w/c/1/1", 2, by_name=True) == ["w/c/10/0", "w/c/10/1"]
    assert order.after("v/9.1", 3, by_name=True) == []  # the last name


def test_a_bad_range_in_a_merged_request_does_not_fail_its_neighbours(http_origin):
    data = os.urandom(3 * CHUNK)
    (http_origin.dir / "f.bin").write_bytes(data)
    url = f"{http_origin.url}/f.bin"
    cache = MemoryCache(64 << 20)
    reader = Reader(Origins(retries=1), cache)
    try:
        good = [(url, 0, CHUNK, ""), (url, CHUNK, CHUNK, "")]
        bad = (url, 2 * CHUNK, 2 * CHUNK, "")  # runs past the end of the original
        assert reader.fetch_ahead([*good, bad]) == 3
        for seg in good:
            assert reader.read(Range(*seg), 0, CHUNK) == data[seg[1] : seg[1] + CHUNK]
        with pytest.raises(OSError, match=f"got {CHUNK} of {2 * CHUNK} bytes"):
            reader.read(Range(*bad), 0, 2 * CHUNK)
    finally:
        reader.close()


def test_chunk_order_decides_v2_or_v3_by_metadata_not_by_a_name():
    """A Zarr v2 array named ``c`` (or ``grp/c``) is prefetched with v2 names; a v3 array's
    ``c/i/j`` keys with v3 names."""
    zarray = json.dumps({"shape": [4, 2], "chunks": [1, 1], "dtype": "<i2", "compressor": None, "filters": None,
                         "fill_value": 0, "order": "C", "zarr_format": 2}).encode()
    zarr_json = json.dumps({"zarr_format": 3, "node_type": "array", "shape": [4, 2], "data_type": "int16",
                            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 1]}},
                            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                            "codecs": [{"name": "bytes"}], "fill_value": 0}).encode()
    entries = [("c/.zarray", Inline(zarray)), ("grp/c/.zarray", Inline(zarray)), ("v3/zarr.json", Inline(zarr_json))]
    entries += [(f"{a}/{i}.{j}", Range("u", 0, 1)) for a in ("c", "grp/c") for i in range(4) for j in range(2)]
    entries += [(f"v3/c/{i}/{j}", Range("u", 0, 1)) for i in range(4) for j in range(2)]
    tree = build_index(entries)  # the order holds its tree weakly
    order = ChunkOrder(tree)
    assert order.after("c/0.1", 3) == ["c/1.0", "c/1.1", "c/2.0"]
    assert order.after("grp/c/3.0", 5) == ["grp/c/3.1"]
    assert order.after("v3/c/1/1", 2) == ["v3/c/2/0", "v3/c/2/1"]


def _walk_and_see(tmp_path, http_origin, order, n=60, parallel=16, grid=None, missed=None, **windows):
    """A real prefetcher on a real reader over the loopback origin: walk the chunks of an array
    (1-D of ``n`` chunks, or of chunk ``grid`` -- chunk numbers are row-major) in ``order``;
    return which chunks it fetched ahead (those the walk never asked for are in the memory
    cache only because of prediction). ``missed``: a list given the accesses whose chunk had
    not been fetched ahead."""
    from refmount.grid import chunk_name
    from refmount.io.prefetch import Prefetcher

    grid = grid or [n]
    n = math.prod(grid)
    (http_origin.dir / "f.bin").write_bytes(os.urandom(n * 1000))
    meta = json.dumps({"shape": grid, "chunks": [1] * len(grid), "dtype": "|u1", "compressor": None,
                       "filters": None, "fill_value": 0, "order": "C", "zarr_format": 2}).encode()
    url = f"{http_origin.url}/f.bin"
    names = [chunk_name(i, grid) for i in range(n)]
    tree = build_index([("a/.zarray", Inline(meta))] + [(f"a/{names[i]}", Range(url, i * 1000, 1000)) for i in range(n)])
    reader = Reader(Origins(retries=1), MemoryCache(64 << 20), max_gap=0, parallel=parallel)
    prefetcher = Prefetcher(reader, **(windows or {"first_window": 4, "max_window": 8}))
    try:
        for i in order:
            if missed is not None and (url, i * 1000, 1000, "") not in reader.cache:
                missed.append(i)
            prefetcher.on_first_read(tree, f"a/{names[i]}")
            reader.read(tree.node(f"a/{names[i]}"), 0, 1000)
        reader._pool.shutdown(wait=True)
        return {i for i in range(n) if (url, i * 1000, 1000, "") in reader.cache}
    finally:
        reader.close()


@pytest.mark.parametrize("walk, ahead", [
    (list(range(20)), set(range(20, 28))),  # grid order (also a listing's order: listings are in grid order)
    (list(range(59, 39, -1)), set(range(32, 40))),  # reverse
    (list(range(0, 40, 4)), {40, 44, 48, 52, 56}),  # every 4th: a time slice of a 3-D array
    (list(range(5, 60, 7))[:5], {40, 47, 54}),  # any constant stride
])
def test_prefetch_follows_the_walk(tmp_path, http_origin, walk, ahead):
    seen = _walk_and_see(tmp_path, http_origin, walk)
    assert ahead <= seen - set(walk), sorted(seen - set(walk))
    assert not (seen - set(walk)) - ahead - set(range(min(ahead), max(ahead) + 1)), "fetched what the walk will not read"


def _dask_order(grid: list[int]) -> list[int]:
    """The chunk numbers (row-major) in the order dask's scheduler runs a load of an array
    chunked as ``grid`` (by dask's own ``order``: backwards through the chunk names sorted as
    strings, today)."""
    import dask.array as da
    from dask.order import order

    array = da.zeros(grid, chunks=1)
    priority = order(dict(array.__dask_graph__()))
    blocks = [key[1:] for key in sorted(priority, key=priority.get) if isinstance(key, tuple) and key[0] == array.name]
    return [int(np.ravel_multi_index(block, grid)) for block in blocks]


@pytest.mark.parametrize("grid", [[60], [150], [30, 2], [3, 12, 2]])
def test_a_dask_load_is_fetched_ahead_in_the_order_dask_reads(tmp_path, http_origin, grid):
    """xarray loads with dask, which runs an array's chunk reads backwards through their names
    sorted as strings (``9, 8, ..., 59, ..., 50, 5, 49, ...``): past its first accesses every
    chunk it reads has been fetched ahead, and a load that stops leaves a window or two fetched,
    not more (the code before missed each chunk whose name is shorter, e.g. ``5``, ``4``: a
    request waited for each)."""
    walk = _dask_order(grid)
    assert sorted(walk) == list(range(math.prod(grid)))
    walk = walk[: len(walk) * 2 // 3]  # a load that stops: what it has not read yet is not all fetched
    missed: list[int] = []
    seen = _walk_and_see(tmp_path, http_origin, walk, grid=grid, missed=missed)
    assert len(missed) <= 3, (missed, walk)
    rest = _dask_order(grid)[len(walk):]
    assert set(rest[:4]) <= seen, (rest[:4], sorted(seen - set(walk)))
    assert len(seen - set(walk)) <= 16, sorted(seen - set(walk))  # a window or two, not the rest of the array


@pytest.mark.parametrize("grid, seed", [([192], 0), ([192], 1), ([24, 2, 4], 1)])
def test_a_dask_load_by_many_threads_is_fetched_ahead(tmp_path, http_origin, grid, seed):
    """Sixteen threads take dask's tasks in turn, so the reads come a few places out of order
    (``96 97 99 98 95 94 92 91 93 ...``): a walk chunk by chunk goes on past a few of its chunks,
    and a read behind a walk that it did not fetch may start the walk the other way (the code
    before: 62-104 of these 192 reads were not fetched ahead -- a backward walk went on only by
    exact steps, and reads behind a forward walk begun by two early reads counted as its own)."""
    rng = random.Random(seed)
    walk = [c for _, c in sorted((i + rng.uniform(0, 16), c) for i, c in enumerate(_dask_order(grid)))]
    missed: list[int] = []
    _walk_and_see(tmp_path, http_origin, walk, grid=grid, missed=missed)
    assert len(missed) <= len(walk) // 8, missed


def _dask_blocks_order(grid: list[int], block: list[int]) -> list[int]:
    """The chunk numbers in the order a dask load of an array of chunk ``grid`` whose dask
    chunks are ``block`` Zarr chunks each reads them: the tasks in dask's order, each reading
    its chunks in grid order."""
    blocks = [-(-g // b) for g, b in zip(grid, block)]
    walk = []
    for number in _dask_order(blocks):
        index = np.unravel_index(number, blocks)
        spans = [range(i * b, min(i * b + b, g)) for i, b, g in zip(index, block, grid)]
        walk += [int(np.ravel_multi_index(chunk, grid)) for chunk in itertools.product(*spans)]
    return walk


@pytest.mark.parametrize("grid, block", [([192], [8]), ([96], [2]), ([192], [32]), ([48, 2, 2], [4, 2, 2]),
                                         ([100, 3], [7, 3])])
def test_dask_tasks_that_each_read_a_block_of_chunks_are_fetched_ahead(tmp_path, http_origin, grid, block):
    """``open_zarr(..., chunks={'time': 8})`` (or ``'auto'``): each dask task reads a block of
    several chunks in grid order, the tasks in the order of their names (``9 8 ... 3 23 22 ...``)
    -- a block's first chunks follow from neither chunk order (the code before: 12-44 of these
    reads not fetched ahead, two at the start of each block). Once three blocks were read, each
    next block is fetched ahead. A load that stops leaves a few windows fetched, not the rest of
    the array: the first blocks' walks (before blocks are recognised) and the next block or two."""
    walk = _dask_blocks_order(grid, block)
    assert sorted(walk) == list(range(math.prod(grid)))
    missed: list[int] = []
    _walk_and_see(tmp_path, http_origin, walk, grid=grid, missed=missed, first_window=16, max_window=16)
    assert len(missed) <= 8, missed
    part = walk[: len(walk) // 2]
    seen = _walk_and_see(tmp_path, http_origin, part, grid=grid, first_window=16, max_window=16)
    assert len(seen - set(part)) <= 3 * 16, sorted(seen - set(part))


def test_random_reads_after_a_walk_of_blocks_soon_fetch_nothing_ahead(tmp_path, http_origin):
    """Blocks recognised are kept while reads start blocks a walk of them explains: random reads
    after a dask load of blocks of 8 fetch a block for the first two of them, then nothing."""
    blocks = _dask_blocks_order([2000], [8])[:96]
    near = {c + d for c in blocks for d in range(-24, 25)}  # (what the blocks' walks may fetch)
    scattered = random.Random(0).sample(sorted(set(range(2000)) - near), 40)
    alone = _walk_and_see(tmp_path, http_origin, blocks, grid=[2000], first_window=16, max_window=16)
    walk = blocks + scattered
    seen = _walk_and_see(tmp_path, http_origin, walk, grid=[2000], first_window=16, max_window=16)
    assert len((seen - set(walk)) - alone) <= 2 * 16, sorted((seen - set(walk)) - alone)


def test_a_walk_in_the_order_of_sorted_names_is_fetched_ahead(tmp_path, http_origin):
    """rsync, ``ls | xargs``, ``sorted(os.listdir(...))``: chunk names sorted as strings
    (``0, 1, 10, 11, ..., 19, 2, 20, ...``)."""
    order = sorted(range(60), key=str)
    missed: list[int] = []
    seen = _walk_and_see(tmp_path, http_origin, order[:40], missed=missed)
    assert len(missed) <= 3, missed
    assert seen - set(order[:40]) <= set(order[40:56]), sorted(seen - set(order[:40]))
    assert set(order[40:44]) <= seen


class _Reversed:
    """A codec of the decoded view's shape: chunks of ``nbytes`` come out reversed."""

    nbytes = 1000

    def decode(self, raw: bytes) -> bytes:
        return raw[::-1]


def test_a_decoded_walk_counts_each_chunk_fetched_ahead_once(http_origin):
    """The decoded view fetches the raw chunks ahead and decodes them ahead: a chunk decoded
    ahead is the raw one fetched ahead, not one more (``stats`` said 200 % of them used)."""
    from refmount.index import Decoded
    from refmount.io.prefetch import Prefetcher

    n, codec = 30, _Reversed()
    data = os.urandom(n * 1000)
    (http_origin.dir / "f.bin").write_bytes(data)
    meta = json.dumps({"shape": [n], "chunks": [1], "dtype": "|V1000", "compressor": None, "filters": None,
                       "fill_value": None, "order": "C", "zarr_format": 2}).encode()
    raw = build_index([("a/.zarray", Inline(meta))] + [(f"a/{i}", Range(f"{http_origin.url}/f.bin", i * 1000, 1000))
                                                        for i in range(n)])

    class View:  # the decoded view's shape: chunk files decoded from the raw references
        def node(self, path):
            ref = raw.node(path)
            return Decoded(ref, codec) if isinstance(ref, Range) else ref

    tree = View()
    reader = Reader(Origins(retries=1), MemoryCache(64 << 20), max_gap=0)
    prefetcher = Prefetcher(reader, first_window=4, max_window=8)
    try:
        for i in range(n):  # as the mount reads a chunk file whole
            ref = tree.node(f"a/{i}")
            prefetcher.on_first_read(tree, f"a/{i}", ref)
            assert reader.read(ref, 0, 1000) == data[i * 1000 : (i + 1) * 1000][::-1]
            reader.served(ref, 1000)
        reader._pool.shutdown(wait=True)
    finally:
        reader.close()
    counted = reader.stats.snapshot()
    assert counted.get("prefetch_chunks", 0) >= n - 4, counted
    assert 0 < counted.get("prefetch_used", 0) <= counted["prefetch_chunks"], counted


def test_prefetch_stays_quiet_on_random_access(tmp_path, http_origin):
    walk = [13, 2, 41, 7, 30, 55, 18, 1, 44, 26]
    assert _walk_and_see(tmp_path, http_origin, walk) == set(walk)


def test_a_walk_once_seen_fills_the_fetch_pool_at_once(tmp_path, http_origin):
    # the default first window is the reader's parallelism: two chunks in a row, then six ahead
    assert _walk_and_see(tmp_path, http_origin, [0, 1], parallel=6, max_window=64) == set(range(8))


@pytest.mark.parametrize("window_bytes, ahead", [(4000, 4), (1 << 30, 16)])
def test_a_window_of_large_chunks_stops_growing_at_its_byte_bound(tmp_path, http_origin, window_bytes, ahead):
    """Past ``first_window`` chunks a window grows only while it holds under ``window_bytes``: a
    reader of large chunks that stops leaves that much fetched for nothing, not ``max_window``
    chunks (here 1,000-byte chunks, the bound 4 of them; unbounded, the window doubles to 16)."""
    walk = list(range(30))
    seen = _walk_and_see(tmp_path, http_origin, walk, first_window=2, max_window=16, window_bytes=window_bytes)
    assert seen - set(walk) == set(range(30, 30 + ahead))


@pytest.mark.parametrize("grid, walk, ahead", [
    # a time series at one place (one chunk along the first axis): 2 ahead at once, then more
    ([10, 4], [1, 5], {9, 13}),
    ([10, 4], [1, 5, 9], {13, 17, 21, 25}),
    ([60], [30, 29], {28, 27, 26, 25}),  # backwards by one
    ([6, 10], [22, 12], {2}),  # back along the first axis, to the grid's edge
])
def test_a_step_of_one_chunk_along_an_axis_is_a_walk_at_once(tmp_path, http_origin, grid, walk, ahead):
    assert _walk_and_see(tmp_path, http_origin, walk, grid=grid) == set(walk) | ahead


def test_readers_of_different_slices_at_once_each_get_their_walk_fetched_ahead(tmp_path, http_origin):
    # two dask workers on two slices of one array: their reads arrive interleaved
    walk = [i for pair in zip(range(0, 10), range(30, 40)) for i in pair]
    seen = _walk_and_see(tmp_path, http_origin, walk) - set(walk)
    assert set(range(10, 14)) <= seen and set(range(40, 44)) <= seen, sorted(seen)
    assert seen <= set(range(10, 18)) | set(range(40, 48)), sorted(seen)  # nothing off either walk


def test_twelve_readers_of_different_slices_taking_turns_are_each_fetched_ahead(tmp_path, http_origin):
    """A node's dask workers, each on its own slice of one array, their reads taking turns: each
    reader's previous read is a dozen reads back (the code before: walks forgotten after eight
    reads of the array, recognised only among the last four -- 158 of these 192 reads waited)."""
    rng = random.Random(0)
    slices = [list(range(r * 16, (r + 1) * 16)) for r in range(12)]
    walk = []
    while any(slices):
        for r in rng.sample(range(12), 12):
            if slices[r]:
                walk.append(slices[r].pop(0))
    missed: list[int] = []
    seen = _walk_and_see(tmp_path, http_origin, walk, n=192, missed=missed)
    assert len(missed) <= 3 * 12, sorted(missed)  # each reader's first reads
    assert seen == set(range(192)), sorted(set(range(192)) - seen)  # (every slice ends at the next one's start)


def test_three_readers_one_forward_one_backward_one_strided(tmp_path, http_origin):
    forward, backward, strided = range(0, 8), range(59, 51, -1), range(20, 44, 3)
    walk = [i for triple in zip(forward, backward, strided) for i in triple]
    seen = _walk_and_see(tmp_path, http_origin, walk) - set(walk)
    assert {8, 9, 50, 49, 44, 47} <= seen, sorted(seen)


def test_two_arrays_read_in_turn_are_each_fetched_ahead(tmp_path, http_origin):
    """xarray loading variables, or a reader taking one chunk of each in turn: each array's walk
    is its own, whatever is read in between."""
    from refmount.io.prefetch import Prefetcher

    n = 30
    (http_origin.dir / "f.bin").write_bytes(os.urandom(2 * n * 1000))
    url = f"{http_origin.url}/f.bin"
    meta = json.dumps({"shape": [n], "chunks": [1], "dtype": "|u1", "compressor": None, "filters": None,
                       "fill_value": 0, "order": "C", "zarr_format": 2}).encode()
    entries = [(f"{name}/.zarray", Inline(meta)) for name in "ab"]
    entries += [(f"{name}/{i}", Range(url, (k * n + i) * 1000, 1000)) for k, name in enumerate("ab") for i in range(n)]
    tree = build_index(entries)
    reader = Reader(Origins(retries=1), MemoryCache(64 << 20), max_gap=0)
    prefetcher = Prefetcher(reader, first_window=4, max_window=8)
    try:
        for i in range(6):
            for k, name in enumerate("ab"):
                prefetcher.on_first_read(tree, f"{name}/{i}")
                reader.read(tree.node(f"{name}/{i}"), 0, 1000)
        reader._pool.shutdown(wait=True)
        ahead = {(k, i) for k in range(2) for i in range(n) if (url, (k * n + i) * 1000, 1000, "") in reader.cache}
    finally:
        reader.close()
    for k in range(2):
        assert {(k, i) for i in range(6, 10)} <= ahead, sorted(ahead)  # each walk's next chunks
        assert not {(k, i) for i in range(15, n)} & ahead  # and nothing far beyond its window

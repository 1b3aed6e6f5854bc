#!/usr/bin/env python3
"""refmount benchmarks P1-P7, peers and refmount on the same data in one run.

    bash scripts/dev.sh bench            # the dataset of issues 3 and 15 (8 files x 24 fields of 721 x 1440)
    bash scripts/dev.sh bench --quick    # small, for a smoke run

Builds NetCDF4 files (float32 (time, 721, 1440), one field per chunk, zlib + shuffle, plus a
contiguous uncompressed variable), their kerchunk references (JSON and Parquet), a plain local
Zarr v2 copy, and an HTTP origin on 127.0.0.1 (own process) with injected latency that counts
requests. Prints a table of figures and the target ratios. Every byte read through a mount
is compared with the originals.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

from refmount.cli.demo import make_references, write_archive  # noqa: E402
from refmount.mount.mountpoint import is_mounted, lazy_unmount, set_read_ahead  # noqa: E402

ROWS: list[tuple[str, str, str]] = []


def row(name: str, value: str, note: str = "") -> None:
    ROWS.append((name, value, note))
    print(f"  {name:<46} {value:>14}  {note}", flush=True)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Mounted:
    """A foreground FUSE daemon process; ``seconds`` is the time until its root answered."""

    def __init__(self, argv: list[str], mountpoint: str, env: dict | None = None):
        os.makedirs(mountpoint, exist_ok=True)
        self.mountpoint = mountpoint
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        while not is_mounted(mountpoint):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[:3]} failed: {self.proc.stderr.read().decode()[-500:]}")
            if time.perf_counter() - t0 > 600:
                raise RuntimeError("mount timed out")
            time.sleep(0.005)
        os.stat(mountpoint)
        self.seconds = time.perf_counter() - t0

    def __enter__(self) -> "Mounted":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if is_mounted(self.mountpoint):
            lazy_unmount(self.mountpoint)


def refmount_mount(refs: str, mountpoint: str, *extra: str) -> Mounted:
    # root's own mount reads its own originals: no allow list (the policy is for shared mounts)
    return Mounted([PY, "-m", "refmount", "-f", "--log-level", "WARNING", *extra, refs, mountpoint], mountpoint)


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


ORIGIN = "aiohttp"  # --origin: the server the HTTP measurements read from


class Origin:
    """The HTTP origin in its own process (so it never competes with a client for the GIL):
    an aiohttp server (``aiohttp_origin.py``, as the issues measured), or refmount's own
    thread-per-connection range server (``--origin python``), which slows down as more requests
    are in flight."""

    def __init__(self, directory: str, latency: float):
        server = [str(HERE / "aiohttp_origin.py")] if ORIGIN == "aiohttp" else ["-m", "refmount.rangeserver"]
        self.proc = subprocess.Popen([PY, *server, directory, str(latency)], stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()

    def counts(self) -> dict:
        with urllib.request.urlopen(self.url + "/__counts", timeout=10) as r:
            return json.loads(r.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def point_at(refs: dict, base: str) -> dict:
    out = json.loads(json.dumps(refs))
    for value in out["refs"].values():
        if isinstance(value, list):
            value[0] = f"{base}/{os.path.basename(value[0])}"
    return out


def chunk_keys(refs: dict, var: str = "t2m") -> list[str]:
    return [k for k, v in refs["refs"].items() if k.startswith(var + "/") and isinstance(v, list)]


def verify(root: str, refs: dict, data_dir: str) -> None:
    """Every ranged key read through the mount equals the original bytes."""
    for key, value in refs["refs"].items():
        if isinstance(value, list):
            _, off, size = value
            with open(os.path.join(data_dir, os.path.basename(value[0])), "rb") as f:
                f.seek(off)
                want = f.read(size)
            with open(os.path.join(root, key), "rb") as f:
                if f.read() != want:
                    raise SystemExit(f"MISMATCH at {key}")


def python_timing(code: str) -> dict:
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


AIOHTTP_FETCH = """
import asyncio, json, time
import aiohttp
ranges = {ranges}
async def main():
    sem = asyncio.Semaphore({inflight})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit={inflight})) as session:
        async def one(url, offset, size):
            async with sem:
                async with session.get(url, headers={{"Range": f"bytes={{offset}}-{{offset + size - 1}}"}}) as r:
                    assert len(await r.read()) == size
        t0 = time.perf_counter()
        await asyncio.gather(*(one(*r) for r in ranges))
        return time.perf_counter() - t0
seconds = asyncio.run(main())
print(json.dumps({{"rate": sum(r[2] for r in ranges) / seconds / 1e6}}))
"""


XARRAY_LOAD = """
import json, time, xarray as xr
t0 = time.perf_counter()
ds = xr.open_zarr({target!r}, consolidated=False, **{kwargs})
n = ds["t2m"].load().nbytes
print(json.dumps({{"seconds": time.perf_counter() - t0, "bytes": n}}))
"""


def bench_dataset(work: Path, args) -> None:
    data = work / "originals"
    data.mkdir()
    t0 = time.perf_counter()
    paths = write_archive(str(data), files=args.files, nt=args.times, ny=args.ny, nx=args.nx)
    refs = make_references(paths)
    keys = chunk_keys(refs)
    moved = sum(refs["refs"][k][2] for k in keys)
    print(f"dataset: {len(paths)} files, {sum(os.path.getsize(p) for p in paths) / 1e6:.0f} MB, "
          f"{len(keys)} t2m chunks ({moved / 1e6:.0f} MB encoded), built in {time.perf_counter() - t0:.0f} s")
    local_refs = work / "local.json"
    local_refs.write_text(json.dumps(refs))
    zcopy = work / "copy.zarr"  # the plain local Zarr v2 copy: the same encoded chunks as files
    for key, value in refs["refs"].items():
        target = zcopy / key
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, list):
            with open(value[0], "rb") as f:
                f.seek(value[1])
                target.write_bytes(f.read(value[2]))
        elif isinstance(value, str):
            target.write_bytes(base64.b64decode(value[7:]) if value.startswith("base64:") else value.encode())
        else:
            target.write_bytes(json.dumps(value).encode())
    big = work / "passthrough.bin"
    with open(big, "wb") as out:
        for p in paths:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out)
    mnt = str(work / "mnt")
    for p in [*paths, big]:  # originals in the page cache for every contender alike
        timed(["cat", str(p)])
    runs = args.runs

    def cat_all(root: str) -> float:
        return timed(["cat", *(os.path.join(root, k) for k in keys)])

    def median_rate(nbytes: int, measure) -> float:
        return statistics.median(nbytes / measure() / 1e6 for _ in range(runs))

    def fsspec_mount(refs_path, protocol):
        env = dict(os.environ)
        env.pop("FUSE_LIBRARY_NAME", None)
        return Mounted([PY, str(HERE / "fsspec_mount.py"), str(refs_path), mnt, protocol], mnt, env=env)

    def mounted_cat(make_mount) -> float:
        with make_mount():
            return cat_all(mnt)

    print(f"\nP1: cat of every chunk file, local originals (median of {runs}, a fresh mount each)")

    def passthrough(read_ahead: int = 0) -> float:
        with Mounted([PY, str(HERE / "passthrough.py"), str(big), mnt], mnt):
            if read_ahead:
                set_read_ahead(mnt, read_ahead)
            return timed(["cat", os.path.join(mnt, big.name)])

    def passthrough_tree(read_ahead: int = 0) -> float:  # the same chunks as files: per-file costs too
        with Mounted([PY, str(HERE / "passthrough.py"), str(zcopy), mnt], mnt):
            if read_ahead:
                set_read_ahead(mnt, read_ahead)
            return cat_all(mnt)

    ceiling = median_rate(big.stat().st_size, passthrough)
    row("passthrough ceiling (one local file)", f"{ceiling:.0f} MB/s", "the kernel's 128 KiB read-ahead")
    raised = median_rate(big.stat().st_size, lambda: passthrough(1 << 20))
    row("passthrough, one file, 1 MiB read-ahead", f"{raised:.0f} MB/s", "as refmount sets it when root")
    tree = median_rate(moved, passthrough_tree)
    row("passthrough of the chunk files (a tree)", f"{tree:.0f} MB/s", "per-file costs included")
    tree_raised = median_rate(moved, lambda: passthrough_tree(1 << 20))
    row("passthrough of the chunk files, 1 MiB", f"{tree_raised:.0f} MB/s")
    p1 = median_rate(moved, lambda: mounted_cat(lambda: refmount_mount(str(local_refs), mnt)))
    with refmount_mount(str(local_refs), mnt):
        verify(mnt, refs, str(data))
    row("refmount", f"{p1:.0f} MB/s", f"P1 ratio {p1 / ceiling:.2f} (target >= 0.8); to the tree passthrough "
        f"with the same read-ahead {p1 / tree_raised:.2f}")
    fsspec_ok = _fusepy_available()
    if fsspec_ok:
        f1 = median_rate(moved, lambda: mounted_cat(lambda: fsspec_mount(local_refs, "file")))
        row("fsspec FUSE mount", f"{f1:.0f} MB/s")

    print(f"\nP2/P4/P5: cat over HTTP with {args.latency * 1000:.0f} ms per request")
    origin = Origin(str(data), args.latency)
    try:
        http_refs = point_at(refs, origin.url)
        http_path = work / "http.json"
        http_path.write_text(json.dumps(http_refs))
        cold, warm_rates, counted = [], [], []
        for _ in range(runs):
            before = origin.counts()
            with refmount_mount(str(http_path), mnt):
                cold.append(moved / cat_all(mnt) / 1e6)
                after = origin.counts()
                warm_rates.append(moved / cat_all(mnt) / 1e6)
                warm = origin.counts()
                counted.append((after.get("GET", 0) - before.get("GET", 0), after.get("HEAD", 0) - before.get("HEAD", 0),
                                sum(warm.values()) - sum(after.values())))
        with refmount_mount(str(http_path), mnt):
            verify(mnt, refs, str(data))
        p2, p5 = statistics.median(cold), statistics.median(warm_rates)
        gets, heads, _ = counted[0]
        warm_requests = max(c[2] for c in counted)  # includes the byte counter: 0 means nothing moved
        row("refmount over HTTP", f"{p2:.0f} MB/s", f"P2 ratio to P1 {p2 / p1:.2f} (target >= 0.7)")
        row("origin GET / HEAD per chunk", f"{gets / len(keys):.2f} / {heads / len(keys):.2f}", "P4 (target <= 1.0 GET, 0 HEAD)")
        row("warm re-read", f"{p5:.0f} MB/s", f"P5 ratio to P1 {p5 / p1:.2f} (>= 0.8); origin traffic when warm: {warm_requests}")
        ranges = [http_refs["refs"][k] for k in keys]
        client = statistics.median(python_timing(AIOHTTP_FETCH.format(ranges=json.dumps(ranges), inflight=16))["rate"]
                                   for _ in range(runs))
        row("aiohttp client, same ranges, 16 in flight", f"{client:.0f} MB/s",
            f"P2 ratio to it {p2 / client:.2f} (target >= 0.8); the client alone is {client / p1:.2f} x P1")
        # walks other than the listing's: every 4th chunk in grid order (a strided time slice),
        # reverse, and the names sorted as text (0, 1, 10, 100, ...: rsync sorts its file list)
        order = sorted(keys, key=lambda k: [int(i) for i in k.rpartition("/")[2].split(".")])
        # (a walk of a quarter of the chunks ramps its fetch-ahead up over a larger part of it: the
        # first quarter in grid order is its like-for-like comparison)
        walks = (("grid order", order), ("grid order, first quarter", order[:len(order) // 4]),
                 ("every 4th chunk", order[::4]), ("reverse grid order", order[::-1]),
                 ("names sorted as text (rsync)", sorted(keys)))
        for label, walk in walks:
            nbytes = sum(refs["refs"][k][2] for k in walk)
            rates = []
            for _ in range(runs):
                with refmount_mount(str(http_path), mnt):
                    rates.append(nbytes / timed(["cat", *(os.path.join(mnt, k) for k in walk)]) / 1e6)
            rate = statistics.median(rates)
            if label == "grid order":
                forward = rate
            elif label == "grid order, first quarter":
                quarter = rate
            if label == "grid order":
                note = ""
            elif label == "grid order, first quarter":
                note = f"{rate / forward:.2f} x grid order"
            elif label == "every 4th chunk":
                note = f"{rate / forward:.2f} x grid order (target >= 0.7), {rate / quarter:.2f} x its first quarter"
            elif label == "reverse grid order":
                note = f"{rate / forward:.2f} x grid order (target >= 0.7)"
            else:
                note = f"{rate / forward:.2f} x grid order"
            row(f"over HTTP, {label}", f"{rate:.0f} MB/s", note)
        if fsspec_ok:
            before = origin.counts()
            f2 = moved / mounted_cat(lambda: fsspec_mount(http_path, "http")) / 1e6  # one run: it is slow
            after = origin.counts()
            row("fsspec FUSE mount over HTTP", f"{f2:.0f} MB/s",
                f"{(after['GET'] - before['GET']) / len(keys):.2f} GET, {(after.get('HEAD', 0) - before.get('HEAD', 0)) / len(keys):.2f} HEAD per chunk")
            row("refmount / fsspec FUSE over HTTP", f"{p2 / f2:.1f} x", "P2 (target >= 10)")

        print(f"\nP3: xarray full load of t2m over HTTP (median of {runs}, the loads taken in turn)")

        def xarray_rate(target, kwargs="{}", mount_refs=None) -> float:
            if mount_refs:
                with refmount_mount(mount_refs, mnt):
                    r = python_timing(XARRAY_LOAD.format(target=target, kwargs=kwargs))
            else:
                r = python_timing(XARRAY_LOAD.format(target=target, kwargs=kwargs))
            return r["bytes"] / r["seconds"] / 1e6

        def copy_while_received() -> float:
            """The local copy's load while a bare aiohttp client receives the same bytes from the
            origin (started as the load starts): what receiving them costs this machine's two
            cores, whoever receives them -- the bound of any reader over this origin."""
            client = subprocess.Popen([PY, "-c", AIOHTTP_FETCH.format(ranges=json.dumps(ranges), inflight=16).replace(
                "seconds = asyncio.run(main())", "import sys; sys.stdin.readline()\nseconds = asyncio.run(main())")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                time.sleep(1.0)  # its imports done before the load starts
                load = subprocess.Popen([PY, "-c", XARRAY_LOAD.format(target=str(zcopy), kwargs="{}").replace(
                    "t0 = time.perf_counter()", "t0 = time.perf_counter(); print('go', flush=True)")],
                    stdout=subprocess.PIPE, text=True)
                load.stdout.readline()
                client.stdin.write("\n")
                client.stdin.flush()
                r = json.loads(load.communicate(timeout=600)[0].strip().splitlines()[-1])
            finally:
                client.communicate(timeout=600)
            return r["bytes"] / r["seconds"] / 1e6

        kw = {"storage_options": {"fo": str(http_path), "remote_protocol": "http", "remote_options": {"asynchronous": True}, "asynchronous": True}}
        contenders = {"mount": lambda: xarray_rate(mnt, mount_refs=str(http_path)),
                      "kerchunk": lambda: xarray_rate("reference://", repr(kw)),
                      "copy": lambda: xarray_rate(str(zcopy)),
                      "bound": copy_while_received,
                      # dask tasks of several chunks each (a block walk of the prefetcher)
                      "mount8": lambda: xarray_rate(mnt, "{'chunks': {'time': 8}}", mount_refs=str(http_path)),
                      "copy8": lambda: xarray_rate(str(zcopy), "{'chunks': {'time': 8}}")}
        rates: dict[str, list] = {name: [] for name in contenders}
        failed = None
        for _ in range(runs):  # in turn, so that a machine busier at one moment weighs on all alike
            for name, measure in contenders.items():
                if name == "kerchunk" and failed:
                    continue
                try:
                    rates[name].append(measure())
                except RuntimeError as exc:
                    if name != "kerchunk":
                        raise
                    failed = str(exc).splitlines()[-1][:60]
        p3, local = statistics.median(rates["mount"]), statistics.median(rates["copy"])
        row("xarray.open_zarr(refmount mount)", f"{p3:.0f} MB/s")
        if failed:
            row("in-process kerchunk reference://", "failed", failed)
        else:
            row("in-process kerchunk reference://", f"{statistics.median(rates['kerchunk']):.0f} MB/s")
        row("xarray on the plain local Zarr copy", f"{local:.0f} MB/s", f"P3 ratio {p3 / local:.2f} (target >= 0.9)")
        mount8, copy8 = statistics.median(rates["mount8"]), statistics.median(rates["copy8"])
        row("the same load, dask chunks of 8 time steps", f"{mount8:.0f} MB/s",
            f"{mount8 / copy8:.2f} x the local copy loaded alike ({copy8:.0f} MB/s)")
        bound = statistics.median(rates["bound"])
        row("the local copy while a bare client receives the same bytes", f"{bound:.0f} MB/s",
            f"{bound / local:.2f} x the copy: the most any reader over this origin can reach here")
    finally:
        origin.close()
    bench_legacy(work, local_refs, runs)


def bench_legacy(work: Path, refs: Path, runs: int) -> None:
    """P8: netCDF-C (nccopy reads every variable) through the decoded view, against the same
    client on a plain local Zarr copy of that view (what a site would otherwise have to make)."""
    print("\nP8: netCDF-C reading everything (nccopy), decoded view vs a plain local decoded copy")
    if not shutil.which("nccopy"):
        row("nccopy", "skipped", "apt-get install netcdf-bin")
        return
    mnt = str(work / "mnt")
    copy = work / "decoded.zarr"
    with refmount_mount(str(refs), mnt, "--view", "decoded"):
        shutil.copytree(mnt, copy)
    size = sum(f.stat().st_size for f in copy.rglob("*") if f.is_file())

    def nccopy(root: str) -> float:
        out = work / "out.nc"
        out.unlink(missing_ok=True)
        return timed(["nccopy", f"file://{root}#mode=zarr,file", str(out)])

    def through_view() -> float:
        with refmount_mount(str(refs), mnt, "--view", "decoded"):  # a fresh mount: every chunk decoded
            return nccopy(mnt)

    def warm() -> float:  # the same mount read twice: the second read is served decoded from memory
        with refmount_mount(str(refs), mnt, "--view", "decoded", "--cache-size", "2GiB"):
            nccopy(mnt)
            return nccopy(mnt)

    view = statistics.median(size / through_view() / 1e6 for _ in range(runs))
    again = statistics.median(size / warm() / 1e6 for _ in range(runs))
    local = statistics.median(size / nccopy(str(copy)) / 1e6 for _ in range(runs))
    row("nccopy through --view decoded (cold)", f"{view:.0f} MB/s", f"{size / 1e6:.0f} MB decoded")
    row("nccopy through --view decoded (warm)", f"{again:.0f} MB/s")
    row("nccopy of the plain local decoded copy", f"{local:.0f} MB/s",
        f"ratio cold {view / local:.2f}, warm {again / local:.2f}")


def _fusepy_available() -> bool:
    env = dict(os.environ)
    env.pop("FUSE_LIBRARY_NAME", None)
    ok = subprocess.run([PY, "-c", "import fuse, fsspec.fuse"], capture_output=True, env=env).returncode == 0
    if not ok:
        print("  (fsspec FUSE baseline skipped: needs fusepy and libfuse2 -- apt-get install libfuse2; pip install fusepy)")
    return ok


SET_LOAD = """
import json, os, time
def rss():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) * 1024
{imports}
base = rss(); t0 = time.perf_counter()
{load}
print(json.dumps({{"seconds": time.perf_counter() - t0, "rss": rss() - base}}))
"""


def bench_million_keys(work: Path, runs: int) -> None:
    print(f"\nP6: a synthetic 1 M-key JSON set (loads: median of {runs})")
    n = 1000
    refs = {".zgroup": '{"zarr_format":2}',
            "v/.zarray": json.dumps({"shape": [n * 10, n * 10], "chunks": [10, 10], "dtype": "<f8", "compressor": None,
                                     "filters": None, "fill_value": None, "order": "C", "zarr_format": 2})}
    data = work / "m.bin"
    data.write_bytes(os.urandom(1 << 20))
    for i in range(n):
        for j in range(n):
            refs[f"v/{i}.{j}"] = [str(data), (i * n + j) * 800 % ((1 << 20) - 800), 800]
    path = work / "million.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    del refs
    loads: dict[str, list] = {"fsspec": [], "refmount": []}
    for _ in range(runs):  # in turn, each in a fresh process; the median of each (single loads vary by 30 %)
        loads["fsspec"].append(python_timing(SET_LOAD.format(
            imports="import fsspec", load=f"fs = fsspec.filesystem('reference', fo={str(path)!r}, remote_protocol='file')")))
        loads["refmount"].append(python_timing(SET_LOAD.format(
            imports="from refmount.sources import open_source", load=f"ix = open_source({str(path)!r})")))
    fs_load, rm_load = ({key: statistics.median(r[key] for r in loads[name]) for key in ("seconds", "rss")}
                        for name in ("fsspec", "refmount"))
    row("fsspec ReferenceFileSystem load", f"{fs_load['seconds']:.2f} s", f"RSS +{fs_load['rss'] / 1e6:.0f} MB")
    row("refmount index load", f"{rm_load['seconds']:.2f} s", f"RSS +{rm_load['rss'] / 1e6:.0f} MB")
    mnt = str(work / "mnt6")
    cache = str(work / "cache6")
    small = work / "ten.json"
    small.write_text(json.dumps({"version": 1, "refs": {".zgroup": '{"zarr_format":2}', **{
        f"k{i}": [str(data), i, 1] for i in range(10)}}}))
    floors = []
    for _ in range(3):
        with refmount_mount(str(small), mnt, "--cache-dir", cache) as m:
            floors.append(m.seconds)
    floor = statistics.median(floors)
    with refmount_mount(str(path), mnt, "--cache-dir", cache) as m:
        first_s = m.seconds
    remounts = []
    for _ in range(3):
        with refmount_mount(str(path), mnt, "--cache-dir", cache) as m:
            remounts.append(m.seconds)
    remount_s = statistics.median(remounts)
    row("mount of a 10-key set (the start-up floor)", f"{floor:.2f} s")
    row("first mount of the 1 M-key set (parses, keeps)", f"{first_s:.2f} s")
    row("remount from the kept index", f"{remount_s:.2f} s", f"{remount_s / floor:.2f} x the floor (target <= 1.5)")
    with refmount_mount(str(path), mnt) as m:
        mount_s, daemon_rss = m.seconds, rss(m.proc.pid)
        ls = timed(["ls", "-laR", mnt])
        sample = random.Random(0).sample(range(n * n), 200)
        raw = data.read_bytes()
        for k in sample:
            i, j = divmod(k, n)
            off = k * 800 % ((1 << 20) - 800)
            if open(os.path.join(mnt, "v", f"{i}.{j}"), "rb").read() != raw[off : off + 800]:
                raise SystemExit("MISMATCH in the 1 M-key set")
    row("refmount mount (command to live mount)", f"{mount_s:.2f} s", f"daemon RSS {daemon_rss / 1e6:.0f} MB")
    row("P6 load time / RSS vs fsspec", f"{rm_load['seconds'] / fs_load['seconds']:.2f} / {rm_load['rss'] / fs_load['rss']:.2f}",
        "(target <= 0.5 each)")
    row("ls -laR of the mount (1 M files)", f"{ls:.1f} s")


def bench_parquet_10m(work: Path) -> None:
    print("\nP7: a synthetic 10 M-chunk Parquet set, local originals")
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows_total, record = 10_000_000, 100_000
    root = work / "ten.parq"
    (root / "v").mkdir(parents=True)
    data = work / "p.bin"
    data.write_bytes(os.urandom(1 << 20))
    meta = {".zgroup": {"zarr_format": 2},
            "v/.zarray": {"shape": [10_000, 1_000], "chunks": [1, 1], "dtype": "<f8", "compressor": None,
                          "filters": None, "fill_value": None, "order": "C", "zarr_format": 2}}
    (root / ".zmetadata").write_text(json.dumps({"metadata": meta, "record_size": record}))
    import numpy as np

    for r in range(rows_total // record):
        n = np.arange(r * record, (r + 1) * record, dtype="int64")
        table = pa.table({
            "path": pa.DictionaryArray.from_arrays(pa.array(np.zeros(record, "int32")), pa.array([str(data)])),
            "offset": pa.array(n * 8 % ((1 << 20) - 8)),
            "size": pa.array(np.full(record, 8, "int64")),
            "raw": pa.nulls(record, pa.binary()),
        })
        pq.write_table(table, root / "v" / f"refs.{r}.parq", compression="zstd")
    mnt = str(work / "mnt7")
    raw = data.read_bytes()
    with refmount_mount(str(root), mnt) as m:
        mount_s, daemon_rss = m.seconds, rss(m.proc.pid)
        latencies = []
        for k in random.Random(1).sample(range(rows_total), 20):
            t0 = time.perf_counter()
            with open(os.path.join(mnt, "v", f"{k // 1000}.{k % 1000}"), "rb") as f:
                got = f.read()
            latencies.append(time.perf_counter() - t0)
            off = k * 8 % ((1 << 20) - 8)
            if got != raw[off : off + 8]:
                raise SystemExit("MISMATCH in the 10 M-chunk set")
        after_rss = rss(m.proc.pid)
    row("refmount mount (command to live mount)", f"{mount_s:.2f} s", "target < 2 s")
    row("daemon RSS after mount / after 20 reads", f"{daemon_rss / 1e6:.0f} / {after_rss / 1e6:.0f} MB", "target < 300 MB")
    row("random chunk, first touch (median / max)", f"{statistics.median(latencies) * 1e3:.1f} / {max(latencies) * 1e3:.1f} ms",
        "target < 20 ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small dataset, smoke run")
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--times", type=int, default=24,
                   help="fields per file (24: the 192 chunks of 2.2 MB of issue 15's measurements)")
    p.add_argument("--latency", type=float, default=0.02, help="seconds per HTTP request")
    p.add_argument("--runs", type=int, default=3, help="runs per measurement (the median is shown)")
    p.add_argument("--only", choices=["dataset", "legacy", "million", "parquet"], help="one part only (legacy: P8 alone)")
    p.add_argument("--keep", help="work directory to keep")
    p.add_argument("--origin", choices=["aiohttp", "python"], default="aiohttp",
                   help="the HTTP origin: an aiohttp server (default) or refmount's own range server")
    args = p.parse_args()
    global ORIGIN
    ORIGIN = args.origin
    args.ny, args.nx = (181, 360) if args.quick else (721, 1440)
    if args.quick:
        args.files, args.times = 4, 4
    work = Path(args.keep or tempfile.mkdtemp(prefix="refmount-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.only in (None, "dataset"):
            bench_dataset(work, args)
        if args.only == "legacy":
            (work / "originals").mkdir()
            paths = write_archive(str(work / "originals"), files=args.files, nt=args.times, ny=args.ny, nx=args.nx)
            (work / "local.json").write_text(json.dumps(make_references(paths)))
            bench_legacy(work, work / "local.json", args.runs)
        if args.only in (None, "million"):
            bench_million_keys(work, args.runs)
        if args.only in (None, "parquet"):
            bench_parquet_10m(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_summary()


def print_summary() -> None:
    print("\nsummary")
    for name, value, note in ROWS:
        print(f"| {name} | {value} | {note} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""refmount scan against h5py's bare chunk walk and kerchunk, on the same files in one run.

    .venv/bin/python benchmarks/scan.py [--files 1000] [--tiny 100000]

``--tiny N`` also scans N tiny files to a Parquet reference set, with a local pool (-j 2) and on a
dask.distributed LocalCluster (--dask), printing files/s and the peak resident memory of the
scanning process tree (the target: < 1 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def big_file(path: Path) -> None:
    with h5py.File(path, "w") as f:  # 10,000 chunks
        d = f.create_dataset("v", shape=(100, 100, 400), chunks=(1, 1, 400), dtype="f4", compression="gzip", shuffle=True)
        d[...] = np.random.default_rng(0).normal(size=(100, 100, 400)).astype("f4")


def small_files(directory: Path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        path = directory / f"s_{i:05d}.nc"
        with h5py.File(path, "w") as f:
            t = f.create_dataset("time", data=[float(i)], maxshape=(None,), chunks=(1,))
            t.attrs["units"] = "days since 2000-01-01"
            t.make_scale("time")
            for name, size in (("lat", 10), ("lon", 20)):
                f.create_dataset(name, data=np.arange(size, dtype="f4")).make_scale(name)
            v = f.create_dataset("v", data=np.full((1, 10, 20), i, dtype="f4"), chunks=(1, 10, 20), maxshape=(None, 10, 20),
                                 compression="gzip")
            for axis, dim in enumerate(("time", "lat", "lon")):
                v.dims[axis].attach_scale(f[dim])
        paths.append(str(path))
    return paths


def tiny_files(directory: Path, n: int) -> str:
    """``n`` copies of one small NetCDF4 file, each with its own time value (patched in place)."""
    template = directory / "template.nc"
    with h5py.File(template, "w") as f:
        t = f.create_dataset("time", data=[0.0], maxshape=(None,), chunks=(1,), dtype="<f8")
        t.attrs["units"] = "hours since 2000-01-01"
        t.make_scale("time")
        v = f.create_dataset("v", data=np.arange(20, dtype="f4").reshape(1, 4, 5), chunks=(1, 4, 5), maxshape=(None, 4, 5))
        v.dims[0].attach_scale(t)
        offset = t.id.get_chunk_info(0).byte_offset
    data = bytearray(template.read_bytes())
    tiny = directory / "tiny"
    tiny.mkdir()
    for i in range(n):
        data[offset:offset + 8] = np.float64(i).tobytes()
        (tiny / f"t_{i:06d}.nc").write_bytes(data)
    return str(tiny / "t_*.nc")


def peak_rss(cmd: list[str]) -> tuple[float, int]:
    """Run ``cmd``; (seconds, peak summed RSS in bytes of it and its children, sampled every 0.1 s)."""
    import psutil

    began = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    if proc.returncode:
        raise SystemExit(proc.stderr.read().decode())
    return time.perf_counter() - began, peak


def tiny_benchmark(work: Path, n: int) -> None:
    from distributed import LocalCluster

    began = time.perf_counter()
    pattern = tiny_files(work, n)
    print(f"{n} tiny files written in {time.perf_counter() - began:.0f} s")
    scan = [sys.executable, "-m", "refmount", "scan", pattern, "-o", str(work / "tiny.parq")]
    seconds, rss = peak_rss(scan + ["-j", "2"])
    print(f"{n} tiny files -> Parquet, -j 2: {seconds:.0f} s, {n / seconds:.0f} files/s, peak RSS of the scan "
          f"(all processes) {rss / 2**20:.0f} MiB (target < 1024)")
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        seconds, rss = peak_rss(scan + ["--dask", cluster.scheduler_address])
    print(f"{n} tiny files -> Parquet on a 2-worker LocalCluster: {seconds:.0f} s, {n / seconds:.0f} files/s, peak RSS "
          f"of the client {rss / 2**20:.0f} MiB (target < 1024)")


def timed(func) -> float:
    began = time.perf_counter()
    func()
    return time.perf_counter() - began


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--tiny", type=int, default=0, metavar="N", help="also N tiny files to Parquet (memory, files/s)")
    args = p.parse_args()
    from kerchunk.combine import MultiZarrToZarr
    from kerchunk.hdf import SingleHdf5ToZarr

    from refmount.scan import scan

    work = Path(tempfile.mkdtemp(prefix="refmount-scan-bench-"))
    big = work / "big.h5"
    big_file(big)

    def bare():
        with h5py.File(big) as f:
            found = []
            f["v"].id.chunk_iter(lambda info: found.append(info.byte_offset))

    t_bare = min(timed(bare) for _ in range(3))
    t_ours = min(timed(lambda: scan([str(big)], jobs=1, progress=False)) for _ in range(3))
    t_kerchunk = timed(lambda: SingleHdf5ToZarr(str(big), inline_threshold=0).translate())
    print(f"one HDF5 file, 10,000 chunks: h5py chunk_iter {t_bare:.3f} s, refmount scan {t_ours:.3f} s "
          f"({t_ours / t_bare:.2f} x, target <= 2), kerchunk {t_kerchunk:.2f} s (refmount {t_ours / t_kerchunk:.3f} x, "
          "target <= 0.2)")
    paths = small_files(work, args.files)
    out = work / "many.json"
    t_cli = timed(lambda: subprocess.run([sys.executable, "-m", "refmount", "scan", *paths, "-o", str(out), "-j", "2"],
                                         check=True, capture_output=True))

    def kerchunk_many():
        singles = [SingleHdf5ToZarr(p, inline_threshold=0).translate() for p in paths]
        MultiZarrToZarr(singles, concat_dims=["time"], identical_dims=["lat", "lon"]).translate()

    t_k = timed(kerchunk_many)
    print(f"{args.files} small NetCDF4 files combined along time: refmount scan -j 2 {t_cli:.1f} s (process start "
          f"included), kerchunk SingleHdf5ToZarr + MultiZarrToZarr {t_k:.1f} s ({t_cli / t_k:.2f} x, target <= 0.1)")
    # a direct mount of the small files: the first scans, the second finds the scan kept
    mnt, cache = work / "mnt", work / "cache"
    mnt.mkdir()
    def mount(source: str) -> float:
        t = timed(lambda: subprocess.run([sys.executable, "-m", "refmount", "--cache-dir", str(cache), source, str(mnt)],
                                         check=True, capture_output=True))
        subprocess.run([sys.executable, "-m", "refmount", "umount", str(mnt)], check=True, capture_output=True)
        return t

    ten = work / "ten.json"
    ten.write_text(json.dumps({"version": 1, "refs": {".zgroup": '{"zarr_format":2}',
                                                      **{f"k{i}": [paths[0], i, 1] for i in range(10)}}}))
    floor = sorted(mount(str(ten)) for _ in range(3))[1]
    first = mount(str(work / "s_*.nc"))
    again = sorted(mount(str(work / "s_*.nc")) for _ in range(3))[1]
    print(f"direct mount of {args.files} files: first mount (scans) {first:.2f} s, remount (kept scan) {again:.2f} s; "
          f"the same command mounting a 10-key JSON set (the start-up floor: two interpreters, imports, libfuse) "
          f"{floor:.2f} s, so the kept scan costs {again - floor:+.2f} s (target <= 0.2)")
    if args.tiny:
        tiny_benchmark(work, args.tiny)
    subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()

#!/usr/bin/env python3
"""Soak: 16 reader processes for a few minutes over the loopback HTTP origin, through a mount
whose memory cache is five times smaller than the data; every byte checked, the daemon's RSS
sampled. Optionally with a faulty origin part of the time (``--faults``).

    .venv/bin/python benchmarks/soak.py --seconds 120 --faults
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

from refmount.rangeserver import RangeServer

CHUNK = 1 << 20


def reader(args) -> tuple[int, int, int]:
    root, seed, seconds, n, path = args
    rng = random.Random(seed)
    reads = wrong = eio = 0
    with open(path, "rb") as f:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            i = rng.randrange(n)
            try:
                with open(os.path.join(root, "a", str(i)), "rb") as chunk:
                    got = chunk.read()
            except OSError:
                eio += 1
                continue
            reads += 1
            f.seek(i * CHUNK)
            if got != f.read(CHUNK):
                wrong += 1
    return reads, wrong, eio


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmRSS:"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--readers", type=int, default=16)
    p.add_argument("--chunks", type=int, default=200)
    p.add_argument("--faults", action="store_true", help="a faulty origin (shifted 206, resets) a third of the time")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="refmount-soak-"))
    (work / "www").mkdir()
    data_path = work / "www" / "big.bin"
    with open(data_path, "wb") as f:
        f.write(os.urandom(args.chunks * CHUNK))
    with RangeServer(str(work / "www"), max_requests=10**7) as server:
        meta = {"shape": [args.chunks * CHUNK], "chunks": [CHUNK], "dtype": "|u1", "compressor": None,
                "filters": None, "fill_value": 0, "order": "C", "zarr_format": 2}
        refs = {".zgroup": '{"zarr_format":2}', "a/.zarray": json.dumps(meta)}
        refs.update({f"a/{i}": [f"{server.url}/big.bin", i * CHUNK, CHUNK] for i in range(args.chunks)})
        (work / "refs.json").write_text(json.dumps({"version": 1, "refs": refs}))
        mnt = work / "mnt"
        mnt.mkdir()
        cache = args.chunks * CHUNK // 5
        proc = subprocess.Popen([sys.executable, "-m", "refmount", "-f", "--log-level", "WARNING", "--cache-size",
                                 str(cache), "--failed-ttl", "1", str(work / "refs.json"), str(mnt)])
        while not os.path.ismount(mnt):
            time.sleep(0.05)
        samples = []
        try:
            with Pool(args.readers) as pool:
                result = pool.map_async(reader, [(str(mnt), n, args.seconds, args.chunks, str(data_path))
                                                 for n in range(args.readers)])
                began = time.monotonic()
                while not result.ready():
                    samples.append(rss(proc.pid))
                    if args.faults:
                        phase = int((time.monotonic() - began) / 5) % 6
                        server.fault = {1: "shift", 3: "reset"}.get(phase)
                    time.sleep(0.5)
                totals = [sum(x) for x in zip(*result.get())]
        finally:
            server.fault = None
            subprocess.run(["fusermount3", "-u", str(mnt)])
            proc.wait(timeout=30)
    reads, wrong, eio = totals
    print(f"soak: {args.readers} readers, {args.seconds:.0f} s, data {args.chunks} MiB, memory cache {cache >> 20} MiB"
          f"{', faulty origin a third of the time' if args.faults else ''}")
    print(f"  reads {reads}, wrong {wrong}, EIO {eio}, origin GETs {server.counts['GET']}")
    print(f"  daemon RSS: first {samples[0] >> 20} MiB, max {max(samples) >> 20} MiB, last {samples[-1] >> 20} MiB")
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()

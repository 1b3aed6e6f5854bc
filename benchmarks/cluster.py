#!/usr/bin/env python3
"""Cluster cache: N daemons with separate mountpoints sharing one --cache-dir (--shared-cache),
each reading the whole dataset over a 20 ms HTTP origin at the same time, against one lone
daemon; and what scraping the metrics endpoint once a second costs the daemon.

    .venv/bin/python benchmarks/cluster.py [--daemons 4] [--chunks 96]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

CHUNK = 2 << 20


def counts(url: str) -> dict:
    return json.loads(urllib.request.urlopen(f"{url}/__counts", timeout=10).read())


def mount(refs: Path, mnt: Path, *extra: str) -> subprocess.Popen:
    mnt.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "refmount", "-f", "--log-level", "WARNING", *extra, str(refs), str(mnt)])
    deadline = time.monotonic() + 60
    while not os.path.ismount(mnt):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"mount {mnt} failed")
        time.sleep(0.05)
    return proc


def unmount(mnt: Path, proc: subprocess.Popen) -> None:
    subprocess.run(["fusermount3", "-u", str(mnt)])
    proc.wait(timeout=30)


def walk(mnt: Path, n: int, data: bytes, out: list) -> None:
    began = time.perf_counter()
    for i in range(n):
        with open(mnt / "a" / str(i), "rb") as f:
            if f.read() != data[i * CHUNK : (i + 1) * CHUNK]:
                raise SystemExit(f"wrong bytes in chunk {i}")
    out.append(n * CHUNK / (time.perf_counter() - began) / 1e6)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--daemons", type=int, default=4)
    p.add_argument("--chunks", type=int, default=96)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="refmount-cluster-"))
    (work / "www").mkdir()
    data = os.urandom(args.chunks * CHUNK)
    (work / "www" / "f.bin").write_bytes(data)
    server = subprocess.Popen([sys.executable, "-m", "refmount.rangeserver", str(work / "www"), "0.02"],
                              stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    meta = {"shape": [args.chunks * CHUNK], "chunks": [CHUNK], "dtype": "|u1", "compressor": None, "filters": None,
            "fill_value": 0, "order": "C", "zarr_format": 2}
    refs = {".zgroup": '{"zarr_format":2}', "a/.zarray": json.dumps(meta)}
    refs.update({f"a/{i}": [f"{url}/f.bin", i * CHUNK, CHUNK] for i in range(args.chunks)})
    (work / "refs.json").write_text(json.dumps({"version": 1, "refs": refs}))
    try:
        # one daemon alone
        base = counts(url)
        proc = mount(work / "refs.json", work / "lone", "--cache-dir", str(work / "lone-cache"))
        lone: list = []
        walk(work / "lone", args.chunks, data, lone)
        unmount(work / "lone", proc)
        after = counts(url)
        lone_get, lone_bytes = after.get("GET", 0) - base.get("GET", 0), after.get("bytes", 0) - base.get("bytes", 0)
        # N daemons sharing one cache directory, all at once
        base = after
        procs = [mount(work / "refs.json", work / f"m{n}", "--cache-dir", str(work / "shared"), "--shared-cache")
                 for n in range(args.daemons)]
        rates: list = []
        threads = [threading.Thread(target=walk, args=(work / f"m{n}", args.chunks, data, rates)) for n in range(args.daemons)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for n, proc in enumerate(procs):
            unmount(work / f"m{n}", proc)
        after = counts(url)
        shared_get, shared_bytes = after.get("GET", 0) - base.get("GET", 0), after.get("bytes", 0) - base.get("bytes", 0)
        # the metrics endpoint scraped once a second
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = mount(work / "refs.json", work / "metrics", "--metrics-addr", str(port))
        idle0 = cpu_seconds(proc.pid)
        time.sleep(10)
        idle = cpu_seconds(proc.pid) - idle0
        scraped0 = cpu_seconds(proc.pid)
        for _ in range(10):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            time.sleep(1)
        scraped = cpu_seconds(proc.pid) - scraped0
        unmount(work / "metrics", proc)
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    mean = sum(rates) / len(rates)
    print(f"dataset {args.chunks} chunks of {CHUNK >> 20} MiB over HTTP with 20 ms per request")
    print(f"  lone daemon                 {lone[0]:8.0f} MB/s   {lone_get} GET, {lone_bytes / 1e6:.0f} MB from the origin")
    print(f"  {args.daemons} daemons, one shared cache {mean:8.0f} MB/s each (min {min(rates):.0f})   {shared_get} GET, "
          f"{shared_bytes / 1e6:.0f} MB from the origin")
    print(f"  ratios: origin bytes {shared_bytes / lone_bytes:.2f} x one daemon's (target <= 1.1), requests "
          f"{shared_get / lone_get:.2f} x (<= 1.1), each daemon's throughput {mean / lone[0]:.2f} x a lone one's (>= 0.7)")
    print(f"  metrics scraped once a second: {100 * max(scraped - idle, 0) / 10:.2f} % of a core (target < 1 %)")


if __name__ == "__main__":
    main()

"""A short soak (the long one is benchmarks/soak.py): 16 readers at once over HTTP through a
cache much smaller than the data, random chunks, every byte checked, the daemon's memory bounded."""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time

from refmount.rangeserver import RangeServer

CHUNK, N = 256 << 10, 160  # 40 MiB of chunks
CACHE = 8 << 20  # five times smaller than the data
SECONDS, READERS = 8.0, 16


def _daemon_rss(mountpoint: str) -> int:
    pid = subprocess.run(["pgrep", "-f", f"refmount --foreground.*{mountpoint}"], capture_output=True,
                         text=True).stdout.split()[0]
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmRSS:"))


def test_soak_sixteen_readers_small_cache(tmp_path, mount):
    data = os.urandom(CHUNK * N)
    www = tmp_path / "www"
    www.mkdir()
    (www / "big.bin").write_bytes(data)
    with RangeServer(str(www), max_requests=100_000) as server:
        meta = {"shape": [N * CHUNK], "chunks": [CHUNK], "dtype": "|u1", "compressor": None, "filters": None,
                "fill_value": 0, "order": "C", "zarr_format": 2}
        refs = {".zgroup": '{"zarr_format":2}', "a/.zarray": json.dumps(meta)}
        refs.update({f"a/{i}": [f"{server.url}/big.bin", i * CHUNK, CHUNK] for i in range(N)})
        path = tmp_path / "refs.json"
        path.write_text(json.dumps({"version": 1, "refs": refs}))
        with mount(str(path), cache_size=CACHE) as root:
            wrong, reads, errors = [], [0], []
            deadline = time.monotonic() + SECONDS

            def reader(seed: int) -> None:
                rng = random.Random(seed)
                while time.monotonic() < deadline:
                    i = rng.randrange(N) if rng.random() < 0.5 else (seed * 10 + reads[0]) % N  # random and runs
                    try:
                        with open(os.path.join(root, "a", str(i)), "rb") as f:
                            got = f.read()
                    except OSError as exc:
                        errors.append(exc)
                        continue
                    reads[0] += 1
                    if got != data[i * CHUNK : (i + 1) * CHUNK]:
                        wrong.append(i)

            threads = [threading.Thread(target=reader, args=(n,)) for n in range(READERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(SECONDS + 60)
            rss = _daemon_rss(root)
        assert not wrong and not errors
        assert reads[0] > N  # more reads than chunks: the cache was cycled through
        assert rss < 400 << 20, rss  # bounded by the cache, not by what was read (40 MiB many times)

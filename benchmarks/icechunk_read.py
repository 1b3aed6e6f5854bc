#!/usr/bin/env python3
"""P9: reading a whole Icechunk repository through a refmount mount against zarr reading the
same repository through the icechunk package in-process.

    .venv/bin/python benchmarks/icechunk_read.py [--quick] [--runs 3]

The icechunk package needs Python >= 3.12: the script makes a venv with it (``--peer-python``
names an interpreter that already has icechunk and zarr). That interpreter writes the
repository (float32 fields, zstd, one 2-D field per chunk, native chunks on local disk, and an
array of virtual chunks into local files) and does all the reading, so both sides decode with
the same zarr; only the path to the bytes differs. Every array read through the mount is
compared with what the package returned.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import Mounted, print_summary, row  # noqa: E402

WRITE = r"""
import os, sys, json, numpy as np, icechunk, zarr
os.environ["ICECHUNK_LOG"] = "error"
path, ext, nt, ny, nx = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
rng = np.random.default_rng(1)
cfg = icechunk.RepositoryConfig.default()
cfg.set_virtual_chunk_container(icechunk.VirtualChunkContainer(f"file://{ext}/", icechunk.local_filesystem_store(ext)))
repo = icechunk.Repository.create(icechunk.local_filesystem_storage(path), config=cfg,
                                  authorize_virtual_chunk_access={f"file://{ext}/": icechunk.credentials.LocalFileSystemAccess})
repo.save_config()
s = repo.writable_session("main")
g = zarr.group(store=s.store)
base = (np.linspace(200, 300, ny * nx, dtype="f4").reshape(ny, nx))
for name in ("t2m", "sst"):
    a = g.create_array(name, shape=(nt, ny, nx), chunks=(1, ny, nx), dtype="f4", compressors=[zarr.codecs.ZstdCodec(level=3)],
                       dimension_names=["time", "lat", "lon"])
    for t in range(nt):
        a[t] = base + rng.normal(0, 1, (ny, nx)).astype("f4").round(2)
# virtual: raw float32 fields in one local file per time step
v = g.create_array("raw", shape=(nt, ny, nx), chunks=(1, ny, nx), dtype="<f4", compressors=None)
specs = []
for t in range(nt):
    f = os.path.join(ext, f"raw{t}.bin")
    (base + t).astype("<f4").tofile(f)
    specs.append(icechunk.VirtualChunkSpec(index=[t, 0, 0], location=f"file://{f}", offset=0, length=ny * nx * 4))
s.store.set_virtual_refs("raw", specs)
print(s.commit("benchmark data"))
"""

READ = r"""
import os, sys, json, time, hashlib, numpy as np, zarr
os.environ["ICECHUNK_LOG"] = "error"
kind, target, ext = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
if kind == "icechunk":
    import icechunk
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(target),
                                    authorize_virtual_chunk_access={f"file://{ext}/": icechunk.credentials.LocalFileSystemAccess})
    group = zarr.open_group(repo.readonly_session("main").store, mode="r")
else:
    group = zarr.open_group(target, mode="r", zarr_format=3)
n, digests = 0, {}
for name in ("t2m", "sst", "raw"):
    values = group[name][...]
    n += values.nbytes
    digests[name] = hashlib.sha256(values.tobytes()).hexdigest()
print(json.dumps({"seconds": time.perf_counter() - t0, "bytes": n, "digests": digests}))
"""


def peer_python(given: str | None) -> str:
    if given:
        return given
    venv = Path(tempfile.gettempdir()) / "refmount-bench-icechunk"
    python = venv / "bin" / "python"
    if not python.exists():
        base = shutil.which("python3.12") or next(iter(sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))), None)
        if base is None:
            raise SystemExit("icechunk 2.x needs Python >= 3.12: pass --peer-python")
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "icechunk>=2", "zarr>=3.1"], check=True)
    return str(python)


def read(python: str, kind: str, target: str, ext: str) -> dict:
    out = subprocess.run([python, "-c", READ, kind, target, ext], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--peer-python", help="a Python >= 3.12 with icechunk 2.x and zarr 3")
    args = p.parse_args()
    nt, ny, nx = (4, 181, 360) if args.quick else (24, 721, 1440)
    python = peer_python(args.peer_python)
    work = Path(tempfile.mkdtemp(prefix="refmount-bench-ic-"))
    try:
        repo, ext, mnt = work / "repo", work / "ext", str(work / "mnt")
        ext.mkdir()
        subprocess.run([python, "-c", WRITE, str(repo), str(ext), str(nt), str(ny), str(nx)], check=True, capture_output=True)
        size = sum(f.stat().st_size for f in repo.rglob("*") if f.is_file()) + sum(f.stat().st_size for f in ext.iterdir())
        print(f"P9: Icechunk repository, 3 arrays of {nt}x{ny}x{nx} float32 ({size / 1e6:.0f} MB stored; 2 zstd native, 1 virtual)")
        flags = ["--allow-origin", "/", "--authorize-virtual", f"file://{ext}/", "--log-level", "WARNING"]
        peer, cold, warm = [], [], []
        for _ in range(args.runs):
            peer.append(read(python, "icechunk", str(repo), str(ext)))
            with Mounted([sys.executable, "-m", "refmount", "-f", *flags, str(repo), mnt], mnt):
                cold.append(read(python, "mount", mnt, str(ext)))
                warm.append(read(python, "mount", mnt, str(ext)))
        for result in cold + warm:
            if result["digests"] != peer[0]["digests"]:
                raise SystemExit(f"MISMATCH: {result['digests']} != {peer[0]['digests']}")
        rate = lambda results: statistics.median(r["bytes"] / r["seconds"] / 1e6 for r in results)  # noqa: E731
        row("zarr + icechunk package, in-process", f"{rate(peer):.0f} MB/s", f"{peer[0]['bytes'] / 1e6:.0f} MB decoded")
        row("zarr through a fresh refmount mount", f"{rate(cold):.0f} MB/s", f"ratio {rate(cold) / rate(peer):.2f}")
        row("zarr through the same mount again", f"{rate(warm):.0f} MB/s", f"ratio {rate(warm) / rate(peer):.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_summary()


if __name__ == "__main__":
    main()

"""``refmount demo``: the main job end to end on a generated archive.

Writes three small NetCDF4 files with h5py (a zlib+shuffle chunked temperature field, a
contiguous orography, coordinates), makes their kerchunk reference set (combined along time),
serves the originals from a loopback HTTP server, mounts the set, reads it back with xarray
through the mount, checks every value against h5py, prints what it read and the origin
requests, and unmounts. Where netCDF-C's ``ncdump`` is installed, it then mounts the decoded
view of the same set and checks what ``ncdump`` prints against h5py too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

NT, NY, NX = 8, 90, 180
FILES = 3


def write_archive(directory: str, files: int = FILES, nt: int = NT, ny: int = NY, nx: int = NX) -> list[str]:
    """NetCDF4 files of a (time, lat, lon) float32 field, one field per chunk, zlib + shuffle,
    plus a contiguous uncompressed orography and coordinates; returns their paths."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    lat = np.linspace(-89, 89, ny, dtype="f4")
    lon = np.linspace(1, 359, nx, dtype="f4")
    orog = (1000 * np.cos(np.radians(lat))[:, None] * np.sin(np.radians(lon))[None, :]).astype("f4")
    paths = []
    for n in range(files):
        path = os.path.join(directory, f"t2m_{n:02d}.nc")
        with h5py.File(path, "w") as f:
            f.attrs["title"] = "refmount demo"
            f.attrs["Conventions"] = "CF-1.8"
            t = f.create_dataset("time", data=np.arange(n * nt, (n + 1) * nt, dtype="i8") * 6)
            t.attrs["units"] = "hours since 2024-01-01"
            t.attrs["calendar"] = "standard"
            for name, data, units in (("lat", lat, "degrees_north"), ("lon", lon, "degrees_east")):
                d = f.create_dataset(name, data=data)
                d.attrs["units"] = units
            for name in ("time", "lat", "lon"):
                f[name].make_scale(name)
            field = 273.15 + 30 * np.cos(np.radians(lat))[None, :, None] + rng.normal(0, 2, (nt, ny, nx))
            t2m = f.create_dataset(
                "t2m", data=field.astype("f4"), chunks=(1, ny, nx), compression="gzip", shuffle=True
            )
            t2m.attrs["units"] = "K"
            t2m.attrs["long_name"] = "2 metre temperature"
            oro = f.create_dataset("orog", data=orog)
            oro.attrs["units"] = "m"
            for ds, dims in ((t2m, ("time", "lat", "lon")), (oro, ("lat", "lon"))):
                for axis, dim in enumerate(dims):
                    ds.dims[axis].attach_scale(f[dim])
        paths.append(path)
    return paths


def make_references(paths: list[str]) -> dict:
    """kerchunk references of ``paths`` combined along time."""
    from kerchunk.combine import MultiZarrToZarr
    from kerchunk.hdf import SingleHdf5ToZarr

    singles = []
    for path in paths:
        singles.append(SingleHdf5ToZarr(path, inline_threshold=300).translate())
    combined = MultiZarrToZarr(
        singles, concat_dims=["time"], identical_dims=["lat", "lon", "orog"], remote_protocol="file"
    )
    return combined.translate()


def _refmount(*args: str) -> None:
    """Run the ``refmount`` command line as a user would, showing the command."""
    import shlex
    import sys

    print("$ refmount " + " ".join(shlex.quote(a) for a in args))
    result = subprocess.run([sys.executable, "-m", "refmount", *args], capture_output=True, text=True, timeout=120)
    out = (result.stdout + result.stderr).strip()
    if out:
        print(out)
    if result.returncode:
        raise SystemExit(result.returncode)


def run(keep: str | None = None) -> int:
    """The demo in a temporary directory (removed at the end unless ``keep``)."""
    workdir = keep or tempfile.mkdtemp(prefix="refmount-demo-")
    try:
        return _run(workdir)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(workdir: str) -> int:
    import h5py
    import numpy as np
    import xarray as xr

    from refmount.rangeserver import RangeServer

    os.makedirs(workdir, exist_ok=True)
    data_dir = os.path.join(workdir, "originals")
    os.makedirs(data_dir, exist_ok=True)
    mountpoint = os.path.join(workdir, "mnt")
    os.makedirs(mountpoint, exist_ok=True)
    print(f"demo directory: {workdir}")
    paths = write_archive(data_dir)
    print(f"wrote {len(paths)} NetCDF4 files ({sum(os.path.getsize(p) for p in paths):,} bytes) with h5py")

    with RangeServer(data_dir) as server:
        # kerchunk reads the originals locally; the reference set points at the HTTP origin
        refs = make_references(paths)
        for value in refs["refs"].values():
            if isinstance(value, list):  # point every range at the HTTP origin
                value[0] = server.url + "/" + os.path.basename(value[0])
        refs_path = os.path.join(workdir, "t2m.json")
        with open(refs_path, "w") as f:
            json.dump(refs, f)
        print(f"reference set: {refs_path} ({len(refs['refs'])} keys), originals served at {server.url}")
        print()
        expected = np.concatenate([h5py.File(p, "r")["t2m"][:] for p in paths])

        log = os.path.join(workdir, "refmount.log")  # removed with the demo directory
        _refmount("--log-file", log, refs_path, mountpoint)
        try:
            print(f"$ ls {mountpoint}")
            print("  ".join(sorted(os.listdir(mountpoint))))
            print(f">>> xarray.open_zarr({mountpoint!r})")
            ds = xr.open_zarr(mountpoint)
            t2m = ds["t2m"].load()
            print(ds)
            print()
            if not np.array_equal(t2m.values, expected):
                print("MISMATCH: values read through the mount differ from h5py on the originals")
                return 1
            print(f"t2m {t2m.shape} read through the mount: mean {float(t2m.mean()):.3f} K, "
                  f"min {float(t2m.min()):.3f} K, max {float(t2m.max()):.3f} K")
            print("every value equals h5py on the originals")
            print(f"origin requests: {server.counts['GET']} GET, {server.counts['HEAD']} HEAD, "
                  f"{server.counts['bytes']:,} bytes")
            ds.close()
        finally:
            _refmount("umount", mountpoint)
        if shutil.which("ncdump"):
            print()
            print("the same set in the decoded view, read by netCDF-C's ncdump (a C client that cannot")
            print("decode shuffle+zlib itself):")
            _refmount("--view", "decoded", "--log-file", log, refs_path, mountpoint)
            try:
                url = f"file://{mountpoint}#mode=zarr,file"
                print(f"$ ncdump -v time '{url}'")
                out = subprocess.run(["ncdump", "-v", "time", url], capture_output=True, text=True, timeout=120)
                print(out.stdout.split("data:", 1)[-1].strip())
                values = subprocess.run(["ncdump", "-v", "t2m", url], capture_output=True, text=True, timeout=300).stdout
                printed = np.array([float(v) for v in values.split("t2m =", 2)[-1].split(";")[0].split(",")])
                if out.returncode or not np.allclose(printed, expected.ravel(), rtol=1e-6, atol=0):
                    print("MISMATCH: ncdump through the decoded view differs from h5py on the originals")
                    return 1
                print(f"ncdump -v t2m printed {printed.size} values, each equal to h5py's on the originals")
            finally:
                _refmount("umount", mountpoint)
    return 0

"""The decoded view, read by the real legacy clients (Debian's ncdump and GDAL) and by zarr."""

from __future__ import annotations

import errno
import json
from pathlib import Path
import math
import os
import re
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from refmount.index import Decoded, Dir, build_index, Inline, Range
from refmount.views.decoded import DecodedView

NT, NY, NX = 4, 12, 20
FILL = -9999.0


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """One NetCDF4 file (h5py): a shuffle+zlib field, a time coordinate, a sparse array with a
    fill value and never-written chunks, a big-endian array; its kerchunk references."""
    h5py = pytest.importorskip("h5py")
    from kerchunk.hdf import SingleHdf5ToZarr

    directory = tmp_path_factory.mktemp("legacy")
    path = directory / "era.nc"
    rng = np.random.default_rng(1)
    values = {}
    with h5py.File(path, "w") as f:
        time = f.create_dataset("time", data=np.arange(NT, dtype="i8") * 6)
        time.attrs["units"] = "hours since 2024-01-01"
        lat = f.create_dataset("lat", data=np.linspace(-60, 60, NY, dtype="f4"))
        lon = f.create_dataset("lon", data=np.linspace(0, 342, NX, dtype="f4"))
        for d in (time, lat, lon):
            d.make_scale(d.name[1:])
        t2m = (250 + 40 * rng.random((NT, NY, NX))).astype("f4")
        ds = f.create_dataset("t2m", data=t2m, chunks=(1, NY, NX), compression="gzip", shuffle=True)
        sparse = f.create_dataset("sparse", shape=(NT, NY, NX), dtype="f4", chunks=(1, NY, NX), fillvalue=FILL,
                                  compression="gzip", shuffle=True)
        sparse[1] = t2m[1] - 250  # chunks 0, 2 and 3 are never written
        be = f.create_dataset("be", data=(t2m[0] * 2).astype(">f4"))
        for d in (ds, sparse):
            for axis, name in enumerate(("time", "lat", "lon")):
                d.dims[axis].attach_scale(f[name])
        for axis, name in enumerate(("lat", "lon")):
            be.dims[axis].attach_scale(f[name])
        for name in ("time", "lat", "lon", "t2m", "sparse", "be"):
            values[name] = f[name][...]
    refs = SingleHdf5ToZarr(str(path), inline_threshold=0).translate()
    refs_path = directory / "refs.json"
    refs_path.write_text(json.dumps(refs))
    return refs_path, refs, values


@pytest.fixture(scope="module")
def decoded(archive, tmp_path_factory):
    import refmount
    refs_path, _, _ = archive
    directory = tmp_path_factory.mktemp("mnt")
    (directory / "mnt").mkdir()
    with refmount.mounted(str(refs_path), str(directory / "mnt"), view="decoded",
                          log_file=str(directory / "log")) as root:
        yield root


def _ncdump(root: str, variable: str) -> list:
    out = subprocess.run(["ncdump", "-v", variable, f"file://{root}#mode=zarr,file"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    body = out.split("data:", 1)[1]
    match = re.search(rf"\b{variable} =\s*(.*?);", body, re.S)
    return [None if v.strip() == "_" else float(v) for v in match.group(1).split(",")]


def _needs(tool: str) -> None:
    assert shutil.which(tool), f"{tool} is missing (scripts/dev.sh installs netcdf-bin and gdal-bin)"


def test_ncdump_prints_what_h5py_reads(decoded, archive):
    _needs("ncdump")
    _, _, values = archive
    t2m = _ncdump(decoded, "t2m")
    assert np.allclose(t2m, values["t2m"].ravel(), rtol=1e-6, atol=0)  # ncdump prints 7 digits
    assert _ncdump(decoded, "time") == values["time"].tolist()
    be = _ncdump(decoded, "be")  # big-endian in the original: Debian's ncdump would byte-swap it
    assert np.allclose(be, values["be"].ravel(), rtol=1e-6, atol=0)
    sparse = [FILL if v is None else v for v in _ncdump(decoded, "sparse")]  # "_" where it marks fill
    expected = values["sparse"].ravel()
    assert (expected == FILL).sum() == 3 * NY * NX  # three never-written chunks read as the fill value
    assert np.allclose(sparse, expected, rtol=1e-6, atol=1e-5)


def test_gdal_statistics_equal_numpy(decoded, archive, tmp_path):
    _needs("gdal_translate")
    _, _, values = archive
    tif = tmp_path / "slice.tif"
    result = subprocess.run(["gdal_translate", "-q", f'ZARR:"{decoded}":/t2m:2', str(tif)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    info = subprocess.run(["gdalinfo", "-stats", str(tif)], capture_output=True, text=True, check=True).stdout
    stats = {k: float(v) for k, v in re.findall(r"STATISTICS_(\w+)=([-\d.eE+]+)", info)}
    plane = values["t2m"][2].astype("f8")
    assert math.isclose(stats["MEAN"], plane.mean(), rel_tol=1e-6)
    assert math.isclose(stats["MINIMUM"], plane.min(), rel_tol=1e-6)
    assert math.isclose(stats["MAXIMUM"], plane.max(), rel_tol=1e-6)
    assert math.isclose(stats["STDDEV"], plane.std(), rel_tol=1e-5)


def test_chunks_are_numcodecs_decodes_with_exact_sizes(decoded, archive):
    import numcodecs

    _, refs, values = archive
    zarray = json.loads(refs["refs"]["t2m/.zarray"])
    assert [f["id"] for f in zarray["filters"]] == ["shuffle", "zlib"]
    view_zarray = json.loads(open(os.path.join(decoded, "t2m", ".zarray")).read())
    assert view_zarray["compressor"] is None and view_zarray["filters"] is None
    assert view_zarray["dtype"] == "<f4" and view_zarray["chunks"] == zarray["chunks"]
    assert view_zarray["fill_value"] == zarray["fill_value"] and view_zarray["shape"] == zarray["shape"]
    codecs = [numcodecs.get_codec(f) for f in zarray["filters"]]
    for i in range(NT):
        url, offset, length = refs["refs"][f"t2m/{i}.0.0"]
        with open(url.replace("file://", ""), "rb") as f:
            f.seek(offset)
            raw = f.read(length)
        for codec in reversed(codecs):
            raw = codec.decode(raw)
        chunk = os.path.join(decoded, "t2m", f"{i}.0.0")
        assert os.stat(chunk).st_size == NY * NX * 4
        with open(chunk, "rb") as f:
            assert f.read() == bytes(raw) == values["t2m"][i].tobytes()
    be = os.path.join(decoded, "be", "0.0")
    assert json.loads(open(os.path.join(decoded, "be", ".zarray")).read())["dtype"] == "<f4"
    assert open(be, "rb").read() == values["be"].astype("<f4").tobytes()
    assert not os.path.exists(os.path.join(decoded, "sparse", "0.0.0"))  # still missing: fill value


def test_consolidated_metadata_opens_with_zarr(decoded, archive):
    import xarray as xr

    _, _, values = archive
    meta = json.loads(open(os.path.join(decoded, ".zmetadata")).read())
    assert meta["zarr_consolidated_format"] == 1
    assert meta["metadata"]["t2m/.zarray"]["filters"] is None
    assert "sparse/.zattrs" in meta["metadata"] and ".zgroup" in meta["metadata"]
    ds = xr.open_zarr(decoded, consolidated=True, mask_and_scale=False)
    np.testing.assert_array_equal(ds["t2m"].values, values["t2m"])
    np.testing.assert_array_equal(ds["sparse"].values, values["sparse"])
    np.testing.assert_array_equal(ds["be"].values, values["be"])


def _view(refs: dict[str, object]) -> DecodedView:
    entries = [(k, Inline(json.dumps(v).encode()) if isinstance(v, dict) else v) for k, v in refs.items()]
    return DecodedView(build_index(entries))


def test_unknown_codecs_and_vlen_strings_are_left_out_at_mount(tmp_path, mount, caplog):
    import numcodecs

    good = np.arange(6, dtype="<i4")
    raw = numcodecs.Zlib(1).encode(good.tobytes())
    (tmp_path / "blob").write_bytes(raw)
    base = {"zarr_format": 2, "shape": [6], "chunks": [6], "fill_value": 0, "order": "C", "filters": None}
    refs = {
        ".zgroup": {"zarr_format": 2},
        "good/.zarray": dict(base, dtype="<i4", compressor={"id": "zlib", "level": 1}),
        "good/0": Range(str(tmp_path / "blob"), 0, len(raw)),
        "odd/.zarray": dict(base, dtype="<i4", compressor={"id": "no-such-codec"}),
        "odd/0": Range(str(tmp_path / "blob"), 0, len(raw)),
        "odd2/.zarray": dict(base, dtype="<i4", compressor={"id": "no-such-codec"}),
        "grib/.zarray": dict(base, dtype="<f4", compressor=None, filters=[{"id": "grib", "var": "t"}]),
        "names/.zarray": dict(base, dtype="|O", compressor=None, filters=[{"id": "vlen-utf8"}]),
        "names/.zattrs": {"_ARRAY_DIMENSIONS": ["x"]},
        "names/0": Range(str(tmp_path / "blob"), 0, len(raw)),
    }
    with caplog.at_level("WARNING", logger="refmount.views"):
        view = _view(refs)
    assert [r.getMessage() for r in caplog.records if "names" in r.getMessage()] == [
        "decoded view: array names left out: dtype '|O' (variable-length) has no fixed width to serve"
    ]
    # one warning per missing codec, naming every array it leaves out
    odd = [r.getMessage() for r in caplog.records if "no-such-codec" in r.getMessage()]
    assert len(odd) == 1 and odd[0].endswith("left out: odd, odd2"), odd
    assert any("'grib'" in r.getMessage() and r.getMessage().endswith("left out: grib") for r in caplog.records)
    assert view.node("names") is None and view.node("names/0") is None and view.node("odd/0") is None
    assert sorted(n for n, _ in view.listdir("")) == [".zgroup", ".zmetadata", "good"]
    assert "names/.zattrs" not in json.loads(view.node(".zmetadata").data)["metadata"]
    assert isinstance(view.node("good/0"), Decoded) and view.node(".zgroup") == Inline(b'{"zarr_format": 2}')

    refs_file = tmp_path / "refs.json"
    encoded = {k: (json.dumps(v) if isinstance(v, dict) else [v.url, v.offset, v.length]) for k, v in refs.items()}
    refs_file.write_text(json.dumps({"version": 1, "refs": encoded}))
    caplog.clear()
    with caplog.at_level("WARNING", logger="refmount"), mount(str(refs_file), view="decoded") as root:
        assert open(os.path.join(root, "good", "0"), "rb").read() == good.tobytes()
        assert not os.path.exists(os.path.join(root, "odd", "0"))  # left out: never garbage, never EIO per read
        assert sorted(os.listdir(root)) == [".zgroup", ".zmetadata", "good"]
    # what the daemon warned of as it started is said where it was mounted from, not only in its log
    said = [r.getMessage() for r in caplog.records if r.name == "refmount"]
    assert any("no-such-codec" in m and m.endswith("left out: odd, odd2") for m in said), said
    log = (tmp_path / "refmount.log").read_text()
    assert len([line for line in log.splitlines() if "no-such-codec" in line]) == 1 and "left out: odd, odd2" in log


def test_a_reference_longer_than_its_original_fails_at_the_first_short_read(tmp_path, http_origin, mount):
    """A real scan_grib output claims 1.6 GB for a 1 KB file: the decoded view asks for the first
    block, gets fewer bytes than asked and fails -- it does not request the whole claimed length."""
    (http_origin.dir / "small.bin").write_bytes(bytes(1024))
    meta = {"zarr_format": 2, "shape": [400_000_000], "chunks": [400_000_000], "dtype": "<f4", "fill_value": 0,
            "order": "C", "filters": None, "compressor": {"id": "zlib", "level": 1}}
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"version": 1, "refs": {".zgroup": '{"zarr_format":2}', "v/.zarray": json.dumps(meta),
                                                       "v/0": [f"{http_origin.url}/small.bin", 0, 1_600_000_000]}}))
    with mount(str(refs), view="decoded", cache_size=64 << 20) as root:
        with pytest.raises(OSError) as err:
            with open(os.path.join(root, "v", "0"), "rb") as f:
                f.read(4096)
        assert err.value.errno == 5
    assert http_origin.counts["GET"] <= 3 and http_origin.counts["bytes"] <= 3 * 1024


COMPOUND = Path(__file__).resolve().parent.parent / "data" / "kerchunk_compound"


def test_kerchunk_compound_datasets_with_a_string_field_in_every_view(caplog):
    """kerchunk's three forms of an HDF5 compound dataset with a variable-length string field
    (``tests/data/kerchunk_compound``): the raw view serves what kerchunk wrote; the decoded view
    serves the fixed-size layout (``leave``: the numeric fields exact) and leaves out, with one
    warning each, what has no fixed width (an object field: ``null``; strings: ``embed``) --
    never a chunk that fails on every read."""
    import logging

    import refmount

    with h5py.File(COMPOUND / "tower.h5") as f:
        rows = f["obs"][...]
        stored = [f["obs"].id.read_direct_chunk((i,))[1] for i in (0, 4)]
    with refmount.open(str(COMPOUND / "tower.leave.json"), view="raw") as engine:
        assert [engine.read("obs/0"), engine.read("obs/1")] == stored
    with refmount.open(str(COMPOUND / "tower.leave.json"), view="decoded") as engine:
        zarray = json.loads(engine.read("obs/.zarray"))
        layout = np.dtype([tuple(f) for f in zarray["dtype"]])
        got = np.concatenate([np.frombuffer(engine.read(f"obs/{i}"), dtype=layout) for i in (0, 1)])[:6]
        for field in ("time", "temp", "flag"):
            np.testing.assert_array_equal(got[field], rows[field])
    for mode in ("null", "embed"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="refmount.views"):
            with refmount.open(str(COMPOUND / f"tower.{mode}.json"), view="decoded") as engine:
                assert [k for k in engine.walk() if k.startswith("obs")] == []
        assert "array obs left out" in caplog.text and "no fixed width" in caplog.text, mode
        with refmount.open(str(COMPOUND / f"tower.{mode}.json"), view="raw") as engine:
            assert engine.read("obs/.zarray") and len(list(engine.walk("obs"))) == 4  # served as written


def test_decoded_chunks_read_whole_leave_memory_and_come_back_exactly(archive, tmp_path, http_origin, mount):
    from tests.conftest import run_cli

    _, refs, values = archive
    url, _, _ = refs["refs"]["t2m/0.0.0"]
    shutil.copy(url.replace("file://", ""), http_origin.dir / "era.nc")
    remote = json.loads(json.dumps(refs).replace(url, f"{http_origin.url}/era.nc"))
    path = tmp_path / "remote.json"
    path.write_text(json.dumps(remote))
    with mount(str(path), view="decoded", prefetch=False) as root:
        chunk = os.path.join(root, "t2m", "0.0.0")
        with open(chunk, "rb") as f:
            assert f.read() == values["t2m"][0].tobytes()
        stats = json.loads(run_cli("stats", "--json", root).stdout)
        assert stats["memory_cache_entries"] == 0 and stats["decoded_chunks"] == 1  # the kernel has it now
        gets = http_origin.counts["GET"]
        with open(chunk, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        with open(chunk, "rb") as f:
            f.seek(100)
            assert f.read() == values["t2m"][0].tobytes()[100:]
        assert http_origin.counts["GET"] == gets + 1  # fetched and decoded again, exactly


def test_a_root_array_left_out_leaves_an_empty_root(tmp_path, mount, caplog):
    """A reference set whose only array sits at the root (tifffile writes these) with a codec
    that is not installed here: the decoded view still mounts, its root an empty directory."""
    (tmp_path / "blob").write_bytes(b"\x01" * 64)
    base = {"zarr_format": 2, "shape": [2, 8], "chunks": [1, 8], "fill_value": 0, "order": "C", "dtype": "<u4"}
    refs = {".zarray": dict(base, compressor={"id": "zlib"}, filters=[{"id": "imagecodecs_no_such", "dist": 1}]),
            ".zattrs": {"_ARRAY_DIMENSIONS": ["y", "x"]},
            "0.0": Range(str(tmp_path / "blob"), 0, 32), "1.0": Range(str(tmp_path / "blob"), 32, 32)}
    with caplog.at_level("WARNING", logger="refmount.views"):
        view = _view(refs)
    assert any(r.getMessage().endswith("left out: /") for r in caplog.records)
    assert isinstance(view.node(""), Dir) and view.node("0.0") is None and view.node(".zarray") is None
    assert [name for name, _ in view.listdir("")] == [".zmetadata"]
    assert json.loads(view.node(".zmetadata").data)["metadata"] == {}

    refs_file = tmp_path / "refs.json"
    encoded = {k: (json.dumps(v) if isinstance(v, dict) else [v.url, v.offset, v.length]) for k, v in refs.items()}
    refs_file.write_text(json.dumps({"version": 1, "refs": encoded}))
    with mount(str(refs_file), view="decoded") as root:  # (the root used to be missing: no mount at all)
        assert os.listdir(root) == [".zmetadata"] and not os.path.exists(os.path.join(root, "0.0"))
    with mount(str(refs_file)) as root:  # the raw view has it all
        assert sorted(os.listdir(root)) == [".zarray", ".zattrs", "0.0", "1.0"]


def test_a_chunk_larger_than_the_memory_cache_fails_at_once_and_the_mount_says_so(tmp_path, mountpoint):
    """A decoded chunk is kept whole between the kernel's reads: one larger than the cache was
    fetched and decoded again for every read (hours for gigabytes) and held memory past the
    bound. It is EIO at once, with the reason; the command that mounts warns of it."""
    import zlib

    import refmount
    from refmount.errors import FetchError
    from tests.conftest import run_cli

    values = np.arange(8192, dtype="<f8")  # one chunk of 64 KiB decoded
    blob = zlib.compress(values.tobytes())
    (tmp_path / "blob").write_bytes(blob)
    meta = {"zarr_format": 2, "shape": [8192], "chunks": [8192], "dtype": "<f8", "compressor": {"id": "zlib", "level": 1},
            "filters": None, "fill_value": None, "order": "C"}
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"version": 1, "refs": {".zgroup": '{"zarr_format":2}', "v/.zarray": json.dumps(meta),
                                                       "v/0": [str(tmp_path / "blob"), 0, len(blob)]}}))
    with refmount.open(str(refs), view="decoded", cache_size="32KiB") as engine:
        with pytest.raises(FetchError, match=r"decodes to 65536 bytes, more than the memory cache holds \(32768 bytes\).*--cache-size"):
            engine.read("v/0")
    with refmount.open(str(refs), view="decoded", cache_size="1MiB") as engine:
        assert engine.read("v/0") == values.tobytes()

    mounted = run_cli("--view", "decoded", "--cache-size", "32KiB", "--log-file", tmp_path / "log", refs, mountpoint)
    try:
        assert mounted.returncode == 0, mounted.stderr
        assert ("refmount: warning: decoded chunks of up to 65536 bytes do not fit the memory cache (--cache-size "
                "32768 bytes): reads of them fail (EIO)") in mounted.stderr
        with pytest.raises(OSError) as failed:
            open(os.path.join(mountpoint, "v", "0"), "rb").read()
        assert failed.value.errno == errno.EIO
    finally:
        run_cli("umount", mountpoint)
    assert "more than the memory cache holds" in (tmp_path / "log").read_text()


@pytest.mark.parametrize("root_array", [False, True])
def test_nested_chunk_keys_are_decoded_too(tmp_path, mount, root_array):
    """A Zarr v2 array with ``dimension_separator: "/"`` keeps its chunks in nested directories
    (``a/0/1``); kerchunk's ``single_zarr`` references them so. The decoded view decodes them
    like any chunk -- served as they were, they would be compressed bytes under a ``.zarray``
    that says none."""
    import numcodecs
    import zarr

    values = np.arange(120, dtype=">i4").reshape(10, 12)
    codec = numcodecs.Zlib(level=1)
    meta = {"zarr_format": 2, "shape": [10, 12], "chunks": [3, 5], "dtype": ">i4", "compressor": codec.get_config(),
            "filters": None, "fill_value": 0, "order": "C", "dimension_separator": "/"}
    prefix = "" if root_array else "a/"
    blob, refs = bytearray(), {".zgroup": json.dumps({"zarr_format": 2})} if not root_array else {}
    refs[prefix + ".zarray"] = json.dumps(meta)
    for i in range(4):
        for j in range(3):
            chunk = np.zeros((3, 5), ">i4")
            part = values[3 * i:3 * i + 3, 5 * j:5 * j + 5]
            chunk[:part.shape[0], :part.shape[1]] = part
            data = codec.encode(chunk.tobytes())
            refs[f"{prefix}{i}/{j}"] = [str(tmp_path / "blob"), len(blob), len(data)]
            blob += data
    (tmp_path / "blob").write_bytes(bytes(blob))
    (tmp_path / "refs.json").write_text(json.dumps({"version": 1, "refs": refs}))
    with mount(str(tmp_path / "refs.json"), view="decoded") as root:
        array = os.path.join(root, prefix.rstrip("/"))
        meta = json.loads(open(os.path.join(array, ".zarray")).read())
        assert (meta["compressor"], meta["dtype"], meta["dimension_separator"]) == (None, "<i4", "/")
        got = open(os.path.join(array, "1", "2"), "rb").read()
        want = np.zeros((3, 5), "<i4")
        want[:, :2] = values[3:6, 10:12]
        assert got == want.tobytes()
        opened = zarr.open_array(array, mode="r", zarr_format=2)
        np.testing.assert_array_equal(opened[...], values)

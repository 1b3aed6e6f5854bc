"""netCDF3 originals (classic, 64-bit offset, CDF-5) written by netCDF4-python: scanned without a
netCDF library, every value read through the mount (xarray; ncdump on the decoded view) and
through fsspec's ReferenceFileSystem equals what netCDF4 reads from the original."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.views.test_decoded import _ncdump, _needs

netCDF4 = pytest.importorskip("netCDF4")

FORMATS = ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"]


def _write(path, fmt: str, start: int = 0, steps: int = 4, units: str = "hours since 2000-01-01", records=True,
           label=True):
    """Record variables of several types interleaved (time, x, b[, u64]), static ones (lat, a char
    array, a scalar), fill values, scale_factor, global attributes."""
    with netCDF4.Dataset(path, "w", format=fmt) as d:
        d.title = "nc3 test"
        d.setncattr("numbers", np.array([1, 2, 3], "i4"))
        d.createDimension("time", None if records else steps)
        d.createDimension("lat", 3)
        d.createDimension("lon", 5)
        d.createDimension("nchar", 4)
        t = d.createVariable("time", "f8", ("time",))
        t.units = units
        x = d.createVariable("x", "i2", ("time", "lat", "lon"), fill_value=-99)
        x.scale_factor = 0.5
        b = d.createVariable("b", "i1", ("time",))
        d.createVariable("lat", "f4", ("lat",))[:] = [10, 20, 30]
        if label:  # Debian's ncdump crashes on any fixed-length string array (legacy-clients.md)
            d.createVariable("label", "S1", ("lat", "nchar"))[:] = np.array([list("abcd"), list("ef  "), list("gh\0\0")], "S1")
        d.createVariable("scalar", "f4", ()).assignValue(3.5)
        if fmt == "NETCDF3_64BIT_DATA":
            d.createVariable("u64", "u8", ("time", "lon"))[:steps] = np.arange(steps * 5, dtype="u8").reshape(steps, 5) + 2**63
        t[:steps] = np.arange(start, start + steps) * 6.0
        x[: steps - 1] = np.arange((steps - 1) * 15).reshape(steps - 1, 3, 5) + start  # the last record: fill
        b[:steps] = (np.arange(steps) * (-1) ** np.arange(steps)).astype("i1")
    return str(path)


def _original(path):
    with netCDF4.Dataset(path) as d:
        d.set_auto_maskandscale(False)
        d.set_auto_chartostring(False)
        return {name: v[...] for name, v in d.variables.items()}


def _same(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    if expected.dtype.kind in "fc":
        np.testing.assert_array_equal(actual, expected)
    else:
        assert actual.tolist() == expected.tolist()


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_netcdf3_format_reads_the_same_through_the_mount(tmp_path, mount, fmt):
    import zarr

    path = _write(tmp_path / f"{fmt}.nc", fmt)
    expected = _original(path)
    with mount(path, cache_dir=str(tmp_path / "cache")) as root:
        group = zarr.open_group(root, mode="r", zarr_format=2)
        assert sorted(group.array_keys()) == sorted(expected)
        for name, values in expected.items():
            array = group[name][...]
            assert array.dtype.byteorder in "><|=" and array.dtype.newbyteorder("=") == values.dtype.newbyteorder("=")
            _same(array, values)
        assert group.attrs["title"] == "nc3 test" and group.attrs["numbers"] == [1, 2, 3]
        assert group["x"].attrs["_ARRAY_DIMENSIONS"] == ["time", "lat", "lon"] and group["x"].fill_value == -99
        assert group["x"].chunks == (1, 3, 5)  # one chunk per record


def test_ncdump_reads_a_netcdf3_original_through_the_decoded_view(tmp_path, mount):
    _needs("ncdump")
    path = _write(tmp_path / "c.nc", "NETCDF3_64BIT_OFFSET", label=False)
    expected = _original(path)
    with mount(path, view="decoded", cache_dir=str(tmp_path / "cache")) as root:
        assert _ncdump(root, "time") == expected["time"].tolist()
        x = _ncdump(root, "x")  # packed: ncdump prints the stored shorts, "_" for the fill value
        assert [-99 if v is None else v for v in x] == expected["x"].ravel().tolist()


def test_netcdf3_files_combine_along_time_and_read_through_fsspec(tmp_path):
    import fsspec
    import xarray

    a = _write(tmp_path / "a.nc", "NETCDF3_CLASSIC", 0, 4)
    b = _write(tmp_path / "b.nc", "NETCDF3_CLASSIC", 4, 3, units="hours since 2000-01-01 00:00:00")
    with netCDF4.Dataset(b, "a") as d:  # other units, same instants
        d["time"].units = "days since 2000-01-01"
        d["time"][:] = np.arange(4, 7) * 6.0 / 24
    out = tmp_path / "refs.json"
    result = run_cli("scan", a, b, "-o", str(out))
    assert result.returncode == 0, result.stderr
    fs = fsspec.filesystem("reference", fo=json.loads(out.read_text()))
    ds = xarray.open_dataset(fs.get_mapper(""), engine="zarr", consolidated=False, zarr_format=2)
    assert (ds["time"].values - np.datetime64("2000-01-01")).astype("timedelta64[h]").astype(int).tolist() == \
        list(range(0, 42, 6))
    both = [xarray.open_dataset(p) for p in (a, b)]
    np.testing.assert_array_equal(ds["x"].values, np.concatenate([d["x"].values for d in both]), strict=True)


def test_a_record_variable_that_is_the_only_one_has_no_padding(tmp_path):
    """With one record variable, records are not padded to 4 bytes: an i1 record is 1 byte."""
    import fsspec
    import zarr

    path = tmp_path / "one.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as d:
        d.createDimension("t", None)
        d.createVariable("v", "i1", ("t",))[:7] = np.arange(7, dtype="i1")
    assert run_cli("scan", str(path), "-o", str(tmp_path / "r.json")).returncode == 0
    fs = fsspec.filesystem("reference", fo=str(tmp_path / "r.json"))
    assert zarr.open_group(fs.get_mapper(""), mode="r", zarr_format=2)["v"][...].tolist() == list(range(7))


def test_a_truncated_or_garbled_netcdf3_file_is_one_line(tmp_path):
    path = _write(tmp_path / "t.nc", "NETCDF3_CLASSIC", records=False)
    data = open(path, "rb").read()
    (tmp_path / "short.nc").write_bytes(data[:60])  # the header ends early
    (tmp_path / "cut.nc").write_bytes(data[:-20])  # the last variable's data is cut
    garbled = bytearray(data)
    garbled[16:20] = (0x7FFFFFF0).to_bytes(4, "big")  # the first dimension name's length: 2 GB
    (tmp_path / "garbled.nc").write_bytes(bytes(garbled))
    result = run_cli("scan", str(tmp_path / "garbled.nc"), "-o", str(tmp_path / "g.json"))
    assert result.returncode == 1 and "garbled.nc: not a readable netCDF3 file" in result.stderr, result.stderr
    result = run_cli("scan", str(tmp_path / "short.nc"), "-o", str(tmp_path / "x.json"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "short.nc: not a readable netCDF3 file (the header ends early" in result.stderr
    result = run_cli("scan", str(tmp_path / "cut.nc"), "-o", str(tmp_path / "y.json"))
    assert result.returncode == 0 and "runs past the end of the file" in result.stderr, result.stderr
    refs = json.loads((tmp_path / "y.json").read_text())["refs"]
    assert "time/.zarray" in refs and "scalar/.zarray" not in refs  # scalar is last in the file: left out
    assert all(v[1] + v[2] <= len(data) - 20 for v in refs.values() if isinstance(v, list))


def test_a_directory_of_originals_is_scanned_whole(tmp_path):
    """A directory names its netCDF/HDF5 files (``.nc``, ``.cdf``, ``.h5``...), nothing else."""
    archive = tmp_path / "archive"
    archive.mkdir()
    _write(archive / "a.nc", "NETCDF3_CLASSIC", 0, 4)
    _write(archive / "b.cdf", "NETCDF3_CLASSIC", 4, 2)
    (archive / "notes.txt").write_text("not an original")
    out = tmp_path / "refs.json"
    result = run_cli("scan", str(archive), "-o", str(out))
    assert result.returncode == 0 and "scanned 2 file(s)" in result.stdout, result.stdout + result.stderr
    assert json.loads(json.loads(out.read_text())["refs"]["x/.zarray"])["shape"] == [6, 3, 5]


def test_a_garbled_record_count_or_dimension_order_costs_no_memory(tmp_path):
    """The record count is checked against the file's size before anything is built from it
    (a fuzzed count of 1.5 billion records took 24 GB); the record dimension anywhere but
    first is an invalid header: a one-line error. Scanned in a process allowed 1.5 GB."""
    path = _write(tmp_path / "t.nc", "NETCDF3_CLASSIC")
    data = bytearray(open(path, "rb").read())
    data[4:8] = (0x58000000).to_bytes(4, "big")  # numrecs
    (tmp_path / "many.nc").write_bytes(bytes(data))
    limited = "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29)); " \
              "sys.argv = ['refmount', *sys.argv[1:]]; runpy.run_module('refmount', run_name='__main__')"
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", limited, "scan", str(tmp_path / "many.nc"), "-o",
                             str(tmp_path / "m.json")], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr, result.stderr
    assert result.returncode == 0 and "runs past the end of the file" in result.stderr, result.stderr
    refs = json.loads((tmp_path / "m.json").read_text())["refs"]
    assert "lat/.zarray" in refs and "x/.zarray" not in refs  # static variables kept, record ones out
    with netCDF4.Dataset(tmp_path / "two.nc", "w", format="NETCDF3_CLASSIC") as d:
        d.createDimension("t", None)
        d.createDimension("x", 2)
        d.createVariable("v", "i2", ("t", "x"))[:3] = np.arange(6).reshape(3, 2)
        d.createVariable("w", "i2", ("x",))[:] = [7, 8]
    data = bytearray(open(tmp_path / "two.nc", "rb").read())
    ids = data.index(b"v\0\0\0") + 4 + 4  # v's name, then its dimension count (2): the ids follow
    data[ids + 4 : ids + 8] = (0).to_bytes(4, "big")  # v(t, t)
    (tmp_path / "twice.nc").write_bytes(bytes(data))
    result = run_cli("scan", str(tmp_path / "twice.nc"), "-o", str(tmp_path / "t.json"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "twice.nc: not a readable netCDF3 file (variable v has the record dimension in a place other than first)" \
        in result.stderr, result.stderr
    assert not (tmp_path / "t.json").exists()

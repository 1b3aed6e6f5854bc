"""NetCDF4 files written by netCDF4-python (groups, fill values, never-written chunks, strings)
and HDF5 layouts written by h5py (a large contiguous variable split into chunks): every value read
through the mount and through fsspec equals what netCDF4 / h5py read from the original."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from refmount.scan import hdf5 as scan_hdf5
from refmount.scan import model as scan_model
from refmount.scan import scan
from tests.conftest import run_cli

netCDF4 = pytest.importorskip("netCDF4")


def _write(path) -> str:
    with netCDF4.Dataset(path, "w", format="NETCDF4") as d:
        d.title = "netCDF4 layouts"
        d.createDimension("time", None)
        d.createDimension("y", 6)
        d.createDimension("x", 8)
        d.createDimension("n", 3)
        t = d.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t[:4] = [0, 1, 2, 3]
        temp = d.createVariable("temp", "f4", ("time", "y", "x"), chunksizes=(1, 3, 4), zlib=True, shuffle=True,
                                fill_value=-999.0)
        temp.scale_factor = 0.5
        temp[0] = np.arange(48, dtype="f4").reshape(6, 8)
        temp[2, :3, :4] = 7  # chunks never written: the fill value
        station = d.createVariable("station", str, ("n",))
        station[:] = np.array(["alpha", "β", ""], dtype=object)
        code = d.createVariable("code", "S1", ("n", "x"))
        code[:] = netCDF4.stringtochar(np.array(["abc", "de", "f"], dtype="S8"))
        obs = d.createGroup("obs")
        obs.site = "roof"
        inner = obs.createGroup("inner")
        v = inner.createVariable("v", "i2", ("y",), fill_value=-1)
        v[:4] = [1, 2, 3, 4]
        obs.createVariable("u", "u8", ("x",))[:] = np.arange(8, dtype="u8") * 2**40
    return str(path)


def _netcdf_values(path) -> dict:
    out = {}
    with netCDF4.Dataset(path) as d:
        d.set_auto_maskandscale(False)
        d.set_auto_chartostring(False)

        def walk(group, prefix):
            for name, var in group.variables.items():
                out[prefix + name] = var[...]
            for name, sub in group.groups.items():
                walk(sub, f"{prefix}{name}/")
        walk(d, "")
    return out


def test_netcdf4_groups_fill_values_and_strings_read_the_same(tmp_path, mount):
    import zarr

    path = _write(tmp_path / "layouts.nc")
    expected = _netcdf_values(path)
    out = tmp_path / "refs.json"
    result = run_cli("scan", path, "-o", str(out))
    assert result.returncode == 0 and "left out" not in result.stderr, result.stderr
    with mount(str(out)) as root:
        group = zarr.open_group(root, mode="r", zarr_format=2)
        assert group.attrs["title"] == "netCDF4 layouts" and group["obs"].attrs["site"] == "roof"
        for name, values in expected.items():
            got = group[name][...]
            if values.dtype.kind == "O":
                assert got.tolist() == values.tolist(), name
            else:
                np.testing.assert_array_equal(got, np.asarray(values), err_msg=name)
        assert group["temp"].fill_value == -999 and group["temp"].attrs["scale_factor"] == 0.5
        assert group["obs/inner/v"].attrs["_ARRAY_DIMENSIONS"] == ["y"]
    refs = json.loads(out.read_text())["refs"]
    assert "temp/3.0.0" not in refs and "temp/2.0.0" in refs and "temp/2.1.1" not in refs  # never written


def test_a_large_contiguous_variable_is_split_into_equal_chunks(tmp_path, monkeypatch):
    import fsspec
    import zarr

    monkeypatch.setattr(scan_hdf5, "SPLIT_BYTES", 64 << 10)  # what chooses to split
    monkeypatch.setattr(scan_model, "SPLIT_BYTES", 64 << 10)  # and how
    values = np.arange(64 * 1000, dtype=">f8").reshape(64, 1000)
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("big", data=values)  # contiguous, uncompressed, 512 KB
        f.create_dataset("odd", data=np.arange(7 * 3000, dtype="f8").reshape(7, 3000))  # 7 rows: a prime
    refs, _ = scan([str(path)])
    zarray = json.loads(refs["refs"]["big/.zarray"])
    assert zarray["chunks"] == [8, 1000] and sum(k.startswith("big/") and k[4].isdigit() for k in refs["refs"]) == 8
    assert json.loads(refs["refs"]["odd/.zarray"])["chunks"] == [1, 3000]  # rows of 24 KB each
    group = zarr.open_group(fsspec.filesystem("reference", fo=refs).get_mapper(""), mode="r", zarr_format=2)
    np.testing.assert_array_equal(group["big"][...], values)
    np.testing.assert_array_equal(group["odd"][...], np.arange(7 * 3000, dtype="f8").reshape(7, 3000))


def test_layouts_no_reference_can_name_are_left_out_and_the_rest_read_right(tmp_path):
    """HDF5 external storage, a virtual dataset and a null dataspace are left out with a warning
    (external raw files were read as fill values before: wrong bytes); netCDF-4's committed
    user-defined types are not variables; attributes no JSON value stands for are dropped;
    compact datasets and the variables around them read as h5py reads them."""
    import fsspec
    import zarr

    (tmp_path / "raw.bin").write_bytes(np.arange(10, dtype="<i4").tobytes())
    for name, values in (("a.h5", np.arange(5, dtype="f4")), ("b.h5", np.arange(5, 10, dtype="f4"))):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("d", data=values)
    layout = h5py.VirtualLayout(shape=(2, 5), dtype="f4")
    layout[0] = h5py.VirtualSource(str(tmp_path / "a.h5"), "d", shape=(5,))
    layout[1] = h5py.VirtualSource(str(tmp_path / "b.h5"), "d", shape=(5,))
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("external", shape=(10,), dtype="<i4", external=[(str(tmp_path / "raw.bin"), 0, 40)])
        f.create_virtual_dataset("virtual", layout, fillvalue=-1)
        f.create_dataset("null", data=h5py.Empty("f4"))
        f.create_dataset("null_string", data=h5py.Empty(h5py.string_dtype()))
        space = h5py.h5s.create_simple((6,))
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_layout(h5py.h5d.COMPACT)
        h5py.h5d.create(f.id, b"compact", h5py.h5t.STD_I16LE, space, plist).write(
            h5py.h5s.ALL, h5py.h5s.ALL, np.arange(6, dtype="<i2"))
        kept = f.create_dataset("kept", data=np.arange(4, dtype=">f8"))
        kept.attrs["empty"] = h5py.Empty("f4")
        kept.attrs["ref"] = f.ref
        kept.attrs["units"] = "m"
        f["named_type"] = np.dtype([("a", "<i4"), ("b", "<f4")])  # a committed datatype
    out = tmp_path / "refs.json"
    result = run_cli("scan", str(path), "-o", str(out))
    text = result.stderr
    assert result.returncode == 0 and "Traceback" not in text, text
    assert "external raw files" in text and "virtual dataset" in text and "null dataspace" in text, text
    refs = json.loads(out.read_text())
    keys = refs["refs"]
    assert not any(k.split("/")[0] in ("external", "virtual", "null", "null_string", "named_type") for k in keys), sorted(keys)
    attrs = json.loads(keys["kept/.zattrs"])
    assert attrs.pop("units") == "m" and list(attrs) == ["_ARRAY_DIMENSIONS"], attrs
    group = zarr.open_group(fsspec.filesystem("reference", fo=refs).get_mapper(""), mode="r", zarr_format=2)
    np.testing.assert_array_equal(group["compact"][...], np.arange(6, dtype="<i2"))
    np.testing.assert_array_equal(group["kept"][...], np.arange(4, dtype=">f8"))


def test_a_file_the_hdf5_library_loops_on_is_one_line_after_the_file_timeout(tmp_path):
    """A netCDF-4 file with header bytes flipped by a fuzzer (``tests/data/scan/
    damaged-attributes.nc``): iterating one variable's attributes never returns, inside the HDF5
    library, holding the GIL. The scan ends the worker process after ``--file-timeout`` seconds
    without progress and names the file; the files before it were scanned."""
    from pathlib import Path

    damaged = Path(__file__).resolve().parent.parent / "data" / "scan" / "damaged-attributes.nc"
    good = _write(tmp_path / "good.nc")
    for args in ([str(damaged)], [good, str(damaged)]):
        result = run_cli("scan", *args, "-o", str(tmp_path / "out.json"), "--file-timeout", "2", "-j", "1", timeout=120)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"refmount: {damaged}: cannot scan: the process scanning it ended without an answer (crashed, or "
            "read nothing for 2 s: a damaged file?)"), result.stderr
    result = run_cli("scan", good, "-o", str(tmp_path / "out.json"), "--file-timeout", "0")
    assert result.returncode == 1 and "--file-timeout 0: must be more than 0 seconds" in result.stderr
    result = run_cli("inspect", str(damaged), "--file-timeout", "2", timeout=120)  # one file: a worker too
    assert result.returncode == 1 and result.stderr.strip() == (
        f"refmount: {damaged}: cannot scan: the process scanning it ended without an answer (crashed, or "
        "read nothing for 2 s: a damaged file?)"), result.stderr


def test_mounting_a_damaged_file_directly_fails_in_one_line_after_the_file_timeout(tmp_path):
    from pathlib import Path

    from tests.conftest import is_mounted

    damaged = Path(__file__).resolve().parent.parent / "data" / "scan" / "damaged-attributes.nc"
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}
    result = run_cli(damaged, mountpoint, "--file-timeout", "2", timeout=120, env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(damaged) in lines[0] and "read nothing for 2 s" in lines[0], result.stderr
    assert not is_mounted(str(mountpoint))


def test_checksummed_chunks_of_8_byte_values_decode_as_hdf5_does(tmp_path, mount):
    """netCDF-C applies its checksum (fletcher32) before the shuffle, so a chunk of 8-byte values
    is shuffled with 4 checksum bytes past its last element: HDF5 leaves those bytes where they
    are; numcodecs' Shuffle refuses them (kerchunk leaves fletcher32 variables out). The decoded
    view decodes them as HDF5 does, the checksum verified: a flipped byte is EIO."""
    path = tmp_path / "sums.nc"
    values = {"f8": np.linspace(-1, 1, 12), "i8": np.arange(12, dtype="i8") * 2**33, "i4": np.arange(12, dtype="i4")}
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("n", 12)
        for name, data in values.items():
            d.createVariable(name, name, ("n",), zlib=True, shuffle=True, fletcher32=True, chunksizes=(5,))[:] = data
        # uncompressed: a flipped byte reaches the checksum (zlib's own check would catch it first)
        d.createVariable("plain", "f8", ("n",), shuffle=True, fletcher32=True, chunksizes=(5,))[:] = values["f8"]
    refs = tmp_path / "refs.json"
    assert run_cli("scan", path, "-o", refs).returncode == 0
    meta = json.loads(json.loads(refs.read_text())["refs"]["f8/.zarray"])
    assert [f["id"] for f in meta["filters"]] == ["fletcher32", "shuffle", "zlib"]  # HDF5's pipeline order
    with mount(str(refs), view="decoded") as root:
        for name, data in [*values.items(), ("plain", values["f8"])]:
            got = b"".join(open(os.path.join(root, name, str(i)), "rb").read() for i in range(3))
            want = np.concatenate([data, np.zeros(3, data.dtype)]).astype(data.dtype.newbyteorder("<"))
            assert got[: 12 * data.itemsize] == want.tobytes()[: 12 * data.itemsize], name
    # a byte flipped inside a stored chunk: the checksum catches it
    entry = json.loads(refs.read_text())["refs"]["plain/1"]
    with open(path, "r+b") as f:
        f.seek(entry[1] + entry[2] // 2)
        byte = f.read(1)
        f.seek(entry[1] + entry[2] // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with mount(str(refs), view="decoded") as root:
        assert open(os.path.join(root, "plain", "0"), "rb").read() == values["f8"][:5].tobytes()
        with pytest.raises(OSError) as exc:
            open(os.path.join(root, "plain", "1"), "rb").read()
        assert exc.value.errno == 5
    assert "EIO /plain/1: cannot decode a chunk of plain: RuntimeError: The fletcher32 checksum of the data" in (tmp_path / "refmount.log").read_text()


def test_variables_written_less_far_along_an_unlimited_dimension_are_as_long_as_it(tmp_path, mount):
    """HDF5 extends a dataset only as far as it was written (and the scale of a dimension without
    a coordinate variable not at all); netCDF makes every variable along an unlimited dimension
    as long as the longest, the rest the fill value. Read as HDF5 has it, xarray refuses the
    file (one dimension, two lengths)."""
    import xarray

    path = tmp_path / "records.nc"
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("rec", None)  # no coordinate variable
        d.createDimension("time", None)
        d.createDimension("x", 3)
        d.createVariable("full", "f4", ("rec", "x"))[:4] = np.arange(12, dtype="f4").reshape(4, 3)
        d.createVariable("half", "i2", ("rec", "x"), fill_value=-5)[:2] = np.ones((2, 3), "i2")
        d.createVariable("never", "f8", ("rec",))
        d.createVariable("time", "f8", ("time",))[:2] = [0.0, 1.0]  # a coordinate written less far
        d.createVariable("data", "f4", ("time",))[:5] = np.arange(5, dtype="f4")
    expected = _netcdf_values(path)
    assert expected["never"].shape == (4,) and expected["time"].shape == (5,)  # netCDF's lengths
    refs = tmp_path / "refs.json"
    assert run_cli("scan", path, "-o", refs).returncode == 0
    with mount(str(refs)) as root:
        ds = xarray.open_zarr(root, mask_and_scale=False, decode_times=False)
        assert dict(ds.sizes) == {"rec": 4, "time": 5, "x": 3}
        for name, values in expected.items():
            np.testing.assert_array_equal(ds[name].values, np.ma.getdata(values), err_msg=name)
    # combining files along a coordinate with unwritten values would put values nowhere: said
    other = tmp_path / "records2.nc"
    other.write_bytes(path.read_bytes())
    result = run_cli("scan", str(tmp_path / "records*.nc"), "-o", tmp_path / "both.json", "--concat-dim", "time")
    assert result.returncode != 0 and "coordinate time has unwritten values" in result.stderr, result.stderr


def test_a_variable_written_less_far_without_fill_values_is_left_out(tmp_path):
    """In netCDF's no-fill mode the unwritten end of a chunk holds whatever HDF5 had in memory,
    where netCDF reads the fill value: such a variable would read other values, so it is left
    out, said; the ones written as far as the dimension stay."""
    path = tmp_path / "nofill.nc"
    with netCDF4.Dataset(path, "w") as d:
        d.set_fill_off()
        d.createDimension("t", None)
        d.createDimension("x", 10)
        d.createVariable("full", "f8", ("t", "x"), chunksizes=(4, 10))[:3] = np.ones((3, 10))
        d.createVariable("short", "f8", ("t", "x"), chunksizes=(4, 10))[:1] = np.ones((1, 10))
    refs_path = tmp_path / "refs.json"
    result = run_cli("scan", path, "-o", refs_path)
    assert result.returncode == 0, result.stderr
    assert "variable short: written less far than its unlimited dimension with no fill value" in result.stderr
    refs = json.loads(refs_path.read_text())["refs"]
    assert "short/.zarray" not in refs and json.loads(refs["full/.zarray"])["shape"] == [3, 10]


def test_a_compound_type_with_padding_reads_field_by_field_as_netcdf_does(tmp_path, mount):
    """netCDF-4 aligns compound members (a float32 and an int16 take 8 bytes): the Zarr dtype
    names the padding (an unnamed void field, as numpy's ``descr``), so every record is read
    from its own 8 bytes."""
    import zarr

    path = tmp_path / "compound.nc"
    values = np.array([(1.5, 2), (2.5, -3), (3.5, 4)], dtype=[("p", "f4"), ("q", "i2")])
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("n", 3)
        kind = d.createCompoundType(values.dtype, "pair")
        d.createVariable("pairs", kind, ("n",))[:] = values
        d.createVariable("chunked", kind, ("n",), chunksizes=(2,), zlib=True)[:] = values
    assert h5py.File(path)["pairs"].dtype.itemsize == 8
    refs = tmp_path / "refs.json"
    assert run_cli("scan", path, "-o", refs).returncode == 0
    meta = json.loads(json.loads(refs.read_text())["refs"]["pairs/.zarray"])
    assert meta["dtype"] == [["p", "<f4"], ["q", "<i2"], ["", "|V2"]]
    with mount(str(refs)) as root:
        group = zarr.open_group(root, mode="r", zarr_format=2)
        for name in ("pairs", "chunked"):
            got = group[name][...]
            for field in ("p", "q"):
                np.testing.assert_array_equal(got[field], values[field], err_msg=f"{name}.{field}")


def test_a_dataset_shorter_than_its_dimension_scale_is_padded_as_h5netcdf_reads_it(tmp_path, mount):
    """An HDF5 dimension scale may be longer than a dataset attached to it (h5py files that are
    not netCDF): h5netcdf, xarray's reader of such files, shows the dataset as long as the
    dimension, the rest the dataset's fill value -- fixed or unlimited axis alike -- so xarray
    reads the mount as it reads the file."""
    import xarray

    path = tmp_path / "scales.h5"
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", data=np.arange(10.0))
        x.make_scale("x")
        for name, maxshape in (("fixed", (5,)), ("growing", (None,))):
            d = f.create_dataset(name, data=np.arange(5.0) + 1, chunks=(2,), maxshape=maxshape, fillvalue=-1.0)
            d.dims[0].attach_scale(x)
    refs = tmp_path / "refs.json"
    assert run_cli("scan", path, "-o", refs).returncode == 0
    with mount(str(refs)) as root:
        ds = xarray.open_zarr(root, mask_and_scale=False)
        for name in ("fixed", "growing"):
            np.testing.assert_array_equal(ds[name].values, [1, 2, 3, 4, 5, -1, -1, -1, -1, -1], err_msg=name)


def test_axes_without_dimension_scales_are_named_as_netcdf_names_them(tmp_path):
    """HDF5 datasets without dimension scales (h5py's) get phony dimensions, as netCDF-C names
    them: shared by length across the file, but never twice in one variable -- a square array
    named ``(phony_dim_0, phony_dim_0)`` would be one axis to xarray."""
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a_square", data=np.zeros((4, 4)))
        f.create_dataset("b_rect", data=np.zeros((4, 10)))
        f.create_dataset("c_cube", data=np.zeros((10, 4, 4)))
        f.create_dataset("d_line", data=np.zeros(10))
    refs = json.loads(json.dumps(scan([str(path)])[0]))["refs"]
    with netCDF4.Dataset(path) as d:
        for name, variable in d.variables.items():
            assert json.loads(refs[f"{name}/.zattrs"])["_ARRAY_DIMENSIONS"] == list(variable.dimensions), name
    assert json.loads(refs["a_square/.zattrs"])["_ARRAY_DIMENSIONS"] == ["phony_dim_0", "phony_dim_1"]


def test_nan_and_infinite_attributes_stay_numbers(tmp_path, mount):
    """``valid_max = inf``, ``missing_value = NaN``: written as zarr-python and kerchunk write
    them (``Infinity``, ``NaN``), so xarray and ncdump read numbers, not the texts; the
    ``.zarray`` fill value is the text Zarr v2 names it."""
    import xarray

    path = tmp_path / "nan.nc"
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 3)
        v = d.createVariable("v", "f4", ("x",), fill_value=np.nan)
        v.valid_max = np.float32(np.inf)
        v.missing_value = np.float32(np.nan)
        v[:] = [1, np.nan, 3]
        d.createVariable("w", "f8", ("x",)).valid_range = np.array([-np.inf, np.inf])
    refs = tmp_path / "refs.json"
    assert run_cli("scan", path, "-o", refs).returncode == 0
    assert json.loads(json.loads(refs.read_text())["refs"]["v/.zarray"])["fill_value"] == "NaN"
    with mount(str(refs)) as root:
        ds = xarray.open_zarr(root, mask_and_scale=False)
        assert ds.v.attrs["valid_max"] == np.inf and np.isnan(ds.v.attrs["missing_value"])
        assert list(ds.w.attrs["valid_range"]) == [-np.inf, np.inf]
        np.testing.assert_array_equal(ds.v.values, [1, np.nan, 3])


def test_a_variable_without_a_fill_value_keeps_its_type_in_xarray(tmp_path, mount):
    """netCDF gives every variable a default fill value (HDF5's, -127 for a byte), but xarray
    masks a Zarr v2 fill value: declared for a fully written integer variable, it would turn
    its flags into floating point. It is declared only where a chunk was never written, so
    that those read as netCDF reads them."""
    import xarray

    path = tmp_path / "flags.nc"
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 6)
        d.createVariable("flags", "i1", ("x",))[:] = [0, 1, 2, 4, 8, 16]
        d.createVariable("count", "u2", ("x",), chunksizes=(3,))[:] = np.arange(6)
        d.createVariable("sparse", "f4", ("x",), chunksizes=(3,))[:3] = [1, 2, 3]  # chunk 1 never written
    refs = tmp_path / "refs.json"
    assert run_cli("scan", path, "-o", refs).returncode == 0
    with mount(str(refs)) as root:
        ds, original = xarray.open_zarr(root), xarray.open_dataset(path)
        for name in ("flags", "count"):
            assert ds[name].dtype == original[name].dtype, name
            np.testing.assert_array_equal(ds[name].values, original[name].values)
        raw = xarray.open_zarr(root, mask_and_scale=False)["sparse"].values
        np.testing.assert_array_equal(raw, original["sparse"].values)  # the default fill, as netCDF reads it

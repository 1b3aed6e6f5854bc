"""NetCDF4 files written with h5py, references made by kerchunk, read through the mount."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import xarray as xr
import zarr
from kerchunk.hdf import SingleHdf5ToZarr


def write_netcdf4(path: str) -> None:
    rng = np.random.default_rng(42)
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "generated"
        time = f.create_dataset("time", data=np.arange(6, dtype="f8"))
        time.attrs["units"] = "days since 2000-01-01"
        y = f.create_dataset("y", data=np.arange(20, dtype="f4") + 0.5)
        x = f.create_dataset("x", data=np.arange(30, dtype="f4") + 0.5)
        for d in (time, y, x):
            d.make_scale(d.name.strip("/"))
        # chunked + zlib + shuffle
        temp = f.create_dataset(
            "temp", data=rng.normal(280, 5, (6, 20, 30)).astype("f4"), chunks=(2, 7, 11),
            compression="gzip", compression_opts=4, shuffle=True,
        )
        # contiguous, big-endian
        f.create_dataset("elev", data=rng.integers(0, 4000, (20, 30)).astype(">i4"))
        # compact layout and a scalar
        space = h5py.h5s.create_simple((3,))
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_layout(h5py.h5d.COMPACT)
        h5py.h5d.create(f.id, b"flags", h5py.h5t.STD_I8LE, space, plist).write(
            h5py.h5s.ALL, h5py.h5s.ALL, np.array([1, 2, 3], "i1"))
        f.create_dataset("scalar", data=np.float64(3.25))
        # strings
        f.create_dataset("names", data=np.array([b"ab", b"cd", b"ef"], dtype="S2"))
        # chunks never written: fill value, missing keys
        sparse = f.create_dataset("sparse", shape=(12,), chunks=(4,), dtype="i2", fillvalue=-7)
        sparse[4:8] = np.arange(4, dtype="i2")
        # nested groups
        g = f.create_group("grp/inner")
        g.create_dataset("v", data=np.linspace(0, 1, 50, dtype="f8"), chunks=(10,), compression="gzip")
        for ds, dims in ((temp, ("time", "y", "x")), (f["elev"], ("y", "x"))):
            for axis, name in enumerate(dims):
                ds.dims[axis].attach_scale(f[name])


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    nc = str(d / "data.nc")
    write_netcdf4(nc)
    refs = SingleHdf5ToZarr(nc, inline_threshold=50).translate()
    refs_path = d / "refs.json"
    refs_path.write_text(json.dumps(refs))
    return nc, str(refs_path), refs


def test_every_array_equals_h5py(generated, mount):
    nc, refs_path, refs = generated
    assert "sparse/0" not in refs["refs"] and "sparse/1" in refs["refs"]  # a missing chunk
    with mount(refs_path) as root, h5py.File(nc, "r") as h5:
        group = zarr.open_group(root, mode="r", zarr_format=2)
        arrays = dict(group.arrays())
        arrays.update({f"grp/inner/{k}": v for k, v in group["grp/inner"].arrays()})
        assert set(arrays) == {"time", "y", "x", "temp", "elev", "flags", "scalar", "names", "sparse", "grp/inner/v"}
        for name, array in arrays.items():
            want = h5[name][()]
            got = array[...]
            assert got.dtype == want.dtype or name == "sparse", name
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_xarray_reads_the_dataset_like_h5py(generated, mount):
    nc, refs_path, refs = generated
    with mount(refs_path) as root, h5py.File(nc, "r") as h5:
        ds = xr.open_zarr(root, consolidated=False, drop_variables=["flags", "names", "sparse", "scalar"])
        np.testing.assert_array_equal(ds["temp"].values, h5["temp"][()])
        np.testing.assert_array_equal(ds["elev"].values, h5["elev"][()])
        assert ds["temp"].dims == ("time", "y", "x")
        assert str(ds["time"].values[1])[:10] == "2000-01-02"
        ds.close()


def test_chunk_files_equal_original_byte_ranges(generated, mount):
    nc, refs_path, refs = generated
    raw = open(nc, "rb").read()
    with mount(refs_path) as root:
        checked = 0
        for key, value in refs["refs"].items():
            if isinstance(value, list):
                url, offset, length = value
                with open(os.path.join(root, key), "rb") as f:
                    assert f.read() == raw[offset : offset + length], key
                assert os.stat(os.path.join(root, key)).st_size == length
                checked += 1
        assert checked >= 10


def test_nested_groups_and_missing_chunks_in_the_tree(generated, mount):
    nc, refs_path, refs = generated
    with mount(refs_path) as root:
        assert sorted(os.listdir(os.path.join(root, "grp"))) == [".zattrs", ".zgroup", "inner"]
        assert not os.path.exists(os.path.join(root, "sparse", "0"))
        sparse = zarr.open_array(os.path.join(root, "sparse"), mode="r", zarr_format=2)
        assert sparse[...].tolist() == [-7] * 4 + [0, 1, 2, 3] + [-7] * 4

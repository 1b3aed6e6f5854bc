"""The fsspec filesystem and the zarr store read what the mount serves."""

from __future__ import annotations

import hashlib
import json
import os

import fsspec
import numpy as np
import pytest
import xarray
import zarr

from refmount.adapters.fsspec import RefmountFileSystem
from refmount.adapters.zarr import RefmountStore
from tests.conftest import CONFORMANCE
from tests.test_conformance import DECODED, _expected
from tests.sources.test_icechunk import DATA, EXPECTED, _expected_array

FIXTURES = ["air.nc.v1.json", "chunked3d.h5.parq", "synthetic.h5.v1.json", "lcmap_tiny_cog_2019.v0.json"]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_fsspec_filesystem_serves_every_key(fixture):
    fs = fsspec.filesystem("refmount", fo=str(CONFORMANCE / fixture), skip_instance_cache=True)
    assert isinstance(fs, RefmountFileSystem)
    for key, want in _expected(fixture).items():
        if want["status"] == "missing":
            assert not fs.exists(key)
            continue
        data = fs.cat_file(key)
        if "json" in want:
            assert json.loads(data) == want["json"], key
        else:
            assert hashlib.sha256(data).hexdigest() == want["sha256"], key
            assert fs.info(key)["size"] == len(data)
            with fs.open(key, "rb") as f:
                f.seek(1)
                assert f.read(3) == data[1:4]
            assert fs.cat_file(key, start=-2) == data[-2:]
    present = {k for k, v in _expected(fixture).items() if v["status"] != "missing"}
    assert present <= set(fs.find(""))


def test_the_fsspec_filesystem_refuses_every_change(tmp_path):
    """mkdir and touch did nothing and said nothing (fsspec's defaults), rm said "not
    implemented": every change is refused as writing a file is, and nothing changes."""
    fs = fsspec.filesystem("refmount", fo=str(CONFORMANCE / "air.nc.v1.json"), skip_instance_cache=True)
    before = sorted(fs.find("", withdirs=True))
    (tmp_path / "local.bin").write_bytes(b"x")
    for change in (lambda: fs.mkdir("new"), lambda: fs.makedirs("new/deeper"), lambda: fs.touch("new.bin"),
                   lambda: fs.rm(".zgroup"), lambda: fs.rm("air", recursive=True), lambda: fs.rmdir("air"),
                   lambda: fs.mv(".zgroup", "moved"), lambda: fs.copy(".zgroup", "copied"),
                   lambda: fs.put(str(tmp_path / "local.bin"), "put.bin"), lambda: fs.pipe_file("p", b"x"),
                   lambda: fs.open(".zgroup", "wb")):
        with pytest.raises(PermissionError, match="refmount is read-only"):
            change()
    assert sorted(fs.find("", withdirs=True)) == before


def test_a_zarr_store_opens_from_a_source_given_as_text_or_a_path():
    """`RefmountStore("refs.json")` (what one writes first) failed deep in zarr with
    "'str' object has no attribute 'read'"; a source opens an engine, with its options."""
    import pathlib

    source = CONFORMANCE / "air.nc.v1.json"
    by_open = zarr.open_group(RefmountStore.open(str(source)), mode="r", zarr_format=2)["air"][:2, :2, :2]
    for given in (str(source), pathlib.Path(source)):
        store = RefmountStore(given, view="raw")
        assert store.read_only and np.array_equal(zarr.open_group(store, mode="r", zarr_format=2)["air"][:2, :2, :2], by_open)
        store.close()
    with pytest.raises(TypeError, match="options are for opening a source"):
        RefmountStore(RefmountStore.open(str(source)).engine, view="raw")


def test_xarray_through_a_chained_url_equals_the_mount(mount):
    source = str(CONFORMANCE / "air.nc.v1.json")
    in_process = xarray.open_zarr(f"refmount::{source}")
    with mount(source) as root:
        mounted = xarray.open_zarr(root)
        xarray.testing.assert_identical(in_process.load(), mounted.load())


@pytest.mark.parametrize("fixture", sorted(DECODED))
def test_zarr_store_reads_the_decoded_values(fixture):
    decoded = json.loads((CONFORMANCE / "expected" / "decoded_values.json").read_text())[DECODED[fixture]]
    store = RefmountStore.open(str(CONFORMANCE / fixture))
    group = zarr.open_group(store, mode="r", zarr_format=2)
    for path, want in decoded.items():
        assert list(group[path].shape) == want["shape"], path
    check_decoded_store(store, decoded)
    store.close()


def check_decoded_store(store, decoded):
    # the same checks the mount's test makes, on the store
    from tests.test_conformance import _c_order_bytes, _same_values

    group = zarr.open_group(store, mode="r", zarr_format=2)
    for path, want in decoded.items():
        values = group[path][...]
        if "sha256_c_order_native_bytes" in want:
            assert hashlib.sha256(_c_order_bytes(values)).hexdigest() == want["sha256_c_order_native_bytes"], path
        if "values" in want:
            flat = [v.decode() if isinstance(v, bytes) else v for v in values.ravel().tolist()]
            assert _same_values(flat, want["values"]), path


def test_an_icechunk_repository_through_both_adapters(mount, tmp_path):
    from tests.sources.test_icechunk import _originals

    server, relocate = _originals(tmp_path / "ext")
    with server:
        exp = EXPECTED["repos"]["v2"]
        arrays = exp["snapshots"][exp["branches"]["main"]]["arrays"]
        store = RefmountStore.open(str(DATA / "v2"), relocate=relocate)
        group = zarr.open_group(store, mode="r")
        fs = fsspec.filesystem("refmount", fo=str(DATA / "v2"), relocate=relocate, skip_instance_cache=True)
        with mount(str(DATA / "v2"), relocate=relocate) as root:
            for path, want in arrays.items():
                np.testing.assert_array_equal(group[path][...], _expected_array(want), err_msg=path)
            for dirpath, _, files in os.walk(root):
                for name in files:
                    key = os.path.relpath(os.path.join(dirpath, name), root)
                    with open(os.path.join(root, key), "rb") as f:
                        assert fs.cat_file(key) == f.read(), key
        store.close()


def test_a_failed_fetch_is_an_error_not_a_fill_value(tmp_path, http_origin):
    (http_origin.dir / "d.bin").write_bytes(bytes(range(16)))
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"version": 1, "refs": {
        ".zgroup": '{"zarr_format":2}',
        "a/.zarray": json.dumps({"shape": [4], "chunks": [4], "dtype": "<i4", "compressor": None, "filters": None,
                                 "fill_value": 0, "order": "C", "zarr_format": 2}),
        "a/0": [f"{http_origin.url}/d.bin", 0, 16]}}))
    store = RefmountStore.open(str(refs), retries=1, failed_ttl=0)
    http_origin.fail = True
    with pytest.raises(Exception, match="503|Service Unavailable|d.bin"):
        zarr.open_array(store, path="a", mode="r", zarr_format=2)[...]
    http_origin.fail = False
    assert zarr.open_array(store, path="a", mode="r", zarr_format=2)[...].tolist() == [
        int.from_bytes(bytes(range(i, i + 4)), "little") for i in (0, 4, 8, 12)]
    store.close()


def test_stores_and_filesystems_travel_to_dask_workers():
    """A zarr store or fsspec filesystem pickled (to a dask.distributed worker) arrives as an
    engine of the same sources there -- one per process, shared by the tasks."""
    import pickle

    distributed = pytest.importorskip("distributed")
    source = str(CONFORMANCE / "air.nc.v1.json")
    store = RefmountStore.open(source)
    copies = [pickle.loads(pickle.dumps(store)) for _ in range(2)]
    assert copies[0].engine is copies[1].engine is not store.engine
    assert copies[0].engine.read("air/.zarray") == store.engine.read("air/.zarray")
    here = os.getcwd()
    try:  # a relative source, unpickled where the working directory is another
        os.chdir(CONFORMANCE)
        relative = pickle.dumps(RefmountStore.open("air.nc.v1.json"))
        os.chdir("/")
        assert pickle.loads(relative).engine.read("air/.zarray") == store.engine.read("air/.zarray")
    finally:
        os.chdir(here)
    local = xarray.open_zarr(store, consolidated=False)["air"].values
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster, distributed.Client(cluster):
        for target in (store, f"refmount::{source}"):
            remote = xarray.open_zarr(target, consolidated=False, chunks={})["air"]
            assert remote.chunks and np.array_equal(remote.compute().values, local, equal_nan=True)

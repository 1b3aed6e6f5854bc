"""The Zarr v2 view of Zarr v3 trees, read by zarr (v2), Debian's ncdump and GDAL."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from refmount.index import Inline, Range, build_index
from refmount.views.v2 import ArrayV3, V2View
from tests.views.test_decoded import _ncdump, _needs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A Zarr v3 store written by zarr-python 3, and a reference set over its files."""
    zarr = pytest.importorskip("zarr")
    from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, TransposeCodec, ZstdCodec

    directory = tmp_path_factory.mktemp("v3")
    path = directory / "store.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs["title"] = "v3 test"
    rng = np.random.default_rng(2)
    arrays = {
        "t2m": (250 + 40 * rng.random((3, 8, 10))).astype("f4"),
        "count": np.arange(12, dtype="i8"),
        "group/inner/depth": rng.random((6, 5)),
        "grid": np.arange(20, dtype="i2").reshape(4, 5),
        "blob": rng.integers(0, 1000, (9,)).astype("u4"),
    }
    t2m = root.create_array("t2m", shape=(3, 8, 10), chunks=(1, 8, 10), dtype="f4", fill_value=-1.0,
                            serializer=BytesCodec(endian="big"), compressors=GzipCodec(level=3),
                            dimension_names=["time", "y", "x"])
    t2m[:] = arrays["t2m"]
    t2m.attrs["units"] = "K"
    root.create_array("count", shape=(12,), chunks=(5,), dtype="i8", compressors=None,
                      dimension_names=["n"])[:] = arrays["count"]
    inner = root.create_group("group").create_group("inner")
    inner.attrs["level"] = 2
    inner.create_array("depth", shape=(6, 5), chunks=(3, 5), dtype="f8", compressors=ZstdCodec(level=1),
                       chunk_key_encoding={"name": "v2", "separator": "."}, dimension_names=["a", "b"])[:] = arrays["group/inner/depth"]
    root.create_array("grid", shape=(4, 5), chunks=(2, 5), dtype="i2", filters=[TransposeCodec(order=(1, 0))],
                      compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=2),
                      dimension_names=["r", "c"])[:] = arrays["grid"]
    root.create_array("blob", shape=(9,), chunks=(3,), shards=(9,), dtype="u4")[:] = arrays["blob"]
    return refs_over(path, directory / "refs.json"), arrays


def refs_over(store, refs_path):
    """A reference set over every file of a Zarr v3 store on disk (metadata inline)."""
    refs = {}
    for folder, _, files in os.walk(store):
        for name in files:
            full = os.path.join(folder, name)
            key = os.path.relpath(full, store)
            refs[key] = open(full).read() if name == "zarr.json" else [full, 0, os.path.getsize(full)]
    refs_path.write_text(json.dumps({"version": 1, "refs": refs}))
    return refs_path


def test_v2_view_reads_as_zarr_v2(store, mount, tmp_path):
    zarr = pytest.importorskip("zarr")
    refs, arrays = store
    with mount(str(refs), view="v2") as root:
        assert sorted(os.listdir(root)) == [".zattrs", ".zgroup", ".zmetadata", "count", "grid", "group", "t2m"]  # blob: sharded
        assert sorted(os.listdir(os.path.join(root, "t2m"))) == [".zarray", ".zattrs", "0.0.0", "1.0.0", "2.0.0"]
        assert sorted(os.listdir(os.path.join(root, "group", "inner", "depth"))) == [".zarray", ".zattrs", "0.0", "1.0"]
        meta = json.loads(open(os.path.join(root, "t2m", ".zarray")).read())
        assert meta["dtype"] == ">f4" and meta["compressor"] == {"id": "gzip", "level": 3} and meta["fill_value"] == -1.0
        assert json.loads(open(os.path.join(root, "grid", ".zarray")).read())["order"] == "F"
        group = zarr.open_group(root, mode="r", zarr_format=2)
        for name, values in arrays.items():
            if name != "blob":
                np.testing.assert_array_equal(group[name][...], values)
        assert dict(group["t2m"].attrs) == {"units": "K", "_ARRAY_DIMENSIONS": ["time", "y", "x"]}
        assert group.attrs["title"] == "v3 test" and group["group/inner"].attrs["level"] == 2
        assert not os.path.exists(os.path.join(root, "t2m", "c")) and not os.path.exists(os.path.join(root, "zarr.json"))
    log = (tmp_path / "refmount.log").read_text()
    assert log.count("v2 view: blob left out") == 1 and "sharding_indexed" in log


def test_decoded_view_of_v3_reads_in_ncdump_and_gdal(store, mount, tmp_path):
    _needs("ncdump")
    _needs("gdal_translate")
    refs, arrays = store
    with mount(str(refs), view="decoded") as root:
        assert np.allclose(_ncdump(root, "t2m"), arrays["t2m"].ravel(), rtol=1e-6, atol=0)
        assert _ncdump(root, "count") == arrays["count"].tolist()
        assert _ncdump(root, "grid") == arrays["grid"].ravel().tolist()
        tif = tmp_path / "t2m1.tif"
        subprocess.run(["gdal_translate", "-q", f'ZARR:"{root}":/t2m:1', str(tif)], check=True, timeout=120)
        info = subprocess.run(["gdalinfo", "-stats", str(tif)], capture_output=True, text=True, check=True).stdout
        mean = float(re.search(r"STATISTICS_MEAN=([-\d.eE+]+)", info).group(1))
        assert abs(mean - arrays["t2m"][1].astype("f8").mean()) < 1e-4
        consolidated = json.loads(open(os.path.join(root, ".zmetadata")).read())["metadata"]
        assert consolidated["t2m/.zarray"]["dtype"] == "<f4" and consolidated["t2m/.zarray"]["compressor"] is None


def test_chunk_key_encodings_map_both_ways():
    def array(encoding, ndim=2):
        return ArrayV3("a", {"shape": [4] * ndim, "data_type": "int32", "chunk_key_encoding": encoding,
                             "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2] * ndim}},
                             "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]})

    assert array({"name": "default"}).v3_key("1.0") == "c/1/0"
    assert array({"name": "default", "configuration": {"separator": "."}}).v3_key("1.0") == "c.1.0"
    assert array({"name": "v2"}).v3_key("1.0") == "1.0"
    assert array({"name": "v2", "configuration": {"separator": "/"}}).v3_key("1.0") == "1/0"
    assert array({"name": "default"}).v3_key("1.0.0") is None and array({"name": "default"}).v3_key("x") is None
    scalar = array({"name": "default"}, ndim=0)
    assert scalar.v3_key("0") == "c" and scalar.v3_key("1") is None
    tree = build_index([("a/zarr.json", Inline(json.dumps({"zarr_format": 3, "node_type": "array", "shape": [],
                        "data_type": "int32", "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": []}},
                        "codecs": [{"name": "bytes"}], "fill_value": 0}).encode())),
                        ("a/c", Range("/x", 0, 4))])
    view = V2View(tree)
    assert sorted(n for n, _ in view.listdir("a")) == [".zarray", ".zattrs", "0"]
    assert view.node("a/0") == Range("/x", 0, 4)


def test_v2_view_synthesizes_consolidated_metadata(store, mount):
    import xarray as xr

    refs, arrays = store
    with mount(str(refs), view="v2") as root:
        meta = json.loads(open(os.path.join(root, ".zmetadata")).read())
        assert meta["zarr_consolidated_format"] == 1
        assert meta["metadata"]["t2m/.zarray"]["compressor"] == {"id": "gzip", "level": 3}
        assert meta["metadata"]["group/inner/.zattrs"] == {"level": 2}
        assert not any(key.startswith("blob/") for key in meta["metadata"])
        ds = xr.open_zarr(root, consolidated=True, zarr_format=2, mask_and_scale=False)
        np.testing.assert_array_equal(ds["t2m"].values, arrays["t2m"])
        np.testing.assert_array_equal(ds["count"].values, arrays["count"])


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Sharded Zarr v3 arrays written by zarr: a 2-D one with an edge shard and inner chunks
    never written, and a big-endian compressed one."""
    zarr = pytest.importorskip("zarr")
    from zarr.codecs import BytesCodec, GzipCodec

    directory = tmp_path_factory.mktemp("sharded")
    path = directory / "store.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    field = root.create_array("field", shape=(10, 7), chunks=(2, 2), shards=(4, 4), dtype="f4", fill_value=-1.0,
                              compressors=GzipCodec(level=2), dimension_names=["y", "x"])
    values = np.arange(70, dtype="f4").reshape(10, 7)
    field[:6] = values[:6]  # rows 6..9: never written (whole and partial shards missing)
    expected = np.full((10, 7), -1.0, dtype="f4")
    expected[:6] = values[:6]
    big = root.create_array("big", shape=(9,), chunks=(3,), shards=(9,), dtype="i8",
                            serializer=BytesCodec(endian="big"), dimension_names=["n"])
    big[:] = np.arange(9) * 1000
    return refs_over(path, directory / "refs.json"), {"field": expected, "big": np.arange(9) * 1000}


def test_decoded_view_serves_sharded_arrays_one_chunk_per_shard(sharded, mount, tmp_path):
    zarr = pytest.importorskip("zarr")
    refs, arrays = sharded
    with mount(str(refs), view="decoded") as root:
        meta = json.loads(open(os.path.join(root, "field", ".zarray")).read())
        assert meta["chunks"] == [4, 4] and meta["compressor"] is None and meta["dtype"] == "<f4"
        assert sorted(os.listdir(os.path.join(root, "field"))) == [".zarray", ".zattrs", "0.0", "0.1", "1.0", "1.1"]
        assert os.path.getsize(os.path.join(root, "field", "1.1")) == 4 * 4 * 4  # a dense block, edge included
        group = zarr.open_group(root, mode="r", zarr_format=2)
        for name, values in arrays.items():
            np.testing.assert_array_equal(group[name][...], values, err_msg=name)
        if shutil.which("ncdump"):
            assert _ncdump(root, "big") == arrays["big"].tolist()
    with mount(str(refs), view="v2") as root:  # v2 itself cannot express sharding: still left out
        assert sorted(os.listdir(root)) == [".zattrs", ".zgroup", ".zmetadata"]


def _rectilinear(tmp_path, name: str, chunk_shapes, shape, written):
    """A reference set over a hand-written rectilinear Zarr v3 array (the zarr-extensions form)."""
    meta = {"zarr_format": 3, "node_type": "array", "shape": shape, "data_type": "uint8", "fill_value": 0,
            "chunk_grid": {"name": "rectilinear", "configuration": {"kind": "inline", "chunk_shapes": chunk_shapes}},
            "chunk_key_encoding": {"name": "default"}, "codecs": [{"name": "bytes"}], "attributes": {}}
    refs = {"zarr.json": json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}),
            f"{name}/zarr.json": json.dumps(meta)}
    for key, data in written.items():
        refs[f"{name}/c/{key}"] = "base64:" + __import__("base64").b64encode(data).decode()
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    return str(path)


def test_rectilinear_grids_in_inspect_prefetch_order_and_the_v2_view(tmp_path, caplog):
    from refmount.io.order import ChunkOrder
    from refmount.sources import open_source
    from refmount.views import apply_view
    from tests.conftest import run_cli

    # 3 x 2 chunks of varying sizes ([2, 2, 1] rows as one 2 and a run of one 2... , columns 3 and 2)
    written = {f"{i}/{j}": bytes(a * b) for (i, j), (a, b) in
               {(0, 0): (2, 3), (0, 1): (2, 2), (1, 0): (2, 3), (2, 1): (1, 2)}.items()}
    refs = _rectilinear(tmp_path, "var", [[[2, 2], 1], [3, 2]], [5, 5], written)
    summary = json.loads(run_cli("inspect", "--json", refs).stdout)
    var = next(a for a in summary["arrays"] if a["path"] == "var")
    assert var["grid"] == [3, 2] and var["grid_chunks"] == 6 and var["chunks"] == [[2, 2, 1], [3, 2]]
    assert var["refs"]["missing"] == 2 and var["refs"]["inline"] == 4
    assert "(2,2,1)x(3,2)" in run_cli("inspect", refs).stdout
    tree = open_source(refs)
    assert ChunkOrder(tree).after("var/c/0/1", 2) == ["var/c/1/0", "var/c/1/1"]  # prefetch follows the grid
    with caplog.at_level("WARNING", logger="refmount.views"):
        assert apply_view(tree, "v2").node("var") is None  # varying sizes: v2 cannot express them
    assert any("varying chunk sizes" in r.getMessage() for r in caplog.records)
    # every chunk the same size: regular in fact, served by the v2 view as a regular grid
    same = {f"{i}/{j}": bytes([i * 2 + j]) * 4 for i in range(2) for j in range(2)}
    view = apply_view(open_source(_rectilinear(tmp_path, "even", [[[2, 2]], 2], [4, 4], same)), "v2")
    assert json.loads(view.node("even/.zarray").data)["chunks"] == [2, 2]
    assert view.node("even/1.1").data == bytes([3]) * 4


def test_a_root_array_with_no_v2_form_leaves_an_empty_root(tmp_path, mount):
    """A store that is one sharded array at its root: the v2 view mounts, an empty root."""
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "one.zarr"
    array = zarr.create_array(str(path), shape=(8,), chunks=(2,), shards=(4,), dtype="i4")
    array[:] = np.arange(8)
    refs = refs_over(path, tmp_path / "refs.json")
    entries = json.loads(refs.read_text())["refs"].items()
    view = V2View(build_index([(k, Inline(v.encode()) if isinstance(v, str) else Range(*v)) for k, v in entries]))
    assert view.node("") is not None and [n for n, _ in view.listdir("")] == [".zmetadata"]
    assert view.node("c/0") is None and list(view.metadata_keys()) == []
    with mount(str(refs), view="v2") as root:
        assert os.listdir(root) == [".zmetadata"]
    with mount(str(refs), view="decoded") as root:  # the decoded view serves it, a shard a chunk
        assert np.array_equal(zarr.open_array(root, mode="r", zarr_format=2)[...], np.arange(8))


def test_huge_and_malformed_v3_grids_in_every_view(tmp_path, caplog):
    """A regular grid of 2**62 chunks (a sparse array) is one run, not a list of its edges (it
    was a MemoryError in every view); a v3 array whose chunk grid or codecs are not objects is
    left out of the v2 and decoded views with a warning (it was an AttributeError at mount)."""
    import refmount
    from refmount.grid import grid_of, grid_v3, runs_v3

    huge = {"zarr_format": 3, "node_type": "array", "shape": [2**63 - 1], "data_type": "int16",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
            "chunk_key_encoding": {"name": "default"}, "fill_value": 0,
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]}
    assert runs_v3(huge) == [[(2, 2**62)]] and grid_v3(huge) == [2**62]  # exact: not through a float
    assert grid_of([2**63 - 1], [1]) == [2**63 - 1]
    refs = {"zarr.json": json.dumps({"zarr_format": 3, "node_type": "group"}), "big/zarr.json": json.dumps(huge),
            "big/c/4611686018427387903": "base64:AQACAA==",
            "grid/zarr.json": json.dumps(dict(huge, shape=[4], chunk_grid=None)), "grid/c/0": "base64:AQACAA==",
            "codecs/zarr.json": json.dumps(dict(huge, shape=[4], codecs="bytes")), "codecs/c/0": "base64:AQACAA=="}
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    with refmount.open(str(path)) as engine:
        assert [name for name, _ in engine.listdir("big/c")] == ["4611686018427387903"]
    for view in ("v2", "decoded"):
        caplog.clear()
        with caplog.at_level("WARNING"), refmount.open(str(path), view=view) as engine:
            assert sorted(name for name, _ in engine.listdir("")) == [".zattrs", ".zgroup", ".zmetadata", "big"]
            assert json.loads(engine.read("big/.zarray"))["shape"] == [2**63 - 1]
            assert engine.read("big/4611686018427387903") == b"\x01\x00\x02\x00"
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "grid left out" in said and "codecs left out" in said, said


def test_a_v2_set_under_the_v2_view_is_the_raw_view_consolidated_alike():
    """The v2 view of a set that is Zarr v2 already changes nothing -- including the root
    ``.zmetadata`` the raw view adds (it was left out, so ``--view v2`` opened slower)."""
    import refmount
    from tests.conftest import CONFORMANCE

    source = str(CONFORMANCE / "air.nc.v1.json")
    seen = {}
    for view in ("raw", "v2"):
        with refmount.open(source, view=view) as engine:
            seen[view] = {key: engine.read(key) for key in engine.walk()}
    assert ".zmetadata" in seen["v2"] and seen["v2"] == seen["raw"]

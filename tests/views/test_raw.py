"""The raw view: the references as they are, plus consolidated metadata for v2 trees without it."""

from __future__ import annotations

import json
import os
import warnings

import h5py
import numpy as np

from refmount.index import Inline, build_index
from refmount.views import apply_view


def test_a_v2_tree_without_zmetadata_gets_one(conformance, mount):
    """xarray opens the raw view in one read and without the "consolidated metadata" warning."""
    xarray = __import__("xarray")
    source = conformance / "chunked3d.h5.v1.json"
    refs = json.loads(source.read_text())["refs"]
    assert ".zmetadata" not in refs
    with mount(str(source)) as root:
        with open(os.path.join(root, ".zmetadata"), "rb") as f:
            metadata = json.load(f)["metadata"]
        want = {k: json.loads(v) for k, v in refs.items() if k.rpartition("/")[2] in (".zgroup", ".zarray", ".zattrs")}
        assert metadata == want
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a missing .zmetadata is a RuntimeWarning in xarray
            ds = xarray.open_zarr(root, zarr_format=2)
        with h5py.File(conformance / "data" / "chunked3d.h5") as f:
            want = f["temp"][...]
        got = ds["temp"].values  # CF decoding: the fill value (never-written chunks) is NaN
        assert got.shape == want.shape and np.isnan(got).sum() == (want == -9999).sum() > 0
        assert np.array_equal(got[want != -9999], want[want != -9999])
        ds.close()


def test_a_set_with_its_own_zmetadata_and_a_v3_tree_are_left_alone():
    own = build_index([(".zgroup", Inline(b'{"zarr_format":2}')), (".zmetadata", Inline(b'{"metadata":{}}'))])
    assert apply_view(own, "raw") is own
    v3 = build_index([("zarr.json", Inline(b'{"zarr_format":3,"node_type":"group"}'))])
    assert apply_view(v3, "raw") is v3
    consolidated = apply_view(build_index([(".zgroup", Inline(b'{"zarr_format":2}'))]), "raw")
    assert sorted(consolidated.listdir("")) == [(".zgroup", False), (".zmetadata", False)]
    assert json.loads(consolidated.node(".zmetadata").data)["metadata"] == {".zgroup": {"zarr_format": 2}}



def test_metadata_nested_too_deeply_is_invalid_json_in_every_view(tmp_path, caplog):
    """An attribute document nested 100,000 deep (a fuzzer's) is served as it is and left out of
    the consolidated metadata as invalid JSON -- it used to raise RecursionError: the raw
    view's root listing failed (EINVAL), the v2 view's daemon died before the mount."""
    import pytest

    import refmount
    from refmount.index import load_json

    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError, match="nested too deeply"):
        load_json(deep)
    refs = {".zgroup": '{"zarr_format":2}', "a/.zgroup": '{"zarr_format":2}', "a/.zattrs": deep,
            "b/.zarray": json.dumps({"zarr_format": 2, "shape": [2], "chunks": [2], "dtype": "<i2", "compressor": None,
                                     "filters": None, "fill_value": 0, "order": "C"}), "b/.zattrs": deep, "b/0": "base64:AQACAA=="}
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    for view in ("raw", "decoded", "v2"):
        with caplog.at_level("WARNING"), refmount.open(str(path), view=view) as engine:
            assert sorted(name for name, _ in engine.listdir("")) == [".zgroup", ".zmetadata", "a", "b"]
            assert engine.read("a/.zattrs") == deep.encode()
            assert engine.read("b/0") == b"\x01\x00\x02\x00"
            metadata = json.loads(engine.read(".zmetadata"))["metadata"]
            assert "a/.zattrs" not in metadata and metadata["a/.zgroup"] == {"zarr_format": 2}

"""Every conformance fixture (JSON and Parquet), mounted for real, against its expected answer for every key."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os

import numpy as np
import pytest
import zarr

from tests.conftest import CONFORMANCE

FIXTURES = sorted(
    p.name for p in CONFORMANCE.glob("*") if (CONFORMANCE / "expected" / f"{p.name}.expected.json").exists()
)
assert len(FIXTURES) >= 10, f"conformance fixtures missing under {CONFORMANCE}"


def _expected(name: str) -> dict:
    return json.loads((CONFORMANCE / "expected" / f"{name}.expected.json").read_text())["keys"]


def _files_under(root: str) -> set[str]:
    found = set()
    for dirpath, _, files in os.walk(root):
        for f in files:
            found.add(os.path.relpath(os.path.join(dirpath, f), root))
    return found


def check_keys_against_expected(root: str, expected: dict) -> None:
    for key, want in expected.items():
        path = os.path.join(root, key)
        status = want["status"]
        if status == "missing":
            with pytest.raises(FileNotFoundError):
                os.stat(path)
            continue
        if status == "error":
            assert os.stat(path).st_size == want["size"], key
            with pytest.raises(OSError) as info:
                with open(path, "rb") as f:
                    f.read()
            assert info.value.errno == errno.EIO, key
            continue
        with open(path, "rb") as f:
            data = f.read()
        assert os.stat(path).st_size == len(data), f"{key}: st_size differs from the bytes read"
        if "json" in want:
            assert json.loads(data) == want["json"], key
        else:
            assert len(data) == want["size"], key
            assert hashlib.sha256(data).hexdigest() == want["sha256"], key
    present = {k for k, v in expected.items() if v["status"] != "missing"}
    found = _files_under(root)
    if ".zgroup" in present and ".zmetadata" not in present:
        # the raw view consolidates a v2 tree that has no .zmetadata: every metadata key, parsed
        assert ".zmetadata" in found
        with open(os.path.join(root, ".zmetadata"), "rb") as f:
            consolidated = json.load(f)
        assert consolidated["zarr_consolidated_format"] == 1
        metadata = {k: v["json"] for k, v in expected.items() if "json" in v and k.rpartition("/")[2] in (".zgroup", ".zarray", ".zattrs")}
        assert consolidated["metadata"] == metadata
        found.discard(".zmetadata")
    assert found == present


@pytest.mark.parametrize("fixture", FIXTURES)
def test_every_key_matches_expected(fixture, conformance, mount):
    assert len(FIXTURES) >= 12, "conformance fixtures missing"
    with mount(str(conformance / fixture)) as root:
        check_keys_against_expected(root, _expected(fixture))


def _c_order_bytes(a: np.ndarray) -> bytes:
    """C-order bytes in the array's stored dtype (how ``decoded_values.json`` was hashed)."""
    return np.ascontiguousarray(a).tobytes()


def _same_values(got: list, want: list) -> bool:
    return all(
        (isinstance(w, float) and math.isnan(w) and math.isnan(g)) or g == w
        for g, w in zip(got, want, strict=True)
    )


def check_decoded(root: str, expected: dict) -> None:
    group = zarr.open_group(root, mode="r", zarr_format=2)
    for path, want in expected.items():
        values = group[path][...]
        assert list(values.shape) == want["shape"], path
        if "sha256_c_order_native_bytes" in want:
            assert hashlib.sha256(_c_order_bytes(values)).hexdigest() == want["sha256_c_order_native_bytes"], path
        if "values" in want:
            flat = values.ravel().tolist()
            flat = [v.decode() if isinstance(v, bytes) else v for v in flat]
            assert _same_values(flat, want["values"]), path


DECODED = {
    "air.nc.v1.json": "air.nc",
    "air.nc.v1.json.gz": "air.nc",
    "air.nc.v1.json.zst": "air.nc",
    "air.nc.v1.templated.json": "air.nc",
    "synthetic.h5.v1.json": "synthetic.h5",
    "chunked3d.h5.v1.json": "chunked3d.h5",
    "air.nc.parq": "air.nc",
    "synthetic.h5.parq": "synthetic.h5",
    "chunked3d.h5.parq": "chunked3d.h5",
}


@pytest.mark.parametrize("fixture", sorted(DECODED))
def test_decoded_arrays_through_the_mount(fixture, conformance, mount):
    decoded = json.loads((conformance / "expected" / "decoded_values.json").read_text())[DECODED[fixture]]
    with mount(str(conformance / fixture)) as root:
        check_decoded(root, decoded)


def test_list_of_sets_mounts_as_numbered_subtrees(conformance, mount):
    source = conformance / "parse_only" / "hrrr.wrfsfcf.subset.json"
    sets = json.loads(source.read_text())
    with mount(str(source), allow_missing=True) as root:  # the GRIB originals are not here
        assert sorted(os.listdir(root), key=int) == [str(n) for n in range(len(sets))]
        for n, refs in enumerate(sets):
            keys = {k.lstrip("/") for k in refs["refs"]}
            assert _files_under(os.path.join(root, str(n))) == keys
            assert json.loads(open(os.path.join(root, str(n), ".zgroup"), "rb").read()) == json.loads(refs["refs"][".zgroup"])


def test_gzip_by_magic_lists_and_fails_reads_of_absent_originals(conformance, mount):
    source = conformance / "parse_only" / "hrrr.wrfsfcf.zarr_tree_store.json.gz"
    with mount(str(source), allow_missing=True) as root:  # the GRIB original is not here
        files = _files_under(root)
        assert any(f.endswith(".zarray") for f in files)
        chunk = next(f for f in sorted(files) if not os.path.basename(f).startswith("."))
        with pytest.raises(OSError) as info:
            open(os.path.join(root, chunk), "rb").read()
        assert info.value.errno == errno.EIO

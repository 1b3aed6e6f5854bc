"""Kept indexes: a parsed JSON set (or an archive's scan) kept in the cache directory and mapped
at the next mount -- key for key the same tree; a changed reference file is parsed again; a
damaged kept index is discarded with a warning, never served."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from refmount.index import Inline, Range, Whole, build_index
from refmount.io.kept import KEEP_MIN, KeptIndexes
from refmount.io.origins import Origins
from refmount.sources import kerchunk_json


def _tree(index) -> dict:
    return {key: ref for key, ref in index.items()}


def _listing(index, top="") -> list:
    out = []
    for name, is_dir in index.listdir(top):
        path = f"{top}/{name}" if top else name
        out.append((path, is_dir))
        if is_dir:
            out += _listing(index, path)
    return out


def test_a_kept_index_is_the_same_tree(tmp_path):
    entries = [(".zgroup", Inline(b'{"zarr_format":2}')), ("a/.zarray", Inline(b"{}")), ("a/0.0", Range("/d/x.nc", 8, 100)),
               ("a/0.1", Range("/d/y.nc", 0, 5)), ("b/c/whole", Whole("http://h/o")), ("b/empty", Inline(b"")),
               ("ünï/ø", Inline(bytes(range(256))))]
    index = build_index(entries, mtime_ns=123)
    kept = KeptIndexes(str(tmp_path))
    kept.put(["id", 1], index)
    again = kept.get(["id", 1])
    assert again is not None and again is not index
    assert _tree(again) == _tree(index) and len(again) == len(index) and again.mtime_ns == 123
    assert _listing(again) == _listing(index)
    assert [again.node(p) for p, _ in _listing(index)] == [index.node(p) for p, _ in _listing(index)]
    assert again.node("nope") is None and list(again.metadata_keys()) == list(index.metadata_keys())
    assert kept.get(["id", 2]) is None  # another identity: nothing kept


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove", "meta"])
def test_a_damaged_kept_index_is_discarded_with_a_warning(tmp_path, caplog, damage):
    index = build_index([(f"v/{i}", Range("/d/x", i * 10, 10)) for i in range(50)] + [("v/.zattrs", Inline(b"{}"))])
    kept = KeptIndexes(str(tmp_path))
    kept.put("x", index)
    (entry,) = (tmp_path / "indexes").iterdir()
    target = entry / {"flip": "keys.bin", "truncate": "off.npy", "remove": "a.npy", "meta": "meta.json"}[damage]
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[5] ^= 0x20
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(bytes(data[:-8]))
    elif damage == "remove":
        target.unlink()
    else:
        target.write_bytes(bytes(data[: len(data) // 2]))
    with caplog.at_level(logging.WARNING, logger="refmount.kept"):
        assert kept.get("x") is None
    assert "discarded" in caplog.text and not entry.exists()


def test_at_most_limit_are_kept_least_recently_used_first(tmp_path):
    kept = KeptIndexes(str(tmp_path), limit=2)
    index = build_index([("k", Inline(b"1"))])
    kept.put("a", index)
    kept.put("b", index)
    old = os.path.join(kept._path("a"), "meta.json")
    os.utime(old, (1, 1))
    assert kept.get("b") is not None
    kept.put("c", index)
    assert kept.get("a") is None and kept.get("b") is not None and kept.get("c") is not None


def _big_set(path, n: int, salt: int = 0) -> dict:
    refs = {".zgroup": '{"zarr_format":2}',
            "v/.zarray": json.dumps({"shape": [n], "chunks": [1], "dtype": "|u1", "compressor": None, "filters": None,
                                     "fill_value": None, "order": "C", "zarr_format": 2})}
    for i in range(n):
        refs[f"v/{i}"] = [str(path.parent / "data.bin"), (i * 7 + salt) % 1000, 1]
    refs["v/inline"] = "base64:" + "AAEC"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    return refs


def test_kerchunk_json_keeps_large_sets_and_rereads_changed_files(tmp_path, caplog):
    (tmp_path / "data.bin").write_bytes(bytes(range(256)) * 4)
    path = tmp_path / "refs.json"
    _big_set(path, KEEP_MIN + 10)
    origins, kept = Origins(), KeptIndexes(str(tmp_path / "cache"))
    first = kerchunk_json.load(str(path), origins, kept)
    with caplog.at_level(logging.INFO, logger="refmount.sources"):
        second = kerchunk_json.load(str(path), origins, kept)
    assert "kept from an earlier mount" in caplog.text
    assert _tree(first) == _tree(second) and second.node("v/inline") == Inline(b"\x00\x01\x02")
    refs = _big_set(path, KEEP_MIN + 10, salt=3)  # rewritten: other offsets
    third = kerchunk_json.load(str(path), origins, kept)
    assert third.node("v/5") == Range(str(tmp_path / "data.bin"), refs["v/5"][1], 1) != first.node("v/5")
    small = tmp_path / "small.json"
    _big_set(small, 10)
    kerchunk_json.load(str(small), origins, kept)
    assert len(list((tmp_path / "cache" / "indexes").iterdir())) == 2  # the small set is not kept


def test_a_remount_maps_the_kept_index_and_reads_the_same(tmp_path, mount):
    data = bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8))
    (tmp_path / "data.bin").write_bytes(data)
    path = tmp_path / "refs.json"
    refs = _big_set(path, KEEP_MIN + 10)
    log = tmp_path / "mount.log"
    seen = []
    for _ in range(2):
        with mount(str(path), cache_dir=str(tmp_path / "cache"), log_file=str(log)) as root:
            names = os.listdir(os.path.join(root, "v"))
            values = {k: open(os.path.join(root, "v", k), "rb").read() for k in ("0", "17", str(KEEP_MIN + 9), "inline")}
            seen.append((names, values))
    assert seen[0] == seen[1] and len(seen[0][0]) == KEEP_MIN + 12
    assert seen[0][1]["17"] == data[refs["v/17"][1]:][:1] and seen[0][1]["inline"] == b"\x00\x01\x02"
    assert log.read_text().count("index kept from an earlier mount") == 1


def test_daemons_sharing_a_cache_directory_share_the_kept_index(tmp_path, mount):
    """Two daemons with one ``--shared-cache`` directory (two nodes of a cluster): the first
    parses the set and keeps its index there; the second, mounted while the first still serves,
    maps it -- and both read the same bytes."""
    data = bytes(range(256)) * 4
    (tmp_path / "data.bin").write_bytes(data)
    path = tmp_path / "refs.json"
    refs = _big_set(path, KEEP_MIN + 5)
    common = str(tmp_path / "cluster-cache")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with mount(str(path), cache_dir=common, shared_cache=True, log_file=str(logs[0])) as first:
        with mount(str(path), cache_dir=common, shared_cache=True, log_file=str(logs[1])) as second:
            for key in ("3", "999", str(KEEP_MIN + 4)):
                expected = data[refs[f"v/{key}"][1]:][:1]
                assert open(os.path.join(first, "v", key), "rb").read() == expected
                assert open(os.path.join(second, "v", key), "rb").read() == expected
    assert "index kept from an earlier mount" not in logs[0].read_text()
    assert "index kept from an earlier mount" in logs[1].read_text()
    assert len(list((tmp_path / "cluster-cache" / "indexes").iterdir())) == 1


def test_kept_indexes_others_may_write_are_not_used(tmp_path, caplog):
    index = build_index([("k", Inline(b"1"))])
    kept = KeptIndexes(str(tmp_path / "cache"))
    kept.put("x", index)
    assert kept.get("x") is not None
    os.chmod(tmp_path / "cache" / "indexes", 0o777)  # anyone could have replaced it
    with caplog.at_level(logging.WARNING, logger="refmount.kept"):
        assert kept.get("x") is None
    assert "not this user's alone" in caplog.text


def test_kept_indexes_stay_within_their_byte_budget(tmp_path, monkeypatch):
    import refmount.io.kept as kept_module

    index = build_index([(f"v/{i}", Range("/d/x", i, 1)) for i in range(2000)])
    kept = KeptIndexes(str(tmp_path))
    kept.put("a", index)
    one = sum(f.stat().st_size for f in (tmp_path / "indexes").iterdir() for f in f.iterdir())
    monkeypatch.setattr(kept_module, "MAX_BYTES", int(one * 2.5))  # room for two
    for name in ("b", "c", "d"):
        kept.put(name, index)
    assert len(list((tmp_path / "indexes").iterdir())) == 2
    assert kept.get("d") is not None and kept.get("a") is None  # the oldest went first

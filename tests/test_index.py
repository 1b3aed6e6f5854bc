"""The compact index: lookup, listing, directories, key validation."""

from __future__ import annotations

import os

import random

import pytest

from refmount.errors import RefmountError
from refmount.index import Dir, Inline, Range, Union, Whole, build_index, check_key, listing_order


def test_lookup_listing_and_link_counts():
    ix = build_index(
        [
            ("a/.zarray", Inline(b"{}")),
            ("a/0.0", Range("/x", 0, 10)),
            ("a/0.1", Range("/x", 10, 10)),
            ("a.b", Inline(b"x")),
            ("g/sub/k", Whole("/y")),
            ("g/sub2/k", Whole("/y")),
            ("z", Inline(b"")),
        ]
    )
    assert ix.node("a/0.1") == Range("/x", 10, 10)
    assert ix.node("g/sub/k") == Whole("/y")
    assert ix.node("missing") is None and ix.node("a/0.2") is None
    assert ix.node("") == Dir(2 + 2)  # a, g
    assert ix.node("g") == Dir(2 + 2)  # sub, sub2
    assert ix.node("a") == Dir(2)
    assert list(ix.listdir("")) == [("a", True), ("a.b", False), ("g", True), ("z", False)]  # by name
    assert list(ix.listdir("g")) == [("sub", True), ("sub2", True)]
    assert list(ix.listdir("a")) == [(".zarray", False), ("0.0", False), ("0.1", False)]
    assert ix._urls == ["/x", "/y"]  # URLs interned once


def test_last_duplicate_wins():
    ix = build_index([("k", Inline(b"1")), ("j", Inline(b"j")), ("k", Inline(b"2"))])
    assert ix.node("k") == Inline(b"2") and len(ix) == 2


def test_listing_a_large_set_matches_a_naive_listing():
    rng = random.Random(1)
    keys = {f"v{rng.randrange(30)}/{rng.randrange(50)}.{rng.randrange(50)}" for _ in range(20_000)}
    keys |= {f"g{n}/sub{n % 7}/x/{n}" for n in range(3000)}
    ix = build_index((k, Range("/data", 0, 1)) for k in keys)
    naive: dict[str, set] = {}
    for k in keys:
        parts = k.split("/")
        for depth in range(len(parts)):
            parent = "/".join(parts[:depth])
            naive.setdefault(parent, set()).add((parts[depth], depth < len(parts) - 1))
    for directory, entries in naive.items():
        listed = list(ix.listdir(directory))
        assert len(listed) == len(set(listed))
        assert set(listed) == entries
        assert ix.node(directory).nlink == 2 + sum(is_dir for _, is_dir in entries)


@pytest.mark.parametrize(
    "key",
    ["a//b", "a/./b", "a/../b", "..", ".", "a/", "/a", "a\x00b", "x" * 256, "d/" + "y" * 256, ""],
)
def test_invalid_keys_are_rejected_by_name(key):
    with pytest.raises(RefmountError):
        check_key(key)
    with pytest.raises(RefmountError):
        build_index([(key, Inline(b""))])


def test_key_that_is_file_and_directory_is_rejected():
    with pytest.raises(RefmountError, match="'a/b' is both a file and a directory"):
        build_index([("a/b", Inline(b"")), ("a/b/c", Inline(b""))])


def test_long_but_valid_names_pass():
    assert check_key("x" * 255 + "/" + "é" * 127)


def test_union_puts_each_index_under_its_name():
    u = Union({"one": build_index([("k", Inline(b"1"))]), "two": build_index([("d/k", Inline(b"2"))])})
    assert list(u.listdir("")) == [("one", True), ("two", True)]
    assert u.node("two/d/k") == Inline(b"2")
    assert u.node("three") is None
    assert u.node("") == Dir(4)
    assert sorted(k for k, _ in u.items()) == ["one/k", "two/d/k"]


def test_listing_a_generated_million_key_set_is_complete_and_exact(tmp_path):
    import json

    from refmount.sources import open_source

    refs = {".zgroup": '{"zarr_format":2}'}
    for a in range(4):
        refs[f"g{a}/.zarray"] = "{}"
        for i in range(250):
            for j in range(1000):
                refs[f"g{a}/{i}.{j}"] = ["data.bin", (i * 1000 + j) * 8, 8]
    path = tmp_path / "million.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    ix = open_source(str(path))
    assert len(ix) == len(refs) == 1_000_005
    assert list(ix.listdir("")) == [(".zgroup", False)] + [(f"g{a}", True) for a in range(4)]
    for a in range(4):
        names = [name for name, is_dir in ix.listdir(f"g{a}")]
        assert len(names) == 250_001 and names == sorted(names, key=lambda n: listing_order((n, False)))  # grid order
        assert set(names) == {".zarray"} | {f"{i}.{j}" for i in range(250) for j in range(1000)}
    assert ix.node("g3/249.999") == Range(str(tmp_path / "data.bin"), 249_999 * 8, 8)
    assert ix.node("g3/250.0") is None


def test_listings_put_metadata_first_and_chunks_in_grid_order(tmp_path, mount):
    import json

    entries = [("t/.zarray", Inline(b"{}")), ("t/.zattrs", Inline(b"{}")), ("v3/zarr.json", Inline(b"{}"))]
    entries += [(f"t/{i}.{j}", Inline(b"x")) for i in range(12) for j in range(2)]
    entries += [(f"v3/c/{i}/0", Inline(b"x")) for i in (0, 2, 9, 10, 11)]
    tree = build_index(entries)
    names = [n for n, _ in tree.listdir("t")]
    assert names[:6] == [".zarray", ".zattrs", "0.0", "0.1", "1.0", "1.1"] and names[-2:] == ["11.0", "11.1"]
    assert [n for n, _ in tree.listdir("v3")] == ["zarr.json", "c"]
    assert [n for n, _ in tree.listdir("v3/c")] == ["0", "2", "9", "10", "11"]
    refs = {k: v.data.decode() for k, v in entries}
    (tmp_path / "refs.json").write_text(json.dumps({"version": 1, "refs": refs}))
    with mount(str(tmp_path / "refs.json")) as root:  # what cp, rsync and find see
        assert os.listdir(os.path.join(root, "t")) == names

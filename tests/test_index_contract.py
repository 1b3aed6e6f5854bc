"""One contract over every index implementation: JSON, Parquet, Icechunk snapshot, all-refs,
union, the v2, decoded and consolidated views."""

from __future__ import annotations

import pytest

from refmount.index import METADATA_NAMES, Decoded, Dir, Inline, Range, Union, Unreadable, Whole
from refmount.sources import open_source
from refmount.views import apply_view
from tests.conftest import CONFORMANCE
from tests.sources.test_icechunk import DATA

REFS = (Inline, Range, Whole, Unreadable, Decoded)


def _json():
    return open_source(str(CONFORMANCE / "synthetic.h5.v1.json"))


def _parquet():
    return open_source(str(CONFORMANCE / "chunked3d.h5.parq"))


def _icechunk():
    return open_source(str(DATA / "v2"))


BUILDERS = {
    "json": _json,
    "parquet": _parquet,
    "icechunk snapshot": _icechunk,
    "icechunk all refs": lambda: open_source(str(DATA / "v1"), all_refs=True),
    "union": lambda: Union({"a": _json(), "b": _parquet()}),
    "v2 view": lambda: apply_view(_icechunk(), "v2"),
    "decoded view": lambda: apply_view(_json(), "decoded"),
    "consolidated raw view": lambda: apply_view(_parquet(), "raw"),
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_index_contract(kind):
    tree = BUILDERS[kind]()
    files, dirs = {}, {""}
    stack = [""]
    while stack:
        directory = stack.pop()
        entries = list(tree.listdir(directory))
        names = [name for name, _ in entries]
        assert len(names) == len(set(names)), f"{kind}: {directory!r} lists a name twice"
        subdirs = 0
        for name, is_dir in entries:
            assert name and "/" not in name and name not in (".", "..")
            path = f"{directory}/{name}" if directory else name
            node = tree.node(path)
            if is_dir:
                assert isinstance(node, Dir), path
                dirs.add(path)
                stack.append(path)
                subdirs += 1
            else:
                assert isinstance(node, REFS), path
                files[path] = node
        if directory:  # 1: "not counted" (listing would cost I/O), which find and du accept
            assert tree.node(directory).nlink in (1, 2 + subdirs), directory
    assert files, kind
    items = list(tree.items())
    assert len(items) == len({k for k, _ in items}), f"{kind}: items() yields a key twice"
    assert dict(items) == files  # every file once, with the same reference as node()
    assert tree.node("no/such/key") is None and tree.node(next(iter(files)) + "/below") is None
    metadata = set(tree.metadata_keys())
    assert metadata == {k for k in files if k.rpartition("/")[2] in METADATA_NAMES}
    urls = list(tree.urls())
    assert len(urls) == len(set(urls)) and all(isinstance(u, str) and u for u in urls)
    assert all(isinstance(u, str) for u in tree.own_urls())
    described = tree.describe()
    assert described is None or isinstance(described, dict)
    assert (described is not None) == (kind.startswith("icechunk") or kind == "v2 view")  # the v2 view is of a repository
    assert isinstance(tree.largest_chunk(), int) and tree.largest_chunk() >= 0
    assert (tree.largest_chunk() > 0) == (kind == "decoded view")
    assert tree.moved() is None
    assert isinstance(tree.mtime_ns, int)

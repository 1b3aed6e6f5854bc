"""Shared by the views: consolidated metadata, and hiding left-out subtrees."""

from __future__ import annotations

import json
import logging
import threading
from typing import Iterable, Iterator

from refmount.index import Index, Inline, load_json

log = logging.getLogger("refmount.views")


class View(Index):
    """A view of ``tree``: the same originals, the same source."""

    def __init__(self, tree: Index):
        self.tree = tree
        self.mtime_ns = tree.mtime_ns

    def urls(self) -> Iterator[str]:
        return self.tree.urls()

    def own_urls(self) -> Iterator[str]:
        return self.tree.own_urls()

    def moved(self) -> str | None:
        return self.tree.moved()

    def describe(self) -> dict | None:
        return self.tree.describe()

    def reserved_bytes(self) -> int:
        return self.tree.reserved_bytes()


def within(path: str, roots: set[str]) -> bool:
    """``path`` is one of ``roots`` (arrays a view leaves out) or below one. The tree's root
    itself never is: when the array at the root is left out, the root stays, an empty directory."""
    if not roots or not path:
        return False
    while True:
        if path in roots:
            return True
        if not path:
            return False
        path = path.rpartition("/")[0]


def consolidate(view: Index, keys: Iterable[str]) -> bytes:
    """Consolidated metadata (``.zmetadata``, one read opens the tree) holding each of ``keys`` as ``view`` serves it (inline JSON only)."""
    metadata = {}
    for key in sorted(set(keys)):
        node = view.node(key)
        if not isinstance(node, Inline):
            continue
        try:
            metadata[key] = load_json(node.data)
        except ValueError:
            log.warning("%s is not JSON; left out of .zmetadata", key)
    return json.dumps({"metadata": metadata, "zarr_consolidated_format": 1}, indent=1).encode()


class Consolidated(View):
    """The raw view of a Zarr v2 tree without ``.zmetadata``: the same tree with consolidated
    metadata at its root (built at the first look), so xarray opens it in one read and without
    a warning. Everything else is the tree's own."""

    def __init__(self, tree: Index):
        super().__init__(tree)
        self._zmetadata: bytes | None = None
        self._lock = threading.Lock()

    def _metadata(self) -> Inline:
        with self._lock:
            if self._zmetadata is None:
                self._zmetadata = consolidate(self.tree, self.tree.metadata_keys())
            return Inline(self._zmetadata)

    def node(self, path: str):
        return self._metadata() if path == ".zmetadata" else self.tree.node(path)

    def listdir(self, path: str):
        if path == "":
            yield ".zmetadata", False
        yield from self.tree.listdir(path)

    def items(self):
        yield ".zmetadata", self._metadata()
        yield from self.tree.items()

    def metadata_keys(self):
        return self.tree.metadata_keys()


def consolidated(tree: Index) -> Index:
    """``tree`` with a root ``.zmetadata`` where it is a Zarr v2 tree that has none."""
    if isinstance(tree.node(".zgroup"), Inline) and tree.node(".zmetadata") is None:
        return Consolidated(tree)
    return tree

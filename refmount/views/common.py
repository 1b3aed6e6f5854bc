"""Shared by the views: consolidated metadata, and hiding left-out subtrees."""

from __future__ import annotations

import json
import logging
from typing import Iterable, Iterator

from ..index import Index, Inline

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


def within(path: str, roots: set[str]) -> bool:
    """``path`` is one of ``roots`` or below one (``""`` is the whole tree)."""
    if not roots:
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
            metadata[key] = json.loads(node.data)
        except ValueError:
            log.warning("%s is not JSON; left out of .zmetadata", key)
    return json.dumps({"metadata": metadata, "zarr_consolidated_format": 1}, indent=1).encode()

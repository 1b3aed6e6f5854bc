"""Consolidated metadata (``.zmetadata``) for the v2 views: one read opens the whole tree."""

from __future__ import annotations

import json
import logging
from typing import Iterable

from ..index import Index, Inline

log = logging.getLogger("refmount.views")


def consolidate(view: Index, keys: Iterable[str]) -> bytes:
    """``.zmetadata`` holding each of ``keys`` as ``view`` serves it (inline JSON only)."""
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

"""Sources: one module per reference format, each producing an ``index.Index``.

``open_source(location)`` detects the format and loads it.
"""

from __future__ import annotations

from ..errors import RefmountError
from ..index import Index
from ..urls import location_of
from . import kerchunk_json


def open_source(source: str, storage_options: dict | None = None) -> Index:
    """Load the reference set at ``source`` (a path or URL) into an index."""
    location = location_of(source)
    return kerchunk_json.load(location, storage_options or {})


__all__ = ["open_source", "RefmountError"]

"""Sources: one module per reference format, each producing an ``index.Index``.

``open_source(location)`` detects the format and loads it.
"""

from __future__ import annotations

from ..index import Index
from ..urls import location_of
from . import kerchunk_json, kerchunk_parquet


def open_source(source: str, storage_options: dict | None = None) -> Index:
    """Load the reference set at ``source`` (a path or URL) into an index."""
    location = location_of(source)
    storage_options = storage_options or {}
    if kerchunk_parquet.is_parquet_set(location, storage_options):
        return kerchunk_parquet.load(location, storage_options)
    return kerchunk_json.load(location, storage_options)


__all__ = ["open_source"]

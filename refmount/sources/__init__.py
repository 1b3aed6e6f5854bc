"""Sources: one module (or package) per reference format, each producing an ``index.Index``.

``open_source(location)`` detects the format and loads it.
"""

from __future__ import annotations

from refmount.index import Index
from refmount.urls import location_of
from refmount.sources import icechunk, kerchunk_json, kerchunk_parquet


def open_source(source: str, storage_options: dict | None = None, authorize_virtual: tuple[str, ...] = (),
                relocate: tuple[tuple[str, str], ...] = (), all_refs: bool = False) -> Index:
    """Load the reference set or repository at ``source`` (a path or URL) into an index.

    The other arguments concern Icechunk repositories (``icechunk.Settings``)."""
    location = location_of(source)
    storage_options = storage_options or {}
    settings = icechunk.Settings(storage_options, tuple(authorize_virtual), tuple(relocate), all_refs)
    if icechunk.url.is_pipeline(location):
        return icechunk.load(location, settings)
    if location.rstrip("/").endswith((".parq", ".parquet")):
        return kerchunk_parquet.load(location, storage_options)
    repo = icechunk.detect(location, storage_options)  # before a remote "dir/" is taken for Parquet
    if repo is not None:
        return icechunk.load(location, settings, repo)
    if kerchunk_parquet.is_parquet_set(location, storage_options):
        return kerchunk_parquet.load(location, storage_options)
    return kerchunk_json.load(location, storage_options)


__all__ = ["open_source"]

"""Sources: one module (or package) per reference format, each producing an ``index.Index``.

``open_source(location, origins)`` detects the format and loads it; every byte a source reads
comes through ``origins`` (the io layer).
"""

from __future__ import annotations

import logging

from refmount.errors import FetchError, RefmountError
from refmount.index import Index
from refmount.io.kept import KeptIndexes
from refmount.io.origins import Origins
from refmount.sources import icechunk, kerchunk_json, kerchunk_parquet
from refmount.urls import location_of

log = logging.getLogger("refmount.sources")


def open_source(source: str, origins: Origins | None = None, authorize_virtual: tuple[str, ...] = (),
                relocate: tuple[tuple[str, str], ...] = (), all_refs: bool = False,
                kept: KeptIndexes | None = None, memory: int | None = None) -> Index:
    """Load the reference set or repository at ``source`` (a path or URL) into an index.

    ``kept``: where parsed JSON indexes are kept between mounts; ``memory``: what a Parquet set
    may hold of its decoded record files (default 256 MiB). The other arguments concern
    Icechunk repositories (``icechunk.Settings``). Whatever is
    wrong with the input, the failure is a ``RefmountError`` (one line naming the source) or,
    for an object that could not be read, a ``FetchError`` -- never another exception."""
    try:
        return _open(source, origins, authorize_virtual, relocate, all_refs, kept, memory)
    except (RefmountError, FetchError):
        raise
    except RecursionError:
        raise RefmountError(f"{source}: nested too deeply") from None
    except Exception as exc:  # a malformed input nobody foresaw: still one line, never a traceback
        log.debug("loading %s", source, exc_info=True)
        raise RefmountError(f"{source}: malformed: {type(exc).__name__}: {exc}"[:500]) from None


def _open(source, origins, authorize_virtual, relocate, all_refs, kept, memory) -> Index:
    location = location_of(source)
    origins = origins or Origins()
    settings = icechunk.Settings(origins, tuple(authorize_virtual), tuple(relocate), all_refs)
    if icechunk.url.is_pipeline(location):
        return icechunk.load(location, settings)
    if location.rstrip("/").endswith((".parq", ".parquet")):
        return kerchunk_parquet.load(location, origins, memory)
    repo = icechunk.detect(location, origins)  # before a remote "dir/" is taken for Parquet
    if repo is not None:
        return icechunk.load(location, settings, repo)
    if kerchunk_parquet.is_parquet_set(location):
        return kerchunk_parquet.load(location, origins, memory)
    return kerchunk_json.load(location, origins, kept)


__all__ = ["open_source"]

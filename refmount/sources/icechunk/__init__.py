"""Icechunk repositories (spec v1 and v2; 0.1.x refused) as a source.

``load(source, settings)`` takes a repository path or URL, optionally in the pipeline form
(``BASE|icechunk:@branch.dev/path``, see ``url.py``), and returns the snapshot's tree -- or,
with ``all_refs``, every branch, tag and snapshot side by side (``refs.py``).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from dataclasses import dataclass, field

from refmount.errors import RefmountError
from refmount.io.origins import Origins
from refmount.index import Index
from refmount.urls import location_of, split_protocol
from refmount.sources.icechunk import url
from refmount.sources.icechunk.refs import AllRefsIndex
from refmount.sources.icechunk.repository import Repository
from refmount.sources.icechunk.tree import SnapshotIndex
from refmount.sources.icechunk.virtual import AUTHORIZE_HINT, VirtualAccess

log = logging.getLogger("refmount.icechunk")


@dataclass(frozen=True)
class Settings:
    origins: Origins = field(default_factory=Origins)
    authorize_virtual: tuple[str, ...] = ()
    relocate: tuple[tuple[str, str], ...] = ()
    all_refs: bool = False


# per Origins (one engine, reloads included), one Repository per location
_repositories: weakref.WeakKeyDictionary[Origins, dict[str, Repository]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def repository(base: str, origins: Origins) -> Repository:
    """One ``Repository`` per location and engine for the engine's life: snapshots and manifests
    are immutable, so what one tree loaded serves the next (after a reload or a refresh). A
    repository opened before has its ref re-read."""
    with _lock:
        repo = _repositories.get(origins, {}).get(base)
    if repo is not None:
        repo.refresh()
        return repo
    repo = Repository(base, origins)
    with _lock:
        _repositories.setdefault(origins, {})[base] = repo
    return repo


def detect(location: str, origins: Origins) -> Repository | None:
    """The repository at ``location``, or None when it is not one: a local directory laid out
    like a repository (a bad one is an error), or a remote location holding ``repo`` or
    ``refs/branch.main/ref.json`` (one or two small reads)."""
    protocol, path = split_protocol(location)
    if protocol == "file":
        if os.path.isdir(path) and (os.path.isfile(os.path.join(path, "repo")) or os.path.isdir(os.path.join(path, "refs"))):
            return repository(location, origins)
        return None
    if path.rsplit("/", 1)[-1].lower().endswith((".json", ".gz", ".zst", ".zstd", ".bz2", ".xz", ".parq", ".parquet")):
        return None
    try:
        return repository(location, origins)
    except RefmountError:
        return None


def load(source: str, settings: Settings, repo: Repository | None = None) -> Index:
    """The tree ``source`` names; ``repo`` is the repository ``detect`` found there."""
    target = url.parse(source) if url.is_pipeline(source) else url.Target(location_of(source))
    repo = repo or repository(target.base, settings.origins)
    access = VirtualAccess(repo.containers(), settings.authorize_virtual, dict(settings.relocate))
    for prefix in access.unauthorized():
        log.warning("%s: virtual chunks under %s will not be read (authorise with %s %s)", target.base, prefix, AUTHORIZE_HINT, prefix)
    if settings.all_refs:
        return AllRefsIndex(repo, access, target.path)
    snapshot = repo.snapshot(repo.resolve(target.kind, target.name))
    return SnapshotIndex(repo, snapshot, access, target.path, follow=target.name if target.kind == "branch" else None)


__all__ = ["Settings", "detect", "load", "repository"]

"""The engine: sources, views and io wired together -- a tree and the bytes behind it.

Everything that serves a reference set builds through it: the FUSE daemon, ``inspect`` and
``check``, and the in-process adapters (fsspec filesystem, zarr store)::

    with refmount.open("refs.json", view="decoded") as engine:
        engine.listdir("")
        data = engine.read("t2m/0.0.0")
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from typing import Iterator

from refmount.errors import FetchError, RefmountError
from refmount.index import Dir, Index, Union
from refmount.io import disk
from refmount.io.cache import MemoryCache
from refmount.io.disk import DiskCache
from refmount.io.kept import KeptIndexes
from refmount.io.origins import Origins, missing_message, unreadable_local
from refmount.io.policy import OriginPolicy, is_shared
from refmount.io.prefetch import Prefetcher
from refmount.io.reader import Reader, size_text
from refmount.io.stats import Stats
from refmount.options import MountOptions, split_sources
from refmount.scan import SCANNER, expand, identities, is_archive, scan
from refmount.sources import kerchunk_json, open_source
from refmount.urls import location_of, split_protocol
from refmount.views import apply_view

log = logging.getLogger("refmount")


def options_for(source: str | list[str] | dict[str, str], **options) -> MountOptions:
    """``MountOptions`` from one source, a list (``NAME=SOURCE`` allowed) or ``{name: source}``
    and keyword options, each checked as a config value is (``cache_size="2GiB"``)."""
    if isinstance(source, dict):
        sources = [(name, src) for name, src in source.items()]
    else:
        sources = split_sources([source] if isinstance(source, str) else list(source))
    return MountOptions.create(sources=sources, **options)


def open_engine(source: str | list[str] | dict[str, str], **options) -> "Engine":
    """``refmount.open``: an engine for ``source`` with ``options``."""
    return Engine(options_for(source, **options))


def _eio(method):
    """A source found malformed only now (a corrupt object read lazily) fails that call as a
    fetch would: ``FetchError``, never another exception."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except RefmountError as exc:
            raise FetchError(str(exc)) from None

    return wrapper


_SENT: dict[tuple[str, str | None], "Engine"] = {}  # engines that arrived pickled, by their options
_SENT_LOCK = threading.Lock()


def _arrived(opts_json: str, cache_tag: str | None) -> "Engine":
    """An engine sent to this process (a dask worker receives one with every task that reads a
    store): made once per options here and shared, as fsspec shares its filesystem instances."""
    key = (opts_json, cache_tag)
    with _SENT_LOCK:
        engine = _SENT.get(key)
        if engine is None or engine.closed:
            engine = _SENT[key] = Engine(MountOptions.from_json(opts_json), cache_tag)
        return engine


class Engine:
    """One reference set (or several, side by side) served in process.

    ``tree`` is the index (swapped by ``reload``); ``read``/``listdir``/``info`` answer by key;
    ``counters`` are the same counters ``refmount stats`` shows. Thread-safe; ``close`` (or
    the context manager) stops its fetch pool and disk cache."""

    def __init__(self, opts: MountOptions, cache_tag: str | None = None):
        self.opts = opts
        self.closed = False
        self._cache_tag = cache_tag
        self.counters = Stats()
        self.origins = Origins(opts.storage_options, timeout=opts.timeout, retries=opts.retries, stats=self.counters,
                               failed_ttl=opts.failed_ttl)
        self.tree, self.origins.policy = self.build(opts)
        self.origins.probe(list(self.tree.urls()))
        self.disk = self._disk_cache(cache_tag or "\n".join(src for _, src in opts.sources))
        try:
            self._check_decoded_fits()
            chunks = max(opts.cache_size - self.tree.reserved_bytes(), opts.cache_size // 2)  # the rest: chunks
            self.reader = Reader(self.origins, MemoryCache(chunks, self.counters), parallel=opts.parallel,
                                 max_gap=opts.max_gap, max_request=opts.max_request, disk=self.disk)
        except BaseException:
            self.close()
            raise
        self.prefetcher = Prefetcher(self.reader) if opts.prefetch else None

    # -- building -------------------------------------------------------------------
    def build(self, opts: MountOptions) -> tuple[Index, OriginPolicy]:
        """Load ``opts``' sources through this engine's origins and check their originals
        against ``opts``' origin policy. Used at start and by reloads (which swap both in)."""
        policy = OriginPolicy(opts.allow_origin, shared=is_shared(opts.allow_other))
        settings = opts.source_settings()
        try:
            indexes = {name: apply_view(self._source(src, opts, settings), opts.views.get(name, opts.view))
                       for name, src in opts.sources}
        except FetchError as exc:  # a source's object could not be read: a one-line error
            raise RefmountError(str(exc)) from None
        tree = next(iter(indexes.values())) if len(indexes) == 1 else Union(indexes)
        policy.trust(tree.own_urls())
        urls = list(tree.urls())
        if policy.active:
            for url in urls:
                problem = policy.problem(url)
                if problem is not None:
                    raise RefmountError(f"origin {url}: {problem}")
        self._check_not_inside(opts, urls)
        missing = unreadable_local(urls)
        if missing and not opts.allow_missing:
            raise RefmountError(f"{missing_message(missing)} (references made on another machine? --allow-missing "
                                "mounts anyway, their chunks failing with EIO)")
        if missing:
            log.warning("%s; their chunks fail with EIO (--allow-missing)", missing_message(missing))
        return tree, policy

    @staticmethod
    def _check_not_inside(opts: MountOptions, urls: list[str]) -> None:
        """The mount would hide what lies under its mountpoint: local originals there could not
        be read (a read through the mount would wait on itself), nor a reference file be read
        again on reload."""
        if not opts.mountpoint:
            return
        # by name (a path through a symlink into the mount is caught when it is opened: the
        # device check in ``Origins``), not a realpath per original: a scan of 100k files has 100k
        tops = {os.path.realpath(opts.mountpoint).rstrip("/") + "/", os.path.abspath(opts.mountpoint).rstrip("/") + "/"}
        for what, url in [("the reference set", src) for _, src in opts.sources] + [("an original", u) for u in urls]:
            protocol, path = split_protocol(location_of(url).partition("|")[0] if what == "the reference set" else url)
            if protocol == "file" and any((os.path.normpath(path) + "/").startswith(top) for top in tops):
                raise RefmountError(f"mountpoint {opts.mountpoint}: {what} is inside it ({path}); the mount would "
                                    "hide it -- mount elsewhere")

    def _source(self, src: str, opts: MountOptions, settings: dict) -> Index:
        """A reference set or repository -- or an archive of netCDF/HDF5 files (a glob, a file, a
        directory), scanned here. Parsed JSON indexes and archive scans are kept in the cache
        directory (``io.kept``), so a remount, or another node sharing it, maps them instead of
        parsing or scanning again while the files are unchanged."""
        kept = KeptIndexes(opts.cache_dir if opts.cache_dir and opts.cache_dir != "auto"
                           else disk.default_directory("kept"))
        if not is_archive(src):
            # a Parquet set's record files count against the cache bound: a quarter of it, shared
            memory = max(opts.cache_size // (4 * len(opts.sources)), 1 << 20)
            return open_source(src, self.origins, **settings, kept=kept, memory=memory)
        files = expand([src], opts.storage_options)
        identity = {"archive": identities(files, opts.storage_options), "scanner": SCANNER}
        if opts.concat_dim:  # another dimension, another combination of the same files
            identity["concat_dim"] = opts.concat_dim
        index = kept.get(identity)
        if index is not None:
            log.info("%s: scan kept from an earlier mount (%d files)", src, len(files))
            return index
        refs, summary = scan(files, jobs=min(4, os.cpu_count() or 1), concat_dim=opts.concat_dim, progress=False,
                             storage_options=opts.storage_options, file_timeout=opts.file_timeout)
        log.info("%s: scanned %d files, %d chunks in %.1f s", src, summary["files"], summary["chunks"], summary["seconds"])
        index = kerchunk_json.from_refs(refs, src)
        kept.put(identity, index)
        return index

    def swap(self, tree: Index, policy: OriginPolicy) -> None:
        self.tree, self.origins.policy = tree, policy

    def _disk_cache(self, tag: str) -> DiskCache | None:
        opts = self.opts
        if not opts.cache_dir:
            return None
        directory = disk.default_directory(tag) if opts.cache_dir == "auto" else opts.cache_dir
        size = opts.disk_cache_size if opts.disk_cache_size is not None else disk.default_size(directory)
        # a fetch ends within timeout x retries plus backoff: a lease lasts that long, and a bit
        lease = opts.timeout * opts.retries + 0.2 * (2 ** opts.retries) + 5
        return DiskCache(directory, size, self.counters, shared=opts.shared_cache, lease_seconds=lease)

    def _check_decoded_fits(self) -> None:
        """A decoded chunk is served from the memory cache: one that cannot stay there would be
        fetched and decoded again for every 128 KiB the kernel reads."""
        largest = self.tree.largest_chunk()
        if largest > self.opts.cache_size:
            log.warning("decoded chunks of up to %s do not fit the memory cache (--cache-size %s): reads of them fail "
                        "(EIO) until it is at least that large, four chunks' worth to keep a few",
                        size_text(largest), size_text(self.opts.cache_size))
        elif largest * 4 > self.opts.cache_size:
            log.warning("decoded chunks of up to %d MiB need a larger --cache-size than %d MiB (at least four "
                        "chunks' worth), or reads will decode each chunk many times", largest >> 20, self.opts.cache_size >> 20)

    # -- reading by key --------------------------------------------------------------
    def _file(self, key: str):
        node = self.tree.node(key.strip("/"))
        if node is None:
            raise FileNotFoundError(key)
        if isinstance(node, Dir):
            raise IsADirectoryError(key)
        return node

    @_eio
    def size(self, key: str) -> int:
        return self.reader.size(self._file(key))

    @_eio
    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the file ``key`` (clamped to its size). ``FileNotFoundError``
        for an absent key (a Zarr fill value), ``FetchError`` when the bytes cannot be had exactly."""
        tree = self.tree
        ref = self._file(key)
        size = self.reader.size(ref)
        end = size if end is None else min(end, size)
        if start >= end:
            return b""
        if start == 0 and self.prefetcher is not None:
            self.prefetcher.on_first_read(tree, key.strip("/"), ref)
        return self.reader.read(ref, start, end - start, size)

    @_eio
    def listdir(self, key: str = "") -> list[tuple[str, bool]]:
        """``(name, is_dir)`` of each entry of the directory ``key``."""
        key = key.strip("/")
        node = self.tree.node(key) if key else Dir(2)
        if node is None:
            raise FileNotFoundError(key)
        if not isinstance(node, Dir):
            raise NotADirectoryError(key)
        return list(self.tree.listdir(key))

    @_eio
    def info(self, key: str) -> dict:
        """``{"name", "type": "file"|"directory", "size"}`` (a file's size is exact)."""
        key = key.strip("/")
        node = self.tree.node(key) if key else Dir(2)
        if node is None:
            raise FileNotFoundError(key)
        if isinstance(node, Dir):
            return {"name": key, "type": "directory", "size": 0}
        return {"name": key, "type": "file", "size": self.reader.size(node)}

    def walk(self, key: str = "") -> Iterator[str]:
        """Every file key under ``key``."""
        self.listdir(key)  # FileNotFoundError / NotADirectoryError for a bad key
        try:
            yield from self.tree.files(key.strip("/"))
        except RefmountError as exc:  # a source found malformed while listing
            raise FetchError(str(exc)) from None

    def stats(self) -> dict:
        """The counters ``refmount stats`` shows (every one, zero or not)."""
        return self.counters.snapshot()

    def __reduce__(self):
        """Pickled as its options: unpickled (in a dask worker, say), it is an engine of the same
        sources and options there -- its own caches and connections, one per process. Local paths
        go absolute: the other process may run elsewhere in the tree."""
        opts = dataclasses.replace(self.opts, sources=[(name, location_of(src)) for name, src in self.opts.sources])
        if opts.cache_dir and opts.cache_dir != "auto":
            opts.cache_dir = os.path.abspath(opts.cache_dir)
        if opts.log_file:
            opts.log_file = os.path.abspath(opts.log_file)
        return _arrived, (opts.to_json(), self._cache_tag)

    def close(self) -> None:
        self.closed = True
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.close()
        if self.disk is not None:
            self.disk.close()
            self.disk = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

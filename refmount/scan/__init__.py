"""``refmount scan``: make a kerchunk reference set from netCDF3, NetCDF4 and HDF5 originals.

``scan(["/archive/*.nc"], jobs=4)`` scans every file (``hdf5.py``, ``netcdf3.py``) in a process
pool or on a dask.distributed cluster and combines them, as they come, along the record dimension
(``combine.py``); ``write`` saves the set as JSON (``.json.zst`` compressed) or as a Parquet
reference directory (``parquet.py``). Originals may be local or any fsspec URL, read through the
origins (``refmount.io``)."""

from __future__ import annotations

import contextlib
import errno
import glob
import itertools
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from refmount.errors import FetchError, RefmountError
from refmount.scan import netcdf3
from refmount.scan.combine import Combined, Combiner
from refmount.scan.hdf5 import scan_file
from refmount.scan.model import FileScan, Skip, drop_unrepresentable
from refmount.urls import location_of, split_protocol

log = logging.getLogger("refmount.scan")
# what the scanner makes, as a number: raised whenever a scan of the same files would make other
# references (a fix), so that scans kept by a direct mount of an older refmount are made again
SCANNER = 2
FILE_TIMEOUT = 300.0  # seconds a file's scan may go without reading anything (--file-timeout)
_deadline: float | None = None  # in a guarded worker process: its file timeout
_null = None


def _archive_files(directory: str) -> list[str]:
    return [os.path.join(directory, name) for name in os.listdir(directory) if name.lower().endswith(ARCHIVE_SUFFIXES)
            and not os.path.isdir(os.path.join(directory, name))]


def expand(patterns: list[str], storage_options: dict | None = None) -> list[str]:
    """Files named by paths, globs and directories (their ``ARCHIVE_SUFFIXES`` files), sorted;
    local paths absolute, remote ones as URLs."""
    files: list[str] = []
    for pattern in patterns:
        protocol, path = split_protocol(location_of(pattern))
        if protocol == "file":
            # a directory, named or matched by a glob, stands for its netCDF/HDF5 files
            found = [name for match in (glob.glob(path) if glob.has_magic(path) else [path])
                     for name in (_archive_files(match) if os.path.isdir(match) else [match])]
        else:
            from refmount.io.origins import Origins

            fs = Origins(storage_options or {}).filesystem(protocol)
            found = [f"{protocol}://{p.split('://')[-1]}" for p in fs.glob(path)] if glob.has_magic(path) else [path]
        if not found and protocol == "file" and os.path.isdir(path):
            raise RefmountError(f"{pattern}: a directory with no {', '.join(ARCHIVE_SUFFIXES)} files in it")
        if not found:
            raise RefmountError(f"{pattern}: no such file")
        files += sorted(found)
    return files


def _scan_one(url: str, storage_options: dict, combining: bool) -> FileScan:
    return drop_unrepresentable(_scan_file(url, storage_options, combining))


def _scan_file(url: str, storage_options: dict, combining: bool) -> FileScan:
    import h5py

    protocol, path = split_protocol(url)
    try:
        if protocol == "file":
            from refmount.io.origins import open_original

            try:  # (a FIFO named x.nc: the open would wait for a writer for ever)
                raw = os.fdopen(open_original(path), "rb")
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                raise RefmountError(f"{url}: {exc.strerror}") from None
            name = path
        else:  # through the origins: their timeouts, retries and policy, a request per 1 MiB block
            from refmount.io.blockfile import OriginFile
            from refmount.io.origins import Origins

            raw = OriginFile(Origins(storage_options), url, progress=_alive)
            name = url
        with raw:
            head = raw.read(8)
            raw.seek(0)
            if netcdf3.is_netcdf3(head):
                try:
                    return netcdf3.scan_file(name, raw, raw.seek(0, 2), combining)
                except Skip as exc:
                    raise RefmountError(f"{url}: not a readable netCDF3 file ({exc})") from None
            if protocol == "file":  # HDF5's own file driver: no Python call per read
                raw.close()
                with h5py.File(path, "r") as opened:
                    return scan_file(name, opened, combining)
            with h5py.File(raw, "r") as opened:
                return scan_file(name, opened, combining)
    except FileNotFoundError:
        raise RefmountError(f"{url}: no such file") from None
    except FetchError as exc:
        raise RefmountError(f"{url}: cannot read: {exc}") from None
    except OSError as exc:
        raise RefmountError(f"{url}: not a netCDF3, NetCDF4 or HDF5 file ({exc})") from None
    except RefmountError:
        raise
    except Exception as exc:  # an HDF5 layout nobody foresaw: one line naming the file, never a traceback
        raise RefmountError(f"{url}: cannot scan: {type(exc).__name__}: {exc}") from None


def _reachable(address: str) -> None:
    """A refused TCP connection to the scheduler fails now, not after the client's timeout."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme in ("tcp", "tls") and parts.hostname and parts.port:
        socket.create_connection((parts.hostname, parts.port), timeout=10).close()


def _scans(files: list[str], storage_options: dict, jobs: int, dask: str | None,
           deadline: float | None = None) -> Iterator[FileScan]:
    """Each file's scan, in the files' order: in a pool of ``jobs`` processes, where a file
    whose scan goes ``deadline`` seconds (default ``FILE_TIMEOUT``) without progress ends its
    worker and is named (forked when this process has no threads, else spawned); for one job
    and no ``deadline``, here; or on the dask.distributed cluster at ``dask``. A bounded number
    in flight, so results are combined as they come and memory does not grow with the number of
    files."""
    combining = len(files) > 1
    can_fork = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    if dask is None and (jobs <= 1 or len(files) <= 1) and deadline is None:
        for url in files:
            yield _scan_one(url, storage_options, combining)
        return
    jobs = min(jobs, len(files))
    deadline = deadline or FILE_TIMEOUT
    if dask is not None:
        try:
            from distributed import Client
        except ImportError:
            raise RefmountError("--dask needs dask.distributed: pip install distributed") from None
        try:
            _reachable(dask)
            client = Client(dask, timeout=30)
        except (OSError, TimeoutError, ValueError) as exc:
            raise RefmountError(f"dask scheduler {dask}: cannot connect ({exc})") from None
        workers = max(len(client.scheduler_info().get("workers", {})), 1)

        def submit(batch):
            return client.submit(_scan_batch, batch, storage_options, combining, pure=False), batch, None
        closing = client.close
    else:
        # forks start at once, but only a process without threads may fork safely (a mounted
        # daemon rescanning on reload has threads): else fresh interpreters
        context = multiprocessing.get_context("fork" if can_fork else "spawn")
        pools = [ProcessPoolExecutor(max_workers=jobs, mp_context=context)]
        workers = jobs

        def submit(batch):
            pool = pools[-1]
            with _spawning(context):  # (a pool starts its processes as work is submitted)
                return pool.submit(_scan_batch, batch, storage_options, combining, deadline), batch, pool

        def closing():
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)
    # several files a task (a task costs a round trip), about 8 tasks in flight per worker
    size = max(1, min(64, len(files) // (workers * 16)))
    batches = (files[i:i + size] for i in range(0, len(files), size))
    pending: deque = deque()  # (future, its batch, the pool it went to)
    try:
        for batch in itertools.islice(batches, 8 * workers):
            pending.append(submit(batch))
        while pending:
            future, batch, pool = pending.popleft()
            try:
                done = future.result()
            except BrokenProcessPool:  # a worker ended: every batch it had in flight comes here
                if pool is pools[-1]:  # what follows goes to a fresh pool
                    pools.append(ProcessPoolExecutor(max_workers=jobs, mp_context=context))
                if jobs == 1 and len(batch) == 1:  # one worker, in order: this file was being scanned
                    raise _died(batch[0], deadline) from None
                done = _one_by_one(batch, storage_options, combining, deadline, context)
            following = next(batches, None)
            if following is not None:
                pending.append(submit(following))
            yield from done
    finally:
        for future, _, _ in pending:
            future.cancel()
        closing()


_main_lock = threading.Lock()


@contextlib.contextmanager
def _spawning(context):
    """Around anything that may start a spawned worker: multiprocessing has a fresh interpreter
    import the parent's ``__main__`` first, so a user's script without an ``if __name__ ==
    "__main__"`` guard would run again in every worker (and fail there). The scan needs nothing
    from it: the workers start without it. (Forked workers copy the parent: nothing to do.)"""
    if context.get_start_method() == "fork":
        yield
        return
    with _main_lock:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is None:
                del sys.modules["__main__"]
            else:
                sys.modules["__main__"] = main


def _alive() -> None:
    """The scan of the current file made progress: its deadline starts again."""
    global _null
    if _deadline is not None:
        import faulthandler

        if _null is None:  # where the timer's traceback goes: the parent says what happened
            _null = open(os.devnull, "w")
        faulthandler.dump_traceback_later(_deadline, exit=True, file=_null)


def _scan_batch(urls: list[str], storage_options: dict, combining: bool, deadline: float | None = None) -> list[FileScan]:
    """Each file's scan. With a ``deadline`` (only in a worker process of ours): a file that goes
    that long without progress ends the process -- the HDF5 library can loop forever on a damaged
    file while holding the GIL, where nothing in Python can interrupt it, only a C-level timer."""
    global _deadline
    if deadline is None:
        return [_scan_one(url, storage_options, combining) for url in urls]
    import faulthandler

    _deadline = deadline
    out = []
    try:
        for url in urls:
            _alive()
            out.append(_scan_one(url, storage_options, combining))
    finally:
        faulthandler.cancel_dump_traceback_later()
        _deadline = None
    return out


def _one_by_one(batch: list[str], storage_options: dict, combining: bool, deadline: float, context) -> list[FileScan]:
    """The scans of a batch whose worker ended: each file in a process of its own; the file
    whose process ends again is named in the error."""
    out = []
    for url in batch:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            with _spawning(context):
                future = pool.submit(_scan_batch, [url], storage_options, combining, deadline)
            try:
                out += future.result()
            except BrokenProcessPool:
                raise _died(url, deadline) from None
    return out


def _died(url: str, deadline: float) -> RefmountError:
    return RefmountError(f"{url}: cannot scan: the process scanning it ended without an answer (crashed, or read "
                         f"nothing for {deadline:g} s: a damaged file?)")


def scan_combined(patterns: list[str], jobs: int = 1, concat_dim: str | None = None,
                  storage_options: dict | None = None, progress: bool | None = None,
                  dask: str | None = None, file_timeout: float | None = None) -> tuple[Combined, dict]:
    """``(combined set, summary)`` for the files ``patterns`` name; ``dask``: a scheduler address;
    ``file_timeout``: seconds a file's scan may go without progress before it is given up (worker
    processes always have one, ``FILE_TIMEOUT`` by default; given, one job runs in a worker too)."""
    from tqdm import tqdm

    began = time.monotonic()
    files = expand(patterns, storage_options)
    combiner = Combiner(len(files), concat_dim)
    said: dict[str, int] = {}  # a variable left out of every file is said once
    chunks = 0
    tqdm.monitor_interval = 0  # no monitor thread: a process without threads may fork its workers
    bar = tqdm(total=len(files), unit="file", disable=not (sys.stderr.isatty() if progress is None else progress))
    try:
        for one in _scans(files, storage_options or {}, jobs, dask, file_timeout):
            for warning in one.warnings:
                text = warning.removeprefix(f"{one.url}: ")
                if text not in said:
                    log.warning("%s", warning)
                said[text] = said.get(text, 0) + 1
            combiner.add(one)
            chunks += one.chunks
            bar.update()
            bar.set_postfix(chunks=chunks, refresh=False)
    finally:
        bar.close()
    for text, times in said.items():
        if times > 1:
            log.warning("(%s: the same in %d files)", text.partition(":")[0], times)
    combined = combiner.result()
    summary = {"files": len(files), "arrays": len(combined.arrays), "chunks": combined.chunks,
               "referenced_bytes": combined.referenced_bytes, "seconds": round(time.monotonic() - began, 2),
               "left_out": len(said)}
    return combined, summary


def scan(patterns: list[str], jobs: int = 1, concat_dim: str | None = None, storage_options: dict | None = None,
         progress: bool | None = None, dask: str | None = None, file_timeout: float | None = None) -> tuple[dict, dict]:
    """``(kerchunk v1 reference set, summary)`` for the files ``patterns`` name."""
    combined, summary = scan_combined(patterns, jobs, concat_dim, storage_options, progress, dask, file_timeout)
    return combined.to_refs(), summary


ARCHIVE_SUFFIXES = (".nc", ".nc4", ".cdf", ".h5", ".hdf5", ".he5")  # what a directory's originals are named


def is_archive(source: str) -> bool:
    """A source naming original files rather than a reference set: a glob, a netCDF/HDF5 file,
    or a directory holding such files (and no reference set or repository)."""
    location = location_of(source)
    if "|" in location:
        return False
    protocol, path = split_protocol(location)
    if glob.has_magic(path) or path.lower().endswith(ARCHIVE_SUFFIXES):
        return True
    if protocol == "file" and os.path.isdir(path):
        if any(os.path.exists(os.path.join(path, marker)) for marker in (".zmetadata", "repo", "refs")):
            return False
        return any(name.lower().endswith(ARCHIVE_SUFFIXES) for name in os.listdir(path))
    return False


def identities(files: list[str], storage_options: dict | None = None) -> list[list]:
    """What names each original's state (``Origins.identity``: path, size, times, inode; remote:
    size and ETag -- size alone where the origin reports no version)."""
    from refmount.io.origins import Origins

    origins = Origins(storage_options or {})
    out = []
    for url in files:
        try:
            out.append(origins.identity(url) or [url, origins.size(url), None])
        except Exception as exc:
            raise RefmountError(f"{url}: {exc}") from None
    return out


def is_parquet_output(output: str) -> bool:
    return output.rstrip("/").endswith((".parq", ".parquet"))


def write(refs: dict | Combined, output: str, record_size: int | None = None) -> str:
    """Save a set as ``OUTPUT``: JSON, compressed as its name says (``.zst``/``.zstd``, ``.gz``,
    ``.bz2``, ``.xz``: what a reference file is read back with), or a Parquet reference directory
    for ``.parq``/``.parquet`` (from a ``Combined``, written array by array); returns the path."""
    if is_parquet_output(output):
        from refmount.scan.parquet import RECORD_SIZE, write_parquet

        if not isinstance(refs, Combined):
            raise RefmountError(f"{output}: Parquet output is written from a scan")
        return write_parquet(refs, output, record_size or RECORD_SIZE)
    if isinstance(refs, Combined):
        refs = refs.to_refs()
    data = json.dumps(refs, separators=(",", ":")).encode()
    suffix = os.path.splitext(output)[1].lower()
    if suffix in (".zst", ".zstd"):
        import zstandard

        data = zstandard.compress(data, 9)
    elif suffix in (".gz", ".bz2", ".xz"):  # (written plain under such a name, it could not be read back)
        import bz2
        import gzip
        import lzma

        data = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix](data)
    if os.path.isdir(output):
        raise RefmountError(f"{output}: is a directory")
    tmp = f"{output}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, output)
    except OSError as exc:
        raise RefmountError(f"{output}: {exc.strerror}") from None
    return output


__all__ = ["expand", "identities", "is_archive", "scan", "scan_combined", "write"]

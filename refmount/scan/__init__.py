"""``refmount scan``: make a kerchunk reference set from NetCDF4/HDF5 originals.

``scan(["/archive/*.nc"], jobs=4)`` scans every file in a process pool (``hdf5.py``) and combines
them along the record dimension (``combine.py``); ``write`` saves the set as JSON (``.json.zst``
compressed). Originals may be local or any fsspec URL (read through the origins' filesystems).
"""

from __future__ import annotations

import glob
import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from refmount.errors import FetchError, RefmountError
from refmount.scan import netcdf3
from refmount.scan.combine import combine
from refmount.scan.hdf5 import scan_file
from refmount.scan.model import FileScan, Skip
from refmount.urls import location_of, split_protocol

log = logging.getLogger("refmount.scan")


def expand(patterns: list[str], storage_options: dict | None = None) -> list[str]:
    """Files named by paths, globs and directories (their ``*.nc``, ``*.h5``), sorted; local
    paths absolute, remote ones as URLs."""
    files: list[str] = []
    for pattern in patterns:
        protocol, path = split_protocol(location_of(pattern))
        if protocol == "file":
            if os.path.isdir(path):
                found = [p for ext in ("nc", "nc4", "h5", "hdf5", "he5") for p in glob.glob(os.path.join(path, f"*.{ext}"))]
            else:
                found = glob.glob(path) if glob.has_magic(path) else [path]
        else:
            from refmount.io.origins import Origins

            fs = Origins(storage_options or {}).filesystem(protocol)
            found = [f"{protocol}://{p.split('://')[-1]}" for p in fs.glob(path)] if glob.has_magic(path) else [path]
        if not found:
            raise RefmountError(f"{pattern}: no such file")
        files += sorted(found)
    return files


def _scan_one(url: str, storage_options: dict, combining: bool) -> FileScan:
    import h5py

    protocol, path = split_protocol(url)
    try:
        if protocol == "file":
            raw = open(path, "rb")
            name = path
        else:  # through the origins: their timeouts, retries and policy, a request per 1 MiB block
            from refmount.io.blockfile import OriginFile
            from refmount.io.origins import Origins

            raw = OriginFile(Origins(storage_options), url)
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


def scan(patterns: list[str], jobs: int = 1, concat_dim: str | None = None, storage_options: dict | None = None,
         progress: bool | None = None) -> tuple[dict, dict]:
    """``(reference set, summary)`` for the files ``patterns`` name."""
    from tqdm import tqdm

    began = time.monotonic()
    files = expand(patterns, storage_options)
    storage_options = storage_options or {}
    scans: dict[str, FileScan] = {}
    bar = tqdm(total=len(files), unit="file", disable=not (sys.stderr.isatty() if progress is None else progress))
    try:
        if jobs > 1 and len(files) > 1:
            # fresh interpreters, not forks: a mounted daemon rescanning on reload has threads
            with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(_scan_one, url, storage_options, True): url for url in files}
                for future in as_completed(futures):
                    scans[futures[future]] = future.result()
                    bar.update()
        else:
            for url in files:
                scans[url] = _scan_one(url, storage_options, len(files) > 1)
                bar.update()
    finally:
        bar.close()
    ordered = [scans[url] for url in files]
    for one in ordered:
        for warning in one.warnings:
            log.warning("%s", warning)
    refs = combine(ordered, concat_dim)
    ranged = [v for v in refs["refs"].values() if isinstance(v, list)]
    summary = {"files": len(files), "arrays": sum(1 for k in refs["refs"] if k.endswith("/.zarray")),
               "chunks": sum(1 for k in refs["refs"] if not k.rpartition("/")[2].startswith(".")),
               "referenced_bytes": sum(v[2] for v in ranged if len(v) == 3), "seconds": round(time.monotonic() - began, 2),
               "left_out": sum(len(one.warnings) for one in ordered)}
    return refs, summary


ARCHIVE_SUFFIXES = (".nc", ".nc4", ".h5", ".hdf5", ".he5")


def is_archive(source: str) -> bool:
    """A source naming original files rather than a reference set: a glob, a NetCDF4/HDF5 file,
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
    """What names each original's state: path, size, modification time (remote: size and ETag)."""
    out = []
    for url in files:
        protocol, path = split_protocol(url)
        try:
            if protocol == "file":
                st = os.stat(path)
                out.append([url, st.st_size, st.st_mtime_ns])
            else:
                from refmount.io.origins import Origins

                origins = Origins(storage_options or {})
                out.append([url, origins.size(url), origins.version(url)])
        except Exception as exc:
            raise RefmountError(f"{url}: {exc}") from None
    return out


def scan_kept(source: str, directory: str, storage_options: dict | None = None, jobs: int = 4) -> tuple[dict, bool]:
    """``(references, kept)`` for an archive source: the scan kept in ``directory`` when every
    original is as it was (same files, sizes, times), else a new scan, then kept there."""
    import hashlib

    import zstandard

    files = expand([source], storage_options)
    key = hashlib.sha256(json.dumps(identities(files, storage_options)).encode()).hexdigest()[:32]
    path = os.path.join(directory, "scans", f"{key}.json.zst")
    try:
        with open(path, "rb") as f:
            return json.loads(zstandard.ZstdDecompressor().decompress(f.read(), max_output_size=1 << 34)), True
    except (OSError, ValueError, zstandard.ZstdError):
        pass  # not kept, or unreadable: scan again
    refs, summary = scan(files, jobs=jobs, progress=False)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write(refs, path)
    except (OSError, RefmountError) as exc:
        log.warning("scan of %s not kept in %s: %s", source, directory, exc)
    log.info("scanned %s: %d files, %d chunks in %.1f s", source, summary["files"], summary["chunks"], summary["seconds"])
    return refs, False


def write(refs: dict, output: str) -> str:
    """Save ``refs`` as ``OUTPUT`` (``.json``, or zstd-compressed for ``.zst``); returns the path."""
    data = json.dumps(refs, separators=(",", ":")).encode()
    if output.endswith(".zst"):
        import zstandard

        data = zstandard.compress(data, 9)
    tmp = f"{output}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, output)
    except OSError as exc:
        raise RefmountError(f"{output}: {exc.strerror}") from None
    return output


__all__ = ["expand", "identities", "is_archive", "scan", "scan_kept", "write"]

"""Parsed indexes kept on disk, so a remount -- or another node sharing the cache directory --
maps them into memory instead of parsing the reference set again.

``KeptIndexes(directory).get(identity)`` / ``put(identity, index)``: ``identity`` names the
state of what the index was made from (a reference file's location, size, modification time or
ETag; an archive's files). One directory per kept index under ``DIRECTORY/indexes/``: NumPy
arrays (``.npy``, memory-mapped), byte blobs (memory-mapped) and ``meta.json`` with their CRC-32s.
Written under a temporary name and published by ``rename`` (atomic, and safe on NFS: no locks);
a kept index that is torn or altered is discarded with a warning and the set parsed again. At
most ``limit`` are kept, the least recently used removed first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import shutil
import time
import uuid
import zlib

import numpy as np

from refmount.errors import RefmountError
from refmount.index import CompactIndex

log = logging.getLogger("refmount.kept")

FORMAT = 1
KEEP_MIN = 10_000  # smaller indexes parse faster than they map
MAX_BYTES = 2 << 30  # all kept indexes together, at most


def _crc(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _map(path: str):
    """The file's bytes, memory-mapped (an empty file: ``b""``, which cannot be mapped)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class KeptIndexes:
    def __init__(self, directory: str, limit: int = 16):
        self.directory = os.path.join(directory, "indexes")
        self.limit = limit

    def _path(self, identity) -> str:
        key = hashlib.sha256(json.dumps([FORMAT, identity], sort_keys=True, default=str).encode()).hexdigest()[:32]
        return os.path.join(self.directory, key)

    def _trusted(self) -> bool:
        """Only a directory this user owns, that nobody else may write, is read or written: a
        kept index says which bytes of which files a mount serves."""
        try:  # (another user who may write the parent can move this one away, not forge it as ours)
            st = os.stat(self.directory)
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                log.warning("kept indexes in %s not used: the directory is not this user's alone", self.directory)
                return False
        except FileNotFoundError:
            return True  # made on the first put, by this user
        except OSError:
            return False
        return True

    def get(self, identity) -> CompactIndex | None:
        """The index kept for ``identity``, memory-mapped; None when there is none (or it was
        discarded as damaged)."""
        if not self._trusted():
            return None
        path = self._path(identity)
        try:
            with open(os.path.join(path, "meta.json"), "rb") as f:
                meta = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return self._discard(path, f"unreadable meta.json ({exc})")
        try:
            if meta.get("format") != FORMAT or meta.get("identity") != json.loads(json.dumps(identity, default=str)):
                raise RefmountError("made for another reference set")
            for name, crc in meta["crc"].items():
                if _crc(os.path.join(path, name)) != crc:
                    raise RefmountError(f"{name} does not match its checksum")
            arrays = {name: np.load(os.path.join(path, f"{name}.npy"), mmap_mode="r", allow_pickle=False)
                      for name in meta["arrays"]}
            blobs = {name: _map(os.path.join(path, f"{name}.bin")) for name in meta["blobs"]}
            index = CompactIndex.from_kept(meta["index"], arrays, blobs)
        except (OSError, ValueError, KeyError, TypeError, RefmountError) as exc:
            return self._discard(path, str(exc))
        try:
            os.utime(os.path.join(path, "meta.json"))  # used: last to be evicted
        except OSError:
            pass
        return index

    def _discard(self, path: str, why: str) -> None:
        log.warning("kept index %s discarded (%s); parsing the reference set again", path, why)
        shutil.rmtree(path, ignore_errors=True)
        return None

    def put(self, identity, index: CompactIndex) -> None:
        """Keep ``index`` for ``identity``; a failure to write is a warning, never an error."""
        path = self._path(identity)
        tmp = os.path.join(self.directory, f".tmp-{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            if not self._trusted():
                return
            os.makedirs(tmp, mode=0o700)
            meta_index, arrays, blobs = index.kept_form()
            crc = {}
            for name, array in arrays.items():
                np.save(os.path.join(tmp, f"{name}.npy"), np.ascontiguousarray(array), allow_pickle=False)
                crc[f"{name}.npy"] = _crc(os.path.join(tmp, f"{name}.npy"))
            for name, blob in blobs.items():
                with open(os.path.join(tmp, f"{name}.bin"), "wb") as f:
                    f.write(blob)
                crc[f"{name}.bin"] = zlib.crc32(blob)
            meta = {"format": FORMAT, "identity": identity, "index": meta_index, "arrays": sorted(arrays),
                    "blobs": sorted(blobs), "crc": crc, "kept": time.time()}
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(meta, f, default=str)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.rename(tmp, path)
            except OSError:  # kept meanwhile by another mount (or node): theirs stays
                shutil.rmtree(tmp, ignore_errors=True)
            self._evict()
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            log.warning("index not kept in %s: %s", self.directory, exc.strerror or exc)

    def _evict(self) -> None:
        """Beyond ``limit`` kept indexes, or beyond ``MAX_BYTES`` (or a tenth of the free space,
        if less: a home directory's quota is no place for gigabytes of indexes), remove the least
        recently used -- and temporary directories older than an hour (a writer that died)."""
        entries = []
        now = time.time()
        for name in os.listdir(self.directory):
            full = os.path.join(self.directory, name)
            try:
                if name.startswith(".tmp-"):
                    if now - os.stat(full).st_mtime > 3600:
                        shutil.rmtree(full, ignore_errors=True)
                    continue
                size = sum(e.stat().st_size for e in os.scandir(full))
                entries.append((os.stat(os.path.join(full, "meta.json")).st_mtime, size, full))
            except OSError:
                continue
        entries.sort()
        try:
            st = os.statvfs(self.directory)
            budget = min(MAX_BYTES, (st.f_bavail * st.f_frsize + sum(e[1] for e in entries)) // 10)
        except OSError:
            budget = MAX_BYTES
        total = sum(size for _, size, _ in entries)
        for n, (_, size, full) in enumerate(entries):
            if len(entries) - n <= self.limit and total <= budget:
                break
            shutil.rmtree(full, ignore_errors=True)  # a mount using it keeps its maps
            total -= size

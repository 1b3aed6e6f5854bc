"""A read-only, seekable file object over one original, read through ``Origins`` in aligned blocks.

Libraries that parse a file's own metadata (h5py walking an HDF5 B-tree, a netCDF3 header) make
many tiny reads; each becomes at most one origin request per block, with the origins' timeouts,
retries, policy and exact-length checks, and recently used blocks are kept (a bounded LRU).
"""

from __future__ import annotations

import io
import threading
from typing import Callable

from cachetools import LRUCache

from refmount.io.origins import Origins

BLOCK = 1 << 20  # an HDF5 file's metadata is mostly near its start and near each dataset's header
KEPT_BLOCKS = 32  # at most 32 MiB held per open file


class OriginFile(io.RawIOBase):
    def __init__(self, origins: Origins, url: str, block: int = BLOCK, kept: int = KEPT_BLOCKS,
                 progress: Callable[[], None] | None = None):
        super().__init__()
        self.origins, self.url, self.block = origins, url, block
        self.progress = progress  # called after each block fetched
        self.size = origins.size(url)
        self.pos = 0
        self._blocks: LRUCache = LRUCache(maxsize=kept)
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(22, f"{self.url}: seek before the start")
        self.pos = base + offset
        return self.pos

    def _get(self, index: int) -> bytes:
        with self._lock:
            data = self._blocks.get(index)
        if data is None:
            start = index * self.block
            data = self.origins.read(self.url, start, min(start + self.block, self.size))
            with self._lock:
                self._blocks[index] = data
            if self.progress is not None:
                self.progress()
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self.pos + len(view), self.size)
        done = 0
        while self.pos < end:
            index, within = divmod(self.pos, self.block)
            data = self._get(index)
            n = min(len(data) - within, end - self.pos)
            view[done:done + n] = data[within:within + n]
            done += n
            self.pos += n
        return done

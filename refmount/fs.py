"""FUSE operations over an ``Index`` (mfusepy's path-based API). Knows nothing of formats.

Every file is read-only (0444), every directory 0555; failures to fetch are EIO, never
zeros; absent keys are ENOENT so Zarr readers use the fill value.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import threading
from typing import Callable

from .errors import FetchError
from .index import Dir, Index, Inline, Ref
from .prefetch import Prefetcher
from .reader import Reader

log = logging.getLogger("refmount.fs")

BLKSIZE = 256 << 10
MAX_BACKGROUND = 64


def _errors_to_eio(method):
    """Fetch failures and bugs become EIO with a log line; OSErrors with an errno pass."""

    @functools.wraps(method)
    def wrapper(self, path, *args):
        try:
            return method(self, path, *args)
        except FetchError as exc:
            log.error("EIO %s: %s", path, exc)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None
        except OSError as exc:
            if exc.errno:
                raise
            log.error("EIO %s: %s", path, exc)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None
        except Exception:
            log.exception("EIO %s: internal error in %s", path, method.__name__)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None

    return wrapper


class _Handle:
    """An open file: the reference and tree it was opened on (a reload never changes them)."""

    __slots__ = ("ref", "size", "key", "tree", "touched")

    def __init__(self, ref: Ref, size: int, key: str, tree: Index):
        self.ref, self.size, self.key, self.tree = ref, size, key, tree
        self.touched = False


def _enoent() -> OSError:
    return OSError(errno.ENOENT, os.strerror(errno.ENOENT))


class RefFS:
    """The operations object handed to ``mfusepy.FUSE``."""

    use_ns = True

    def __init__(
        self,
        tree: Index,
        reader: Reader,
        on_init: Callable[[], None] | None = None,
        prefetcher: Prefetcher | None = None,
    ):
        self.tree = tree
        self.reader = reader
        self.on_init = on_init
        self.prefetcher = prefetcher
        self.uid, self.gid = os.getuid(), os.getgid()
        self._open: dict[int, _Handle] = {}
        self._next_fh = 1
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------
    def init_with_config(self, conn, config) -> None:
        if conn is not None:  # more kernel readahead requests in flight (kernel default 12)
            conn.max_background = MAX_BACKGROUND
            conn.congestion_threshold = MAX_BACKGROUND * 3 // 4
        if self.on_init is not None:
            threading.Thread(target=self.on_init, name="refmount-ready", daemon=True).start()

    # -- metadata ---------------------------------------------------------------------
    def _attrs(self, mode: int, size: int, nlink: int) -> dict:
        t = self.tree.mtime_ns
        return {
            "st_mode": mode,
            "st_nlink": nlink,
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_blksize": BLKSIZE,
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_atime": t,
            "st_mtime": t,
            "st_ctime": t,
        }

    @_errors_to_eio
    def getattr(self, path: str, fh: int | None = None) -> dict:
        handle = self._open.get(fh) if fh is not None else None
        if handle is not None:
            return self._attrs(stat.S_IFREG | 0o444, handle.size, 1)
        node = self.tree.node(path.lstrip("/"))
        if node is None:
            raise _enoent()
        if isinstance(node, Dir):
            return self._attrs(stat.S_IFDIR | 0o555, 0, node.nlink)
        return self._attrs(stat.S_IFREG | 0o444, self.reader.size(node), 1)

    @_errors_to_eio
    def readdir(self, path: str, fh: int):
        key = path.lstrip("/")
        tree = self.tree
        if not isinstance(tree.node(key), Dir):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        return self._entries(tree, key)

    @staticmethod
    def _entries(tree: Index, key: str):
        yield "."
        yield ".."
        for name, is_dir in tree.listdir(key):
            yield name, (stat.S_IFDIR if is_dir else stat.S_IFREG), 0

    def statfs(self, path: str) -> dict:
        return {"f_bsize": BLKSIZE, "f_frsize": BLKSIZE, "f_namemax": 255}

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))

    def listxattr(self, path: str) -> list[str]:
        return []

    # -- data -------------------------------------------------------------------------
    @_errors_to_eio
    def open(self, path: str, flags: int) -> int:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        tree, key = self.tree, path.lstrip("/")
        node = tree.node(key)
        if node is None:
            raise _enoent()
        if isinstance(node, Dir):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        handle = _Handle(node, self.reader.size(node), key, tree)
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self._open[fh] = handle
        return fh

    @_errors_to_eio
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        handle = self._open[fh]
        if isinstance(handle.ref, Inline):
            return handle.ref.data[offset : offset + size]
        if not handle.touched:
            handle.touched = True
            if self.prefetcher is not None:
                self.prefetcher.on_first_read(handle.tree, handle.key)
        return self.reader.read(handle.ref, offset, size, handle.size)

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            self._open.pop(fh, None)
        return 0

"""FUSE operations over an ``Index`` (mfusepy's path-based API). Knows nothing of formats.

Every file is read-only (0444), every directory 0555; failures to fetch are EIO, never
zeros; absent keys are ENOENT so Zarr readers use the fill value.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import itertools
import json
import logging
import os
import queue
import stat
import threading
import time
from typing import Callable

from refmount.errors import FetchError, RefmountError
from refmount.index import Decoded, Dir, Index, Inline, Range, Ref, Unreadable, Whole
from refmount.io.prefetch import Prefetcher
from refmount.io.reader import Reader

log = logging.getLogger("refmount.fs")

BLKSIZE = 256 << 10
MAX_BACKGROUND = 64


def _shown(path) -> str:
    return path.decode(errors="replace") if isinstance(path, bytes) else str(path)


def _errors_to_eio(method):
    """Fetch failures and bugs become EIO with a log line; OSErrors with an errno pass."""

    @functools.wraps(method)
    def wrapper(self, path, *args):
        try:
            return method(self, path, *args)
        except (FetchError, RefmountError) as exc:  # RefmountError: a source found malformed late
            log.error("EIO %s: %s", _shown(path), exc)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None
        except OSError as exc:
            if exc.errno:
                raise
            log.error("EIO %s: %s", _shown(path), exc)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None
        except Exception:
            log.exception("EIO %s: internal error in %s", _shown(path), method.__name__)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None

    return wrapper


class _Handle:
    """An open file: the reference and tree it was opened on (a reload never changes them)."""

    __slots__ = ("ref", "size", "key", "tree", "touched", "stale", "served", "paged")

    def __init__(self, ref: Ref, size: int, key: str, tree: Index, paged: bool = True):
        self.ref, self.size, self.key, self.tree = ref, size, key, tree
        self.touched = False
        self.served = 0  # bytes read through it
        self.paged = paged  # its reads fill the kernel's page cache (not O_DIRECT)
        self.stale = False  # open across a reload


class _Listing:
    """An open directory: its entries as one iterator, so each page continues where the last
    stopped; an entry the kernel had no room for is kept for the next page."""

    def __init__(self, tree: Index, key: str):
        self.tree, self.key = tree, key
        self.restart(0)

    def restart(self, offset: int) -> None:
        self._entries = itertools.chain(((".", True), ("..", True)), self.tree.listdir(self.key))
        self._held = None
        self.position = 0
        for _ in itertools.islice(self, offset):
            pass

    def __iter__(self):
        return self

    def __next__(self) -> tuple[str, bool]:
        if self._held is not None:
            entry, self._held = self._held, None
        else:
            entry = next(self._entries)
        self.position += 1
        self._last = entry
        return entry

    def hold_last(self) -> None:
        """The last entry was not accepted: give it again next time."""
        self._held = self._last
        self.position -= 1


def fuse_class(mfusepy):
    """``mfusepy.FUSE`` with readdirplus: paged (offset) listings that carry each entry's
    attributes, so ``ls -l`` and ``find`` need no lookup per entry."""

    lib = mfusepy._libfuse
    lib.fuse_get_session.restype = ctypes.c_void_p
    lib.fuse_get_session.argtypes = [ctypes.c_void_p]
    lib.fuse_lowlevel_notify_inval_entry.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t]
    lib.fuse_invalidate_path.argtypes = [ctypes.c_void_p, ctypes.c_char_p]

    class FUSE(mfusepy.FUSE):
        def _init(self, conn, config):
            fuse = ctypes.c_void_p(lib.fuse_get_context().contents.fuse)
            session = lib.fuse_get_session(fuse)
            encoding, errors = self.encoding, self.errors

            def invalidate(names, paths=()) -> None:
                """Drop the kernel's entries under the root (and their subtrees, but for the
                entries in use), and the root's attributes: the next lookups see the new tree.
                ``paths`` (entries known to be in use: open files) lose their attributes and
                cached pages instead (a path the kernel does not know is skipped)."""
                for name in names:
                    raw = name.encode(encoding, errors)
                    lib.fuse_lowlevel_notify_inval_entry(session, FUSE_ROOT_ID, raw, len(raw))
                lib.fuse_invalidate_path(fuse, b"/")
                for path in paths:
                    lib.fuse_invalidate_path(fuse, ("/" + path).encode(encoding, errors))

            self.operations.invalidate = invalidate
            return super()._init(conn, config)

        def open(self, path, fip):
            """Open with the page-cache policy of ``RefFS.cache_mode`` (not ``kernel_cache``)."""
            fi = fip.contents
            fi.fh = self.operations.open(path.decode(self.encoding, self.errors), fi.flags)
            fi.keep_cache, fi.direct_io = self.operations.cache_mode(fi.fh)
            return 0

        def read(self, path, buf, size, offset, fip):
            """One copy, from the cached block into the kernel's buffer (not a slice first)."""
            data, start, end = self.operations.read_span(
                None if path is None else path.decode(self.encoding, self.errors), size, offset, fip.contents.fh)
            n = end - start
            if n > 0:
                if type(data) is bytes:  # its buffer's address, without a copy
                    ctypes.memmove(buf, ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value + start, n)
                else:
                    ctypes.memmove(buf, bytes(data[start:end]), n)
            return n

        def getxattr(self, path, name, value, size, *args):
            # ls asks every entry for security.selinux and system.posix_acl_access: answer
            # those without decoding anything
            if not self.operations.xattrs:  # the kernel stops asking for this mount's lifetime
                return -errno.EOPNOTSUPP
            if not name.startswith(XATTR_BYTES):
                return -errno.ENODATA
            return super().getxattr(path, name, value, size, *args)

        def listxattr(self, path, namebuf, size):
            if not self.operations.xattrs:
                return -errno.EOPNOTSUPP
            return super().listxattr(path, namebuf, size)

        @_errors_to_eio  # (a listing fails while it is walked: EIO and a log line, not EINVAL)
        def readdir_fuse_3(self, path, buf, filler, offset, fip, flags):
            ops = self.operations
            st = mfusepy.c_stat()
            for name, attrs, next_offset in ops.listing(fip.contents.fh, offset):
                ctypes.memset(ctypes.byref(st), 0, ctypes.sizeof(st))
                if attrs is not None:
                    mfusepy.set_st_attrs(st, attrs, use_ns=True)
                    plus = FUSE_FILL_DIR_PLUS
                else:
                    plus = 0
                if filler(buf, name.encode(self.encoding, self.errors), st, next_offset, plus) != 0:
                    ops._dirs[fip.contents.fh].hold_last()
                    break
            return 0

    return FUSE


FUSE_FILL_DIR_PLUS = 2
FUSE_ROOT_ID = 1
SETTLE_SECONDS = 0.5
XATTR = "user.refmount."
XATTR_BYTES = XATTR.encode()


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
        sources: list[tuple[str, str]] | None = None,
        stats: Callable[[], dict] | None = None,
        xattrs: bool = True,
    ):
        self.tree = tree
        self.xattrs = xattrs
        self.sources = sources or []
        self.stats = stats
        self.invalidate: Callable[..., None] | None = None  # set once mounted (fuse_class)
        self.reader = reader
        self.on_init = on_init
        self.prefetcher = prefetcher
        self.uid, self.gid = os.getuid(), os.getgid()
        self._open: dict[int, _Handle] = {}
        self._stale_open: dict[str, int] = {}  # path -> handles still open on a replaced tree
        self._held: dict[str, _Handle] = {}  # path -> the last of them marked
        self._opens: dict[str, int] = {}  # path -> handles open on it
        # After a reload the kernel may keep the entry of a file it was using while the
        # entries were invalidated -- with the old size and the old pages. Such paths are
        # ``_dirty``: in use at the swap, opened while it settles, or held by a handle on the
        # old tree. Their opens bypass the page cache until the kernel has dropped their
        # attributes and pages (by a thread of its own: never in a FUSE thread, which a page
        # lock could hold up); every other path's entry was dropped, and its new mtime drops
        # its pages.
        self._generation = 0
        self._dirty: set[str] = set()
        self._pending: dict[str, int] = {}  # dirty path -> the reload it was asked for after
        self._refresh_queue: queue.SimpleQueue | None = None
        self._settled = threading.Event()  # a swap's invalidations are over
        self._settled.set()
        # path -> a closed handle that gave the kernel every byte while others were open: the
        # kernel's release comes after close returns, so a reopen can overtake it
        self._whole: dict[str, _Handle] = {}
        self._dirs: dict[int, _Listing] = {}
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
    def swap(self, tree: Index, sources: list[tuple[str, str]] | None = None) -> None:
        """Serve ``tree`` from now on. Open files keep the tree they were opened on; the
        kernel forgets cached names and attributes (of open files too: their entries outlive
        the invalidation of their directories), and the paths it may still hold old bypass the
        page cache until it has dropped their attributes and pages (``cache_mode``)."""
        old = self.tree
        self._settled.clear()
        with self._lock:
            self.tree = tree
            self._generation += 1
            for handle in self._open.values():
                if handle.tree is not tree and not handle.stale:
                    self._mark_stale(handle)
            in_use = set(self._opens)
            self._dirty.update(in_use)
        if sources is not None:
            self.sources = sources
        try:
            names = {name for name, _ in old.listdir("")} | {name for name, _ in tree.listdir("")}
            if self._invalidate(names, in_use):
                # a lookup answered from the old tree just before the swap can reach the kernel
                # after the first invalidation: a second one, once those have drained, clears it
                time.sleep(SETTLE_SECONDS)
                with self._lock:
                    in_use = set(self._opens)
                    self._dirty.update(in_use)
                self._invalidate(names, in_use)
        finally:  # (the paths' refreshes wait for this)
            self._settled.set()

    def _invalidate(self, names, paths) -> bool:
        """``invalidate`` if mounted and not stopping (it is unset then); False otherwise."""
        invalidate = self.invalidate
        if invalidate is None:
            return False
        invalidate(names, paths)
        return True

    def _mark_stale(self, handle: _Handle) -> None:
        """``handle`` reads a replaced tree: new opens of its path bypass the page cache until
        it closes. Called under the lock."""
        handle.stale = True
        self._stale_open[handle.key] = self._stale_open.get(handle.key, 0) + 1
        self._held[handle.key] = handle

    def _attrs(self, tree: Index, mode: int, size: int, nlink: int) -> dict:
        t = tree.mtime_ns
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
        key = path.lstrip("/")
        held = self._held.get(key)
        if held is not None:  # see ``_held_attrs``
            return self._held_attrs(held)
        handle = self._open.get(fh) if fh is not None else None
        if handle is not None:
            return self._attrs(handle.tree, stat.S_IFREG | 0o444, handle.size, 1)
        tree = self.tree
        node = tree.node(key)
        if node is None:
            raise _enoent()
        if isinstance(node, Dir):
            return self._attrs(tree, stat.S_IFDIR | 0o555, 0, node.nlink)
        return self._attrs(tree, stat.S_IFREG | 0o444, self.reader.size(node), 1)

    # -- directories --------------------------------------------------------------------
    @_errors_to_eio
    def opendir(self, path: str) -> int:
        tree, key = self.tree, path.lstrip("/")
        node = tree.node(key)
        if node is None:
            raise _enoent()
        if not isinstance(node, Dir):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self._dirs[fh] = _Listing(tree, key)
        return fh

    def releasedir(self, path: str, fh: int) -> int:
        with self._lock:
            self._dirs.pop(fh, None)
        return 0

    def _held_attrs(self, handle: _Handle) -> dict:
        """The attributes of a path while a handle opened before a reload is open on it: that
        handle's file's. The kernel keeps one size per path, and reads through the page cache
        stop at it: the new tree's size would cut the holder's file short (or run it past its
        end). Opens meanwhile bypass the page cache, so they read the new file to its end; after
        the holder closes, the kernel is told to forget these (``release``)."""
        return self._attrs(handle.tree, stat.S_IFREG | 0o444, handle.size, 1)

    def _entry_attrs(self, tree: Index, path: str, is_dir: bool) -> dict | None:
        """Attributes for readdirplus, when known without asking an origin."""
        held = self._held.get(path)
        if held is not None:
            return self._held_attrs(held)
        node = tree.node(path)
        if isinstance(node, Dir):
            return self._attrs(tree, stat.S_IFDIR | 0o555, 0, node.nlink)
        if node is None or (isinstance(node, Whole) and not self.reader.origins.size_known(node.url)):
            return None
        return self._attrs(tree, stat.S_IFREG | 0o444, self.reader.size(node), 1)

    def listing(self, fh: int, offset: int):
        """``(name, attrs or None, next offset)`` from ``offset`` on; resumes in O(1)."""
        listing = self._dirs[fh]
        if offset != listing.position:
            listing.restart(offset)
        prefix = listing.key + "/" if listing.key else ""
        for name, is_dir in listing:
            attrs = None if name in (".", "..") else self._entry_attrs(listing.tree, prefix + name, is_dir)
            yield name, attrs, listing.position

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

    # -- extended attributes: where each file's bytes come from ----------------------------
    def _xattrs(self, path: str) -> dict[str, bytes]:
        key = path.lstrip("/")
        tree = self.tree
        node = tree.node(key)
        if node is None:
            raise _enoent()
        values: dict[str, str] = {}
        sources = self.sources
        source = sources[0][1] if len(sources) == 1 else dict(sources).get(key.partition("/")[0])
        if source is not None:
            values["source"] = source
        if isinstance(node, Decoded):
            values["view"] = "decoded"
            node = node.source
        if isinstance(node, Inline):
            values.update(kind="inline", length=str(len(node.data)))
        elif isinstance(node, Range):
            values.update(kind="range", url=node.url, offset=str(node.offset), length=str(node.length))
            if node.check:
                values["check"] = node.check
        elif isinstance(node, Unreadable):
            values.update(kind="unreadable", length=str(node.length), reason=node.reason)
        elif isinstance(node, Whole):
            values.update(kind="whole", url=node.url, offset="0")
            if self.reader.origins.size_known(node.url):
                values["length"] = str(self.reader.size(node))
        if key == "" and self.stats is not None:
            values["stats"] = json.dumps(self.stats(), sort_keys=True)
        return {XATTR + name: value.encode("utf-8", "surrogateescape") for name, value in values.items()}

    @_errors_to_eio
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        value = self._xattrs(path).get(name)
        if value is None:
            raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))
        return value

    @_errors_to_eio
    def listxattr(self, path: str) -> list[str]:
        return list(self._xattrs(path))

    def statfs(self, path: str) -> dict:
        return {"f_bsize": BLKSIZE, "f_frsize": BLKSIZE, "f_namemax": 255}

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
        handle = _Handle(node, self.reader.size(node), key, tree, paged=not flags & getattr(os, "O_DIRECT", 0))
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self._open[fh] = handle
            self._opens[key] = self._opens.get(key, 0) + 1
            if tree is not self.tree:  # looked up before a reload that ended since
                self._mark_stale(handle)
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        data, start, end = self.read_span(path, size, offset, fh)
        return data if start == 0 and end == len(data) else data[start:end]

    @_errors_to_eio
    def read_span(self, path: str, size: int, offset: int, fh: int) -> tuple[bytes, int, int]:
        """``read`` as ``(data, start, end)``: the FUSE layer copies ``data[start:end]`` into
        the kernel's buffer straight from the cached block."""
        handle = self._open[fh]
        if isinstance(handle.ref, Inline):
            n = len(handle.ref.data)
            return handle.ref.data, min(offset, n), min(offset + size, n)
        if not handle.touched:
            handle.touched = True
            if self.prefetcher is not None:
                self.prefetcher.on_first_read(handle.tree, handle.key, handle.ref)
        span = self.reader.read_span(handle.ref, offset, size, handle.size)
        handle.served += span[2] - span[1]  # (no lock: a lost update only keeps a chunk in memory longer)
        return span

    def cache_mode(self, fh: int) -> tuple[bool, bool]:
        """``(keep_cache, direct_io)`` for a new open: the page cache, kept across opens --
        but for a path the kernel may hold old (``_dirty``; opened while a swap settles makes
        one), whose opens bypass the cache until the kernel has dropped its attributes and
        pages (asked for here, done by ``_refresh_paths``), and while a handle on the old tree
        is open (it may fill the cache with the old bytes), until after it closes."""
        with self._lock:
            handle = self._open[fh]
            key = handle.key
            if not self._generation or (self._settled.is_set() and key not in self._dirty):
                return True, False
            self._dirty.add(key)
            if not self._stale_open.get(key):
                self._ask_refresh(key)
            handle.paged = False  # (the kernel keeps none of what it reads)
        return False, True

    def _ask_refresh(self, key: str) -> None:
        """Have the kernel drop ``key``'s attributes and pages (``_refresh_paths``). Called
        under the lock."""
        if self._pending.get(key) == self._generation:
            return
        self._pending[key] = self._generation
        if self._refresh_queue is None:
            self._refresh_queue = queue.SimpleQueue()
            threading.Thread(target=self._refresh_paths, args=(self._refresh_queue,), daemon=True,
                             name="refmount-refresh-paths").start()
        self._refresh_queue.put((key, self._generation))

    def _refresh_paths(self, todo: queue.SimpleQueue) -> None:
        """Drop the kernel's attributes and pages of each path asked for, then let its opens
        use the page cache again (unless a reload came in between: then it is asked again)."""
        while True:
            key, generation = todo.get()
            # after the swap's last invalidation: an entry answered from the old tree just
            # before the swap may reach the kernel until then, with the old size
            self._settled.wait()
            try:
                self._invalidate((), [key])
            except Exception:  # (never expected) the path stays dirty: its opens keep bypassing
                log.exception("cannot have the kernel drop what it holds of %s", key)
                continue
            with self._lock:
                if self._pending.get(key) == generation:
                    del self._pending[key]
                if generation == self._generation and self._settled.is_set() and not self._stale_open.get(key):
                    self._dirty.discard(key)

    def release(self, path: str, fh: int) -> int:
        handle_done = None
        with self._lock:
            handle = self._open.pop(fh, None)
            if handle is None:
                return 0
            others = self._opens.pop(handle.key) - 1
            whole = handle.served >= handle.size and handle.paged and not handle.stale
            if others:
                self._opens[handle.key] = others
                if whole:
                    self._whole[handle.key] = handle
            else:
                # every byte of it went to the kernel's page cache (kept across opens), through
                # this handle or one closed while this was open: the kernel holds it from now
                # on, and the memory it took here takes the next chunk fetched (fresh pages for
                # every chunk cost a third of a remote walk's CPU)
                earlier = self._whole.pop(handle.key, None)
                handle_done = handle if whole else earlier
            if handle.stale:
                left = self._stale_open[handle.key] - 1
                if left:
                    self._stale_open[handle.key] = left
                else:  # it may have left the old size or pages in the kernel: done again
                    del self._stale_open[handle.key]
                    self._held.pop(handle.key, None)
                    self._dirty.add(handle.key)
                    self._ask_refresh(handle.key)  # (now, not at the next open: for stat too)
        if handle_done is not None:
            self.reader.served(handle_done.ref, handle_done.size)
        return 0

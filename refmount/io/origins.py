"""Origins: fsspec filesystems per protocol, exact ranged reads with timeouts and retries.

A fetched body whose length differs from what was asked is an error, never padding.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import fcntl
import logging
import os
import stat
import threading
import time
import weakref
from email.utils import formatdate, parsedate_to_datetime

import fsspec
import fsspec.asyn
from cachetools import TTLCache

from refmount.errors import FetchError, RefmountError, ShortRead
from refmount.io.policy import OriginPolicy
from refmount.io.stats import Stats
from refmount.urls import split_protocol

log = logging.getLogger("refmount.fetch")

_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError, TypeError, AttributeError)


def _is_transient(exc: BaseException) -> bool:
    status = getattr(exc, "status", None)  # aiohttp.ClientResponseError
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    return not isinstance(exc, _PERMANENT)


def _is_unreachable(exc: BaseException) -> bool:
    """Connection-level failures: the origin itself cannot be reached."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(
        names
        & {
            "ConnectionError",
            "ClientConnectorError",
            "ClientConnectionError",
            "ServerDisconnectedError",
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "TimeoutError",
            "FSTimeoutError",
            "gaierror",
        }
    )


KEPT_FDS = 256
# HTTP bodies are received on this many event loops (each its own thread and connection pool):
# the kernel's share of a receive (socket copies, first touches of the pages a body lands in)
# then runs on more than one core; the Python share still takes turns
HTTP_LOOPS = 2


def _loop_thread(name: str) -> asyncio.AbstractEventLoop:
    """A new event loop, running on a daemon thread of its own until ``_stop_loop``."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name=name, daemon=True).start()
    return loop


def _stop_loop(loop: asyncio.AbstractEventLoop) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


def _bare(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def changed(url: str, check: str, etag: str | None, modified: float | None) -> FetchError | None:
    """The error for an original whose identity no longer matches ``check`` (``Range.check``):
    ``etag:VALUE`` must equal the object's ETag; ``mtime:SECONDS`` must not be older than
    its modification time. An identity the origin cannot report fails too."""
    kind, _, expected = check.partition(":")
    if kind == "etag":
        if etag is None:
            return FetchError(f"{url}: cannot verify the reference's ETag checksum: the origin reports no ETag")
        if _bare(etag) != _bare(expected):
            return FetchError(f"{url}: the original changed since the reference was written (ETag {expected}, now {etag})")
        return None
    if kind == "mtime" and expected.isdigit():
        if modified is None:
            return FetchError(f"{url}: cannot verify the reference's last-modified checksum: the origin reports no time")
        if int(modified) > int(expected):
            return FetchError(f"{url}: the original changed since the reference was written "
                              f"(modified {_when(modified)}, after {_when(int(expected))})")
        return None
    return FetchError(f"{url}: unknown checksum {check!r}")


def _modified(info: dict) -> float | None:
    value = next((info[k] for k in ("LastModified", "last_modified", "Last-Modified", "mtime", "updated") if info.get(k)), None)
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "timestamp"):
        return value.timestamp()
    try:
        return parsedate_to_datetime(str(value)).timestamp()
    except (TypeError, ValueError):
        try:
            from datetime import datetime

            return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


class Refused(FetchError):
    """The origin policy refuses the URL (no request was made)."""


class Stopping(FetchError):
    """The daemon is stopping: waits for origins end at once (the read is EIO)."""


def open_original(path: str, directory: bool = False) -> int:
    """A local original opened for reading: a regular file (or a block device; with
    ``directory``, a directory too: a URL a source lists may be an Icechunk container's). A FIFO
    would block the open until some writer came (a mount hung for ever on one); a character
    device is not an original either: ``OSError`` naming what it is."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode) or directory and stat.S_ISDIR(mode)):
        os.close(fd)
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode)
                else "a character device" if stat.S_ISCHR(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        raise OSError(errno.EINVAL, f"not a regular file ({kind})")
    # reads as any reader's: some parallel filesystems honour O_NONBLOCK on files (EAGAIN)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def unreadable_local(urls) -> dict[str, str]:
    """Local originals among ``urls`` that cannot be opened for reading: URL -> why. Directory
    prefixes (an Icechunk container, ending in ``/``) are not originals and are skipped."""
    problems: dict[str, str] = {}
    for url in urls:
        protocol, path = split_protocol(url)
        if protocol != "file" or url.endswith("/"):
            continue
        try:
            os.close(open_original(path, directory=True))
        except OSError as exc:
            problems[url] = exc.strerror or type(exc).__name__
        except ValueError as exc:  # an impossible path (a NUL byte)
            problems[url] = str(exc)
    return problems


def missing_message(problems: dict[str, str]) -> str:
    """One line for ``unreadable_local``'s answer: how many, and the first one."""
    url, why = next(iter(problems.items()))
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{len(problems)} local original{'s' if len(problems) > 1 else ''} missing or unreadable: {url}: {why}{more}"


class Origins:
    """Where bytes come from. Thread-safe; one filesystem instance per protocol."""

    def __init__(
        self,
        storage_options: dict[str, dict] | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        stats: Stats | None = None,
        policy: OriginPolicy | None = None,
        failed_ttl: float = 0.0,
    ):
        self.policy = policy or OriginPolicy()
        self.failed_ttl = failed_ttl
        # failed ranges, remembered so that readers, kernel retries and prefetches do not each
        # repeat a failing request; 0: not remembered
        self._failed: TTLCache | None = TTLCache(maxsize=16384, ttl=failed_ttl) if failed_ttl > 0 else None
        self._no_range: dict[str, tuple[str, float]] = {}  # hosts that ignore Range -> (message, until)
        self.storage_options = storage_options or {}
        self.timeout = timeout
        self.retries = retries
        self.stats = stats or Stats()
        self._lock = threading.Lock()
        self._filesystems: dict[str, fsspec.AbstractFileSystem] = {}
        self._sizes: dict[str, int] = {}
        self._versions: dict[str, str] = {}
        self._fds: dict[str, int] = {}
        # the device of the mount these origins serve, once mounted: an original opened there
        # would be read through the mount itself (a read waiting on itself, thread after thread)
        self.own_device: int | None = None
        self._receivers: dict[str, list] = {}  # protocol -> HTTP filesystems, one per event loop
        self._turn = 0
        self._receivers_lock = threading.Lock()
        self._stop: concurrent.futures.Future = concurrent.futures.Future()  # done once stopping

    def stop(self) -> None:
        """End every wait for an origin now, and refuse new ones: a daemon told to stop does
        not wait out a stalled origin's timeouts (its readers get EIO)."""
        if not self._stop.done():
            self._stop.set_result(None)

    def _run(self, loop, coro, timeout: float):
        """``coro`` on ``loop`` within ``timeout`` seconds, waited for in this thread until it
        ends or the origins stop (``Stopping``; the coroutine is cancelled)."""
        if self._stop.done():
            coro.close()
            raise Stopping("refmount is stopping")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # (it would wait on itself for ever)
            coro.close()
            raise RuntimeError("an origin read from within its own event loop")
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), loop)
        concurrent.futures.wait([future, self._stop], return_when=concurrent.futures.FIRST_COMPLETED)
        if not future.done():
            future.cancel()
            raise Stopping("refmount is stopping")
        return future.result()

    def filesystem(self, protocol: str) -> fsspec.AbstractFileSystem:
        with self._lock:
            fs = self._filesystems.get(protocol)
            if fs is None:
                options = dict(self.storage_options.get("http", {})) if protocol == "https" else {}
                options.update(self.storage_options.get(protocol, {}))
                if protocol in ("s3", "s3a"):
                    config = options.setdefault("config_kwargs", {})
                    config.setdefault("connect_timeout", min(self.timeout, 10))
                    config.setdefault("read_timeout", self.timeout)
                try:
                    fs = fsspec.filesystem(protocol, **options)
                except (ImportError, ValueError, TypeError) as exc:
                    raise RefmountError(f"cannot use protocol {protocol!r}: {exc}") from None
                self._filesystems[protocol] = fs
            return fs

    def _receiver(self, protocol: str):
        """The HTTP filesystem for the next ranged read: the shared one (fsspec's loop), then
        copies with the same options on loops of their own, in turn."""
        with self._lock:
            spread = self._receivers.get(protocol)
            self._turn += 1
            turn = self._turn
        if spread is None:
            with self._receivers_lock:  # made once, by the first reader
                spread = self._receivers.get(protocol)
                if spread is None:
                    spread = self._spread(protocol)
                    with self._lock:
                        self._receivers[protocol] = spread
        return spread[turn % len(spread)]

    def _spread(self, protocol: str) -> list:
        first = self.filesystem(protocol)
        spread = [first]
        if (os.cpu_count() or 1) > 1:
            for i in range(1, HTTP_LOOPS):
                loop = _loop_thread(f"refmount-http-{i}")
                try:
                    fs = type(first)(loop=loop, skip_instance_cache=True, **first.storage_options)
                except Exception:  # options the first instance took: a failure here is not expected
                    _stop_loop(loop)
                    break
                weakref.finalize(fs, _stop_loop, loop)  # the loop ends with the filesystem (with this Origins)
                spread.append(fs)
        return spread

    def _call(self, fs, method: str, *args, **kwargs):
        if getattr(fs, "async_impl", False):
            return self._run(fs.loop, getattr(fs, "_" + method)(*args, **kwargs), self.timeout)
        return getattr(fs, method)(*args, **kwargs)

    def _timed(self, func):
        self.stats.add("origin_inflight")
        began = time.monotonic()
        try:
            return func()
        finally:
            self.stats.observe("origin_latency", time.monotonic() - began)
            self.stats.add("origin_inflight", -1)

    def _count(self, url: str, name: str, amount: int = 1) -> None:
        """A counter in total and for the origin's host (``local`` for local files)."""
        self.stats.add(name, amount)
        host = url.partition("://")[2].partition("/")[0] if "://" in url else "local"
        self.stats.add_labelled(name, host, amount)

    def check(self, url: str) -> None:
        """``FetchError`` when the origin policy refuses ``url``."""
        problem = self.policy.problem(url)
        if problem is not None:
            self.stats.add("origin_refused")
            raise Refused(f"{url}: {problem}")

    def _with_retries(self, what: str, url: str, func, span: str = "", policy: bool = True):
        """``func()`` with retries on transient failures. Each attempt is a debug line (what,
        URL, byte range, outcome, milliseconds); the final failure says all of that and why."""
        if policy:
            self.check(url)
        delay = 0.2
        began = time.monotonic()
        for attempt in range(1, self.retries + 1):
            t0 = time.monotonic()
            try:
                result = self._timed(func)
            except FetchError as exc:  # already says what failed (a changed original)
                self._count(url, "origin_errors")
                log.debug("%s %s%s -> %s (%.1f ms)", what, url, span, exc, (time.monotonic() - t0) * 1000)
                raise
            except Exception as exc:  # classify, then retry or give up
                cause = f"{type(exc).__name__}: {exc}".rstrip(": ")
                log.debug("%s %s%s -> %s (%.1f ms)", what, url, span, cause, (time.monotonic() - t0) * 1000)
                if attempt == self.retries or not _is_transient(exc):
                    self._count(url, "origin_errors")
                    raise FetchError(f"{what} {url}{span}: {cause} ({attempt} attempt{'s' if attempt > 1 else ''}, "
                                     f"{time.monotonic() - began:.2f} s)") from exc
                self._count(url, "origin_retries")
                log.info("retrying %s %s%s after %s", what, url, span, cause)
                wait = getattr(exc, "retry_after", None)  # the server's Retry-After, within one timeout
                pause = delay if wait is None else min(max(wait, delay), self.timeout)
                if concurrent.futures.wait([self._stop], timeout=pause).done:  # (a stop ends the pause)
                    raise Stopping("refmount is stopping") from exc
                delay *= 2
            else:
                if log.isEnabledFor(logging.DEBUG):
                    size = f"{len(result)} bytes" if isinstance(result, bytes) else "ok"
                    log.debug("%s %s%s -> %s (%.1f ms)", what, url, span, size, (time.monotonic() - t0) * 1000)
                return result

    @staticmethod
    def is_local(url: str) -> bool:
        return split_protocol(url)[0] == "file"

    def _pread(self, url: str, path: str, start: int, end: int, check: str = "") -> bytes:
        """One ``pread``. The first ``KEPT_FDS`` files keep their descriptor for the life of
        the daemon (never closed, so never reused under a concurrent reader); others are
        opened per read. With a ``check``, the file's identity is verified before and after."""
        self.check(url)
        self._count(url, "origin_requests")
        began = time.monotonic()
        try:
            fd = self._fds.get(path)
            keep = True
            if fd is None:
                fd = self._open_local(url, path)
                with self._lock:
                    keep = path not in self._fds and len(self._fds) < KEPT_FDS
                    if keep:
                        self._fds[path] = fd
            try:
                if check:
                    st, now = os.fstat(fd), os.stat(path)
                    if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):  # replaced: check what is there now
                        if not keep:
                            os.close(fd)
                        fd, keep = self._open_local(url, path), False
                    self._verify_local(url, fd, check)
                data = os.pread(fd, end - start, start)
                if check:
                    self._verify_local(url, fd, check)
            finally:
                if not keep:
                    os.close(fd)
        except FetchError:
            self._count(url, "origin_errors")
            raise
        except OSError as exc:
            self._count(url, "origin_errors")
            raise FetchError(f"read {url} [{start}, {end}): {exc.strerror}") from exc
        except ValueError as exc:  # a path no file can have (NUL, a lone surrogate)
            self._count(url, "origin_errors")
            raise FetchError(f"read {url!r}: {exc}") from exc
        self._count(url, "origin_bytes", len(data))
        log.debug("pread %s [%d, %d) -> %d bytes (%.1f ms)", url, start, end, len(data), (time.monotonic() - began) * 1000)
        if len(data) != end - start:
            self._count(url, "origin_errors")
            raise ShortRead(f"read {url} [{start}, {end}): got {len(data)} of {end - start} bytes")
        return data

    def _open_local(self, url: str, path: str) -> int:
        """Open a local original; under an active origin policy, the file actually opened (its
        descriptor's real path, after every symlink as it is now) must be allowed -- a symlink
        swapped after the mount cannot lead outside."""
        fd = open_original(path)
        if self.own_device is not None and os.fstat(fd).st_dev == self.own_device:
            os.close(fd)
            self.stats.add("origin_refused")
            raise FetchError(f"{url}: inside this mount itself (the mount hides the original); mount elsewhere")
        if self.policy.active:
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                real = os.path.realpath(path)
            problem = self.policy.local_problem(real)
            if problem is not None:
                os.close(fd)
                self.stats.add("origin_refused")
                raise FetchError(f"{url}: {problem}")
        return fd

    @staticmethod
    def _verify_local(url: str, fd: int, check: str) -> None:
        problem = changed(url, check, None, os.fstat(fd).st_mtime)
        if problem is not None:
            raise problem

    def read(self, url: str, start: int, end: int, check: str = "") -> bytes:
        """Exactly the bytes ``[start, end)`` of ``url``; ``FetchError`` otherwise. With a
        ``check`` (``Range.check``), bytes of a changed original are never returned."""
        if end <= start:
            return b""
        protocol, path = split_protocol(url)
        if protocol == "file":  # local originals: one pread on a kept descriptor
            return self._pread(url, path, start, end, check)
        from refmount.io import http as http_io  # (aiohttp's import: a sixth of a local mount's start-up)

        # a dead range, or a host that ignores Range, fails here: before any request, checks included
        http = protocol in ("http", "https")
        host = url.partition("://")[2].partition("/")[0]
        flagged = self._no_range.get(host) if http else None
        if flagged is not None and time.monotonic() < flagged[1]:
            raise FetchError(f"read {url} [{start}, {end}): {flagged[0]}")
        key = (url, start, end, check)
        failed = None
        if self._failed is not None:
            with self._lock:  # cachetools caches are not thread-safe
                failed = self._failed.get(key)
        if failed is not None:  # a dead range costs one request per failed_ttl, however many readers
            self.stats.add("origin_failures_remembered")
            raise FetchError(failed)  # the same words: the log says it once

        fs = self.filesystem(protocol)
        kwargs = {}
        if check and protocol in ("http", "https"):  # the origin enforces it: no extra request
            kind, _, expected = check.partition(":")
            header = {"etag": ("If-Match", lambda v: f'"{_bare(v)}"'), "mtime": ("If-Unmodified-Since", lambda v: formatdate(int(v), usegmt=True))}
            if kind in header and (kind != "mtime" or expected.isdigit()):
                name, form = header[kind]
                kwargs["headers"] = {name: form(expected)}
            else:
                raise FetchError(f"{url}: unknown checksum {check!r}")
        elif check:  # other object stores: compare what ``info`` reports first
            try:
                info = self._with_retries("stat", url, lambda: self._call(fs, "info", path))
            except FetchError as exc:
                self._remember(key, exc)
                raise
            etag = next((info[k] for k in ("ETag", "etag") if info.get(k)), None)
            problem = changed(url, check, etag, _modified(info))
            if problem is not None:
                self._count(url, "origin_errors")
                raise problem

        def attempt() -> bytes:
            self._count(url, "origin_requests")
            try:
                if http:
                    receiver = self._receiver(protocol)
                    return self._run(receiver.loop, http_io.get_range(receiver, path, start, end, kwargs.get("headers", {}),
                                                                      self._refused_redirect, self.timeout), self.timeout + 1)
                return self._call(fs, "cat_file", path, start=start, end=end, **kwargs)
            except http_io.IgnoresRange:
                self._ignores_range(host)
                raise
            except Exception as exc:
                if getattr(exc, "status", None) == 412:
                    raise FetchError(f"{url}: the original changed since the reference was written ({check}; the origin answered 412)") from None
                raise

        try:
            data = self._with_retries("read", url, attempt, f" [{start}, {end})")
            if len(data) != end - start:
                self._count(url, "origin_errors")
                raise ShortRead(f"read {url} [{start}, {end}): got {len(data)} of {end - start} bytes")
        except FetchError as exc:
            self._remember(key, exc)
            raise
        self._count(url, "origin_bytes", len(data))
        return data

    def _remember(self, key: tuple, exc: FetchError) -> None:
        """Keep a failed range's error for ``failed_ttl`` (not a refusal: a reload may allow it)."""
        if self._failed is not None and not isinstance(exc, (Refused, Stopping)):
            with self._lock:
                self._failed[key] = str(exc)

    def _refused_redirect(self, url: str) -> str | None:
        """Why a redirect target may not be followed (the origin policy, at every hop)."""
        return self.policy.problem(url) if self.policy.active else None

    def _ignores_range(self, host: str) -> None:
        """Remember (for ``failed_ttl``) that ``host`` ignores Range; say so once per host."""
        message = f"the server at {host} ignores HTTP Range requests"
        with self._lock:
            first = host not in self._no_range
            self._no_range[host] = (message, time.monotonic() + self.failed_ttl)
        if first:
            log.error("%s (it answers a ranged request with the whole object): reads from it fail; serve the files "
                      "with a server that supports Range (nginx, Apache, any object store) or copy them locally",
                      message)

    # -- objects of the source the user named (reference files, Parquet records, Icechunk
    # objects): read whole, with the same timeouts, retries and classification as chunk data,
    # but not subject to the origin policy (the user chose them, not a reference file)
    def get(self, url: str) -> bytes | None:
        """The whole object at ``url``, or None when the origin says it does not exist. Any other
        failure (after retries of transient ones) is a ``FetchError`` -- never "absent"."""
        protocol, path = split_protocol(url)

        def attempt() -> bytes:
            self.stats.add("source_requests")
            if protocol == "file":
                with open(path, "rb") as f:
                    return f.read()
            return self._call(self.filesystem(protocol), "cat_file", path)

        try:
            data = self._with_retries("get", url, attempt, policy=False)
        except FetchError as exc:
            if isinstance(exc.__cause__, (FileNotFoundError, NotADirectoryError)):
                return None
            raise
        self.stats.add("source_bytes", len(data))
        return data

    def listdir(self, url: str) -> list[str]:
        """Names directly under ``url`` (empty when it does not exist)."""
        protocol, path = split_protocol(url)

        def attempt() -> list[str]:
            self.stats.add("source_requests")
            if protocol == "file":
                return os.listdir(path)
            return [p.rstrip("/").rpartition("/")[2] for p in self._call(self.filesystem(protocol), "ls", path, detail=False)]

        try:
            return sorted(self._with_retries("list", url, attempt, policy=False))
        except FetchError as exc:
            if isinstance(exc.__cause__, (FileNotFoundError, NotADirectoryError)):
                return []
            raise

    @staticmethod
    def modified_ns(url: str) -> int:
        """A local object's modification time; for remote ones, now (their trees change only by reload)."""
        protocol, path = split_protocol(url)
        if protocol == "file":
            try:
                return os.stat(path).st_mtime_ns
            except OSError:
                pass
        return time.time_ns()

    def identity(self, url: str) -> list | None:
        """What names the present state of a source object (to key what is kept from it): a local
        file's path, size, modification and change times and inode; a remote object's size and
        ETag or modification time (one ``info``). None when there is nothing reliable to go by."""
        protocol, path = split_protocol(url)
        try:
            if protocol == "file":
                st = os.stat(path)
                return [os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            size = self.size(url)
        except (OSError, RefmountError):
            return None
        version = self.version(url)
        return None if version is None else [url, size, version]

    def size_known(self, url: str) -> bool:
        return url in self._sizes

    def size(self, url: str) -> int:
        """Size of a whole object, asked once and remembered."""
        size = self._sizes.get(url)
        if size is not None:
            return size
        protocol, path = split_protocol(url)
        fs = self.filesystem(protocol)

        def attempt() -> dict:
            self.stats.add("origin_info_requests")
            return self._call(fs, "info", path)

        info = self._with_retries("stat", url, attempt)
        size = info.get("size")
        if not isinstance(size, int) or size < 0:
            raise FetchError(f"stat {url}: origin does not report a size")
        version = next((info[k] for k in ("ETag", "etag", "mtime", "LastModified", "last_modified") if info.get(k)), None)
        if version is not None:
            self._versions[url] = str(version)
        self._sizes[url] = size
        return size

    def unreachable(self, urls) -> dict[str, str]:
        """Remote originals among ``urls`` whose size cannot be had (missing, refused,
        unreachable): URL -> why. One ``info`` each (``--probe``)."""
        problems: dict[str, str] = {}
        for url in urls:
            if self.is_local(url) or url.endswith("/"):
                continue
            try:
                self.size(url)
            except (FetchError, RefmountError) as exc:
                problems[url] = str(exc)
        return problems

    def version(self, url: str) -> str | None:
        """The object's etag or modification time, where an earlier ``info`` reported one."""
        return self._versions.get(url)

    def probe(self, urls: list[str]) -> None:
        """Check that each remote origin answers, before mounting.

        HTTP origins get one ranged request for the first byte of their first URL (no HEAD): a
        server that ignores ``Range`` is refused here, with one line; other remote protocols one
        ``info`` of their first URL. A missing object is not an error here.
        """
        seen: set[tuple[str, str]] = set()
        for url in urls:
            protocol, path = split_protocol(url)
            if protocol == "file":
                continue
            authority = url.partition("://")[2].partition("/")[0]
            if (protocol, authority) in seen:
                continue
            seen.add((protocol, authority))
            from refmount.io import http as http_io

            try:
                if protocol in ("http", "https"):
                    fs = self.filesystem(protocol)
                    wait = min(self.timeout, 10)
                    fsspec.asyn.sync(fs.loop, http_io.get_range, fs, path, 0, 1, {}, self._refused_redirect, wait, timeout=wait + 1)
                else:
                    self._call(self.filesystem(protocol), "info", path)
            except http_io.IgnoresRange:
                raise RefmountError(f"origin {protocol}://{authority}: the server ignores HTTP Range requests (it "
                                    "answered a one-byte request with the whole object); refmount cannot read from it") from None
            except (asyncio.TimeoutError, fsspec.asyn.FSTimeoutError) as exc:  # it accepted: slow, not unreachable
                log.warning("origin check %s: no answer within %g s (%s)", url, min(self.timeout, 10), type(exc).__name__)
            except Exception as exc:
                if _is_unreachable(exc) or isinstance(exc, (asyncio.TimeoutError, OSError)) and not isinstance(exc, _PERMANENT):
                    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                    raise RefmountError(f"origin {protocol}://{authority} is unreachable: {reason}") from None
                log.warning("origin check %s: %s: %s", url, type(exc).__name__, exc)

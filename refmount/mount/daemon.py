"""Running a mount: in the foreground (``serve``), or as a background daemon (``spawn``).

Background mode never lets libfuse fork: the parent starts a fresh interpreter with
``--foreground --ready-fd N`` before any thread exists, and the child reports ``READY`` or
``ERROR <message>`` on that pipe once the mount answers a ``stat`` (or fails).
"""

from __future__ import annotations

import fcntl
import json
import logging
import logging.handlers
import os
import selectors
import subprocess
import sys
import threading
import time
from typing import Callable

from refmount.engine import Engine
from refmount.errors import FetchError, RefmountError
from refmount.mount.mountpoint import check_mountpoint, fuse_hint, lazy_unmount, load_libfuse, set_read_ahead
from refmount.mount.notify import sd_notify
from refmount.mount.operations import RefFS, fuse_class
from refmount.mount.reload import Reloader
from refmount.options import MountOptions

log = logging.getLogger("refmount")


class ReadyPipe:
    """The one status line for the waiting parent (no-op in plain foreground mode)."""

    def __init__(self, fd: int | None):
        self.fd = fd
        self.sent = False
        self._lock = threading.Lock()

    def send(self, line: str) -> None:
        with self._lock:
            if self.sent:
                return
            self.sent = True
            if self.fd is None:
                return
            try:
                os.write(self.fd, (line.replace("\n", " ") + "\n").encode())
                os.close(self.fd)
            except OSError:
                pass


READY_SECONDS = 30.0  # a mount whose root does not answer a stat within this is taken down
STOP_GRACE = 5.0  # seconds files still open on the unmounted mount may keep a stopping daemon
LOG_BYTES = 8 << 20  # a log file is rotated at this size, keeping LOG_BACKUPS old ones
LOG_BACKUPS = 3
REPEAT_SECONDS = 10.0


class _Once(logging.Filter):
    """Each event once: the same warning or error within ``REPEAT_SECONDS`` (the kernel retries
    a failed read; several readers hit the same dead chunk) is logged once."""

    def __init__(self) -> None:
        super().__init__()
        from cachetools import TTLCache

        self._seen: TTLCache = TTLCache(maxsize=4096, ttl=REPEAT_SECONDS)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.levelno, record.name, record.getMessage())
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = True
        return True


class _StartWarnings(logging.Handler):
    """The warnings logged while the mount starts (an array left out of a view, chunks larger
    than the cache, ...): sent with the ready line, so the command that mounts says them too
    and not only the log. At most ``MAX`` of them, each cut to one line."""

    MAX = 10

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.more = 0

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) >= self.MAX:
            self.more += 1
            return
        text = " ".join(record.getMessage().split())
        self.lines.append(text if len(text) <= 500 else text[:497] + "...")

    def said(self) -> list[str]:
        return self.lines + ([f"{self.more} more warning(s): see the log"] if self.more else [])


def _setup_logging(opts: MountOptions) -> None:
    handler: logging.Handler
    if opts.log_file:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(opts.log_file)), exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(opts.log_file, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS)
        except OSError as exc:
            raise RefmountError(f"log file {opts.log_file}: {exc.strerror} (another place: --log-file PATH)") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s refmount[%(process)d] %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Once())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(opts.log_level.upper())
    # the FUSE binding logs its callback registration and every ENOENT at DEBUG: not a user's concern
    logging.getLogger("fuse").setLevel(max(logging.INFO, root.level))
    for noisy in ("asyncio", "botocore", "aiobotocore", "s3fs", "urllib3", "fsspec"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))


def _tune_malloc() -> None:
    """glibc's allocator, for a process whose memory is chunks coming and going: blocks up to
    32 MiB come from the heap, not from a fresh mapping each, and freed memory is kept for the
    next ones until 32 MiB of it is unused rather than handed back at once -- so the receive
    buffers a body passes through reuse pages instead of faulting fresh ones in (first touches of
    fresh pages were a third of the daemon's CPU in a remote walk; chunks handed whole to the
    kernel free theirs for the next ones too). 5-10 % faster remote walks; about 20 MB more RSS
    after many reads.
    Environment settings (``MALLOC_*_``, ``GLIBC_TUNABLES``) win; other C libraries: nothing."""
    if any(k.startswith("MALLOC_") for k in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 32 << 20)
    mallopt(m_top_pad, 4 << 20)


def serve(opts: MountOptions, ready_fd: int | None = None, read_options: Callable[[], MountOptions] | None = None,
          parent_fd: int | None = None) -> int:
    """Mount and serve until unmounted or signalled. Returns the exit status.

    ``read_options`` gives fresh options on SIGHUP (re-reading the config file). When
    ``parent_fd`` (the read end of a pipe its parent holds) reaches end of file -- the parent
    exited or was killed -- the mount is removed and the daemon ends.
    """
    ready = ReadyPipe(ready_fd)
    mountpoint = os.path.abspath(opts.mountpoint)
    _tune_malloc()
    start_warnings = _StartWarnings()
    try:
        _setup_logging(opts)
        if ready_fd is not None:  # (in the foreground, the log is the terminal already)
            logging.getLogger().addHandler(start_warnings)
        held = _claim_mountpoint(mountpoint)  # until mounted: then "already mounted" says it
        device = check_mountpoint(mountpoint, opts.allow_non_empty)
        sd_notify(f"STATUS=loading {', '.join(src for _, src in opts.sources)}")
        mfusepy = load_libfuse()
        engine = Engine(opts, cache_tag=mountpoint)
        metrics = _metrics(opts, engine)
    except (RefmountError, FetchError) as exc:  # (a record file a source reads to start with, unreadable)
        return _fail(ready, str(exc))

    def status() -> str:
        names = ", ".join(src for _, src in opts.sources)
        text = f"serving {names} at {mountpoint}"
        return text + (f" ({reloader.count} reloads)" if reloader.count else "")

    not_ready: list[int] = []
    stopping = threading.Event()

    def stop() -> None:
        """SIGTERM: readers waiting on origins get EIO at once, the mount leaves the namespace
        at once (the FUSE loop ends when the kernel lets go of it); files still held open on
        it after ``STOP_GRACE`` seconds do not keep the daemon."""
        if stopping.is_set():
            return
        stopping.set()
        log.info("stopping: unmounting %s", mountpoint)
        sd_notify("STOPPING=1")
        fs.invalidate = None  # a reload still running tells the kernel nothing more
        engine.origins.stop()
        lazy_unmount(mountpoint)

        def last_resort() -> None:
            time.sleep(STOP_GRACE)
            log.warning("files are still open on %s (now unmounted): stopping without waiting for them", mountpoint)
            logging.shutdown()
            os._exit(0)

        threading.Thread(target=last_resort, name="refmount-stop", daemon=True).start()

    def on_init() -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            try:
                if os.stat(mountpoint).st_dev != device:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        else:  # the root does not answer: say so, and take the mount down (nothing half-done)
            not_ready.append(_fail(ready, f"mountpoint {mountpoint}: mount did not become ready"))
            lazy_unmount(mountpoint)  # ends the FUSE loop below
            return
        if stopping.is_set():  # told to stop while mounting: the stop's unmount came too early
            not_ready.append(_fail(ready, f"mountpoint {mountpoint}: stopped before the mount was ready"))
            lazy_unmount(mountpoint)
            return
        try:  # from now on an original opened through the mount itself is refused
            engine.origins.own_device = os.stat(mountpoint).st_dev
        except OSError:
            pass
        log.info("mounted %s at %s", ", ".join(src for _, src in opts.sources), mountpoint)
        if opts.read_ahead:
            set_read_ahead(mountpoint, opts.read_ahead)
        if parent_fd is not None:
            threading.Thread(target=_unmount_with_parent, args=(parent_fd, mountpoint), daemon=True,
                             name="refmount-parent").start()
        if ready.fd is not None:  # the parent stops listening: send stderr to the log from now on
            _detach_stderr(opts.log_file)
        logging.getLogger().removeHandler(start_warnings)
        if held is not None:  # (held on: a remount right after an unmount would find it taken)
            os.close(held)
        ready.send("READY " + json.dumps(start_warnings.said()) if start_warnings.said() else "READY")
        sd_notify("READY=1", f"STATUS={status()}", f"MAINPID={os.getpid()}")

    timeout = min(opts.attr_timeout, opts.refresh) if opts.refresh else opts.attr_timeout  # new commits show in time
    options = {
        "foreground": True,
        "nothreads": False,
        "ro": True,
        "fsname": opts.sources[0][1].replace(",", "_")[:200],
        "subtype": "refmount",
        "attr_timeout": timeout,
        "entry_timeout": timeout,
        "negative_timeout": timeout,
        # libfuse 3.14 passes its "unlimited" idle-thread default through a setter that rejects
        # it, with a warning on every start; libfuse's old default (10) is a valid value
        "max_idle_threads": 10,
    }
    if opts.allow_other:
        options.update(allow_other=True, default_permissions=True)
    try:
        fs = RefFS(engine.tree, engine.reader, on_init, engine.prefetcher, sources=list(opts.sources),
                   stats=engine.stats, xattrs=opts.xattrs)
        reloader = Reloader(opts, fs, engine, read_options or (lambda: opts), status, on_stop=stop)
        reloader.install()
        if opts.refresh:
            reloader.follow(opts.refresh)
        FUSE = fuse_class(mfusepy) if mfusepy.fuse_version_major == 3 else mfusepy.FUSE
        FUSE(fs, mountpoint, **options)
    except RuntimeError:
        # libfuse3 also returns non-zero after a clean stop by signal: only a failure before
        # the mount was ready is an error
        if not ready.sent:
            return _fail(ready, f"mountpoint {mountpoint}: libfuse could not mount it"
                               + ("" if ready.fd is not None else fuse_hint()))
    finally:
        sd_notify("STOPPING=1")
        if metrics is not None:
            metrics.shutdown()
        engine.close()
    if not ready.sent:
        return _fail(ready, f"mountpoint {mountpoint}: FUSE loop ended before the mount was ready")
    if not_ready:
        return 1
    log.info("unmounted %s", mountpoint)
    return 0


def _metrics(opts: MountOptions, engine: Engine):
    if not opts.metrics_addr:
        return None
    from refmount.io.metrics import serve_metrics

    try:
        return serve_metrics(opts.metrics_addr, engine.stats)
    except OSError as exc:
        engine.close()
        raise RefmountError(f"metrics address {opts.metrics_addr}: {exc.strerror or exc}") from None


def _claim_mountpoint(path: str) -> int | None:
    """An exclusive lock on the mountpoint directory, held from its check until it is mounted:
    two mounts started at once at one place (a job array, a unit and a user) would both pass the
    check while the other loads, and stack two mounts. The descriptor, or None where the
    directory cannot be opened (the check says why)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RefmountError(f"mountpoint {path}: another refmount is being mounted there") from None
    except OSError:  # a filesystem without locks: nothing to serialise with
        pass
    return fd


def _fail(ready: ReadyPipe, message: str) -> int:
    to_stderr = any(getattr(h, "stream", None) is sys.stderr for h in logging.getLogger().handlers)
    if ready.fd is None and not to_stderr:  # in the foreground the log line below is on stderr already
        print(f"refmount: {message}", file=sys.stderr)
    else:
        ready.send(f"ERROR {message}")
    log.error("%s", message)
    return 1


def _unmount_with_parent(fd: int, mountpoint: str) -> None:
    """Wait for the parent's end of the pipe to close, then unmount (the FUSE loop ends)."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    log.info("the process that mounted %s is gone: unmounting", mountpoint)
    result = lazy_unmount(mountpoint)
    if result.returncode != 0:
        log.error("unmount of %s after its parent exited failed: %s", mountpoint, result.stderr.strip())


def _detach_stderr(log_file: str | None) -> None:
    fd = os.open(log_file or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 2)
    os.close(fd)


def spawn(args: list[str], tied: bool = False) -> subprocess.Popen:
    """Start ``refmount --foreground ARGS`` detached; return once it is mounted.

    ``tied``: the daemon unmounts and exits when this process ends (``proc.tie`` is the pipe's
    end this process holds; closing it has the same effect). ``proc.warnings``: what the
    daemon warned of while it started (also in its log).
    Raises ``RefmountError`` with the child's message when it fails before being ready.
    """
    r, w = os.pipe()
    extra: list[str] = []
    keep: tuple[int, ...] = (w,)
    tie_r = tie_w = None
    if tied:
        tie_r, tie_w = os.pipe()
        extra, keep = ["--parent-fd", str(tie_r)], (w, tie_r)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "refmount", "--foreground", "--ready-fd", str(w), *extra, *args],
            pass_fds=keep,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            cwd="/",
        )
    except BaseException:
        for fd in (tie_r, tie_w):
            if fd is not None:
                os.close(fd)
        raise
    finally:
        os.close(w)
    if tie_r is not None:
        os.close(tie_r)
    proc.tie = tie_w
    status, err = _wait_status(r, proc.stderr)
    if status == "READY" or status.startswith("READY ["):
        proc.stderr.close()
        try:
            proc.warnings = [str(w) for w in json.loads(status[6:])] if status != "READY" else []
        except ValueError:
            proc.warnings = []
        return proc
    try:  # a daemon that reported a failure takes its mount down and ends
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if tie_w is not None:
        os.close(tie_w)
    detail = next((line for line in reversed(err.splitlines()) if line.strip()), "")
    if status.startswith("ERROR "):
        message = status[6:]
        if detail and "libfuse" in message:
            message += f": {detail.strip()}{fuse_hint()}"
        raise RefmountError(message)
    raise RefmountError(f"daemon exited (status {proc.returncode}) before the mount was ready: {detail or 'no message'}")


def _wait_status(status_fd: int, stderr) -> tuple[str, str]:
    """Read the status line while draining the child's stderr (so it can never block)."""
    sel = selectors.DefaultSelector()
    sel.register(status_fd, selectors.EVENT_READ, "status")
    sel.register(stderr, selectors.EVENT_READ, "stderr")
    status, err = b"", b""
    open_fds = 2
    while open_fds:
        for key, _ in sel.select():
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_fds -= 1
                if key.data == "status":
                    os.close(status_fd)
                    if status:  # got our line; stderr may stay open in a healthy daemon
                        return status.decode().strip(), err.decode(errors="replace")
                continue
            if key.data == "status":
                status += chunk
            else:
                err += chunk
    return status.decode().strip(), err.decode(errors="replace")

"""Live reload on SIGHUP: re-read the config and the reference sets, build the new tree aside,
then swap it in at once. A reload that fails keeps the tree being served and logs why.

``--refresh SECONDS`` uses the same path: a thread asks the tree whether its source moved (a
followed Icechunk branch has a new head) and, when it did, rebuilds and swaps.

libfuse installs its own handler (which unmounts) for SIGHUP only when the disposition is the
default, so SIGHUP gets a Python handler here; the main thread is inside the FUSE loop, so the
signal is taken from Python's wakeup fd by a thread of its own. SIGTERM likewise, when the
daemon gives a way to stop (libfuse's own would wait for every read in flight to end, however
long a stalled origin keeps it).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import fields
from typing import TYPE_CHECKING, Callable

from refmount.errors import RefmountError
from refmount.mount.notify import reloading, sd_notify
from refmount.mount.operations import RefFS
from refmount.options import RELOADABLE, MountOptions

if TYPE_CHECKING:
    from refmount.engine import Engine

log = logging.getLogger("refmount")



class Reloader:
    def __init__(
        self,
        opts: MountOptions,
        fs: RefFS,
        engine: Engine,
        read_options: Callable[[], MountOptions],
        status: Callable[[], str],
        on_stop: Callable[[], None] | None = None,
    ):
        self.opts, self.fs, self.engine = opts, fs, engine
        self.read_options, self.status = read_options, status
        self.on_stop = on_stop
        self.count = 0
        self._wakeup = -1
        self._reloading = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queued = False

    def install(self) -> None:
        """Take SIGHUP (and SIGTERM, given ``on_stop``) away from libfuse. Call from the main
        thread, before the FUSE loop."""
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(w, False)
        signal.signal(signal.SIGHUP, lambda *_: None)
        if self.on_stop is not None:
            signal.signal(signal.SIGTERM, lambda *_: None)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self._wakeup = r
        threading.Thread(target=self._loop, name="refmount-reload", daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                data = os.read(self._wakeup, 64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGTERM in data and self.on_stop is not None:
                self.on_stop()
            elif signal.SIGHUP in data:
                self._reload_soon()

    def _reload_soon(self) -> None:
        """A reload on a thread of its own (a stop is heard during a slow one); SIGHUPs that
        come while one waits to start make no more (the one waiting reads everything anew)."""
        with self._queue_lock:
            if self._queued:
                return
            self._queued = True

        def run() -> None:
            with self._reloading:
                with self._queue_lock:
                    self._queued = False
                self._reload(True)

        threading.Thread(target=run, name="refmount-reload-run", daemon=True).start()

    def follow(self, interval: float) -> None:
        """Poll the served tree's sources every ``interval`` seconds; rebuild when one moved."""

        def loop() -> None:
            while True:
                time.sleep(interval)
                try:
                    moved = self.fs.tree.moved()
                except Exception as exc:  # an unreachable repository: keep serving, try again
                    log.warning("refresh: cannot check the sources: %s", exc)
                    continue
                if moved:
                    log.info("refresh: %s", moved)
                    self.reload(fresh_options=False)

        threading.Thread(target=loop, name="refmount-refresh", daemon=True).start()

    def reload(self, fresh_options: bool = True) -> bool:
        with self._reloading:  # SIGHUP and a refresh never swap at the same time
            return self._reload(fresh_options)

    def _reload(self, fresh_options: bool) -> bool:
        reloading()
        began = time.monotonic()
        try:
            new = self.read_options() if fresh_options else self.opts
            fixed = sorted(f.name for f in fields(MountOptions) if f.name not in RELOADABLE
                           and f.name != "log_file" and getattr(new, f.name) != getattr(self.opts, f.name))
            if fixed:
                log.warning("reload: %s changed; that takes effect at the next start", ", ".join(fixed))
            tree, policy = self.engine.build(new)
            tree.mtime_ns = max(time.time_ns(), self.fs.tree.mtime_ns + 1)  # kernel drops cached pages
            self.engine.swap(tree, policy)
            self.fs.swap(tree, new.sources)
            for name in RELOADABLE:
                setattr(self.opts, name, getattr(new, name))
            self.count += 1
            log.info("reloaded %s in %.2f s", ", ".join(src for _, src in new.sources), time.monotonic() - began)
            ok = True
        except RefmountError as exc:
            log.error("reload failed, still serving the previous tree: %s", exc)
            ok = False
        except Exception as exc:
            log.exception("reload failed, still serving the previous tree: %s", exc)
            ok = False
        sd_notify("READY=1", f"STATUS={self.status()}")
        return ok

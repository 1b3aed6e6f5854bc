"""A small HTTP origin on 127.0.0.1 with Range support and request counting.

For the demo, the tests and the benchmarks: serves one directory, answers ``HEAD`` and
``GET`` (single byte ranges, ``206``/``416``; a ``bytes=0-0`` request is counted as ``PROBE``,
not ``GET``; ``ETag`` and ``Last-Modified``, with
``If-Match`` and ``If-Unmodified-Since`` answered ``412`` when the file changed), optionally
sleeps per request (injected latency), and stops by itself after ``max_requests``.

``fault`` makes it misbehave as real servers, proxies and CDNs do (for the fault suite):
``shift`` (a 206 for other bytes, its Content-Range saying so), ``shift-bare`` (the same without
a Content-Range), ``ignore-range`` (200 with the whole file, as ``python -m http.server``),
``long`` (a correct Content-Range, then more bytes than it says), ``truncate`` (the connection
closes half way through the body), ``stall`` (no answer for ``stall`` seconds), ``reset`` (the
connection closes without an answer), ``retry-after`` (503 with ``Retry-After: 1``),
``redirect`` (302 to ``redirect_to`` + the path). Probes (``bytes=0-0``) are answered normally
unless ``fault_probes`` is set.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
from collections import Counter
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z")


def etag_of(path: str) -> str:
    """The ``ETag`` served for a file: its size and modification time (changes on touch)."""
    st = os.stat(path)
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


class _Handler(BaseHTTPRequestHandler):
    server: "RangeServer"
    timeout = 10
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _path(self) -> str | None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        full = os.path.realpath(os.path.join(self.server.root, rel))
        if not full.startswith(self.server.root + os.sep) or not os.path.isfile(full):
            return None
        return full

    def _begin(self, method: str) -> str | None:
        self.server.count(method, self.path)
        if self.server.latency:
            time.sleep(self.server.latency)
        if self.server.fail:
            self.send_error(503, "origin configured to fail")
            return None
        fault = self.server.fault if (method != "PROBE" or self.server.fault_probes) else None
        if fault == "stall":
            time.sleep(self.server.stall)
        elif fault == "reset":
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        elif fault == "retry-after":
            self.send_response(503)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        elif fault == "redirect":
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to + urlsplit(self.path).path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        path = self._path()
        if path is None:
            self.send_error(404)
            return None
        if not self._preconditions_hold(path):
            self.send_error(412)
            return None
        return path

    def _preconditions_hold(self, path: str) -> bool:
        match = self.headers.get("If-Match")
        if match and match.strip() != "*":  # compared without quotes: some clients drop them
            if etag_of(path).strip('"') not in [m.strip().removeprefix("W/").strip('"') for m in match.split(",")]:
                return False
        since = self.headers.get("If-Unmodified-Since")
        if since:
            try:
                limit = parsedate_to_datetime(since).timestamp()
            except (TypeError, ValueError):
                return True  # an invalid date is ignored (RFC 9110 13.1.4)
            if int(os.stat(path).st_mtime) > limit:
                return False
        return True

    def _validators(self, path: str) -> None:
        self.send_header("ETag", etag_of(path))
        self.send_header("Last-Modified", formatdate(os.stat(path).st_mtime, usegmt=True))

    def do_HEAD(self) -> None:
        path = self._begin("HEAD")
        if path is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.send_header("Accept-Ranges", "bytes")
        self._validators(path)
        self.end_headers()

    def do_GET(self) -> None:
        if self.path == "/__counts":  # for benchmarks running the server in its own process
            body = json.dumps(dict(self.server.counts)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        # a client's one-byte probe of an origin's Range support is counted apart from reads
        probe = (self.headers.get("Range") or "").strip() == "bytes=0-0"
        path = self._begin("PROBE" if probe else "GET")
        if path is None:
            return
        size = os.path.getsize(path)
        start, end = 0, size
        header = self.headers.get("Range")
        status = 200
        if header:
            m = _RANGE.match(header.strip())
            if not m or (not m.group(1) and not m.group(2)):
                self.send_error(416)
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)) + 1, size) if m.group(2) else size
            else:
                start = max(size - int(m.group(2)), 0)
            if start >= size or start >= end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        fault = self.server.fault if (not probe or self.server.fault_probes) else None
        if fault == "ignore-range":
            start, end, status = 0, size, 200
        elif fault in ("shift", "shift-bare") and status == 206:
            shift = self.server.shift if end + self.server.shift <= size else -min(self.server.shift, start)
            start, end = start + shift, end + shift
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start)
        if fault == "long":
            body += b"x" * 65536  # and says so in Content-Length
        self.server.count("probe_bytes" if probe else "bytes", n=len(body))
        self.send_response(status)
        if status == 206 and fault != "shift-bare":
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self._validators(path)
        self.end_headers()
        if fault == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
        else:
            self.wfile.write(body)


class RangeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: str, latency: float = 0.0, max_requests: int = 200_000, host: str = "127.0.0.1"):
        if ":" in host:  # an IPv6 loopback ("::1")
            self.address_family = socket.AF_INET6
        super().__init__((host, 0), _Handler)
        self.root = os.path.realpath(root)
        self.latency = latency
        self.max_requests = max_requests
        self.fail = False
        self.fault: str | None = None  # see the module's docstring
        self.fault_probes = False
        self.shift = 7
        self.stall = 30.0
        self.redirect_to = ""
        self.counts: Counter[str] = Counter()
        self.paths: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def handle_error(self, request, client_address) -> None:
        """A client that went away (a daemon stopped, a connection reset between requests) is
        not an error of the server's: nothing printed. Anything else as ``socketserver`` does."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host = self.server_address[0]
        return f"http://[{host}]:{self.server_address[1]}" if ":" in host else f"http://{host}:{self.server_address[1]}"

    def count(self, what: str, path: str | None = None, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n
            if path is not None:
                self.paths[f"{what} {path}"] += 1
            total = self.counts["GET"] + self.counts["HEAD"]
        if total >= self.max_requests:
            threading.Thread(target=self.shutdown, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.paths.clear()

    def __enter__(self) -> "RangeServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def main(argv: list[str] | None = None) -> None:
    """``python -m refmount.rangeserver DIR [LATENCY_SECONDS]``: print the URL, serve until killed."""
    argv = sys.argv[1:] if argv is None else argv
    with RangeServer(argv[0], latency=float(argv[1]) if len(argv) > 1 else 0.0, max_requests=10**7) as server:
        print(server.url, flush=True)
        server._thread.join()


if __name__ == "__main__":
    main()

"""A fast benchmark origin: aiohttp serving a directory with Range support (206 + Content-Range,
by aiohttp's own FileResponse), a fixed latency per request, and request counters at /__counts
(as refmount.rangeserver has; a ``bytes=0-0`` probe counted as ``PROBE``). The thread-per-connection Python origin slows down as more
requests are in flight; this one does not, so what is measured is the client.

Usage: python aiohttp_origin.py DIRECTORY LATENCY_SECONDS   (prints its URL, serves until killed)
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections import Counter

from aiohttp import web


def main() -> None:
    root, latency = os.path.realpath(sys.argv[1]), float(sys.argv[2])
    counts: Counter = Counter()

    @web.middleware
    async def delayed(request, handler):
        if request.path != "/__counts":
            # a client's one-byte probe of Range support is counted apart from reads, as
            # refmount.rangeserver does
            probe = (request.headers.get("Range") or "").strip() == "bytes=0-0"
            counts["PROBE" if probe else request.method] += 1
            await asyncio.sleep(latency)
        response = await handler(request)
        if request.path != "/__counts" and response.content_length:
            counts["bytes"] += response.content_length
        return response

    async def serve(request):
        path = os.path.realpath(os.path.join(root, request.match_info["path"]))
        if not path.startswith(root + os.sep) or not os.path.isfile(path):
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def show_counts(request):
        return web.Response(text=json.dumps(counts), content_type="application/json")

    app = web.Application(middlewares=[delayed])
    app.add_routes([web.get("/__counts", show_counts), web.get("/{path:.+}", serve)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None)


if __name__ == "__main__":
    main()

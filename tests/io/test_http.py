"""Ranged HTTP reads: bodies with and without a Content-Length, and the event loops they are
received on. A real aiohttp server on 127.0.0.1 in a thread, sending what each test asks."""

from __future__ import annotations

import asyncio
import gc
import gzip
import os
import socket
import threading
import time

import pytest
from aiohttp import web

from refmount.errors import FetchError
from refmount.io.origins import HTTP_LOOPS, Origins

DATA = os.urandom(300_000)


@pytest.fixture
def server():
    """``behaviour`` picks the answer: ``length`` (a 206 with Content-Length), ``chunked`` (a
    206 streamed without one), ``chunked-long`` / ``chunked-short`` (streamed, more or fewer
    bytes than the range)."""
    state = {"behaviour": "length", "loops": set()}

    async def serve(request):
        first, _, last = request.headers["Range"].removeprefix("bytes=").partition("-")
        start, end = int(first), int(last) + 1
        body = DATA[start:end]
        headers = {"Content-Range": f"bytes {start}-{end - 1}/{len(DATA)}"}
        behaviour = state["behaviour"]
        if behaviour == "gzip-if-allowed":  # compresses whatever the client says it accepts
            if "gzip" in request.headers.get("Accept-Encoding", ""):
                headers["Content-Encoding"] = "gzip"
                body = gzip.compress(body)
            return web.Response(status=206, body=body, headers=headers)
        if behaviour == "length":
            return web.Response(status=206, body=body, headers=headers)
        if behaviour == "chunked-long":
            body += b"x" * 70_000
        elif behaviour == "chunked-short":
            body = body[: len(body) // 2]
        response = web.StreamResponse(status=206, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(body), 50_000):
            await response.write(body[i : i + 50_000])
        await response.write_eof()
        return response

    app = web.Application()
    app.add_routes([web.get("/f.bin", serve)])
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{sock.getsockname()[1]}/f.bin"
    try:
        yield state
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@pytest.mark.parametrize("behaviour", ["length", "chunked", "gzip-if-allowed"])
def test_exact_bodies_with_or_without_a_content_length(server, behaviour):
    server["behaviour"] = behaviour
    origins = Origins(retries=1, timeout=10)
    for start, end in [(0, 1), (0, 300_000), (12_345, 212_345), (299_999, 300_000)]:
        assert origins.read(server["url"], start, end) == DATA[start:end]


@pytest.mark.parametrize("behaviour, words", [("chunked-long", "longer than"), ("chunked-short", "of 100000 bytes")])
def test_a_streamed_body_of_the_wrong_length_is_an_error(server, behaviour, words):
    server["behaviour"] = behaviour
    with pytest.raises(FetchError, match=words):
        Origins(retries=1, timeout=10).read(server["url"], 1000, 101_000)


def _http_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("refmount-http-")]


def _read_concurrently(origins: Origins, url: str, ranges: list[tuple[int, int]]) -> dict:
    results = {}

    def one(r):
        results[r] = origins.read(url, *r)

    threads = [threading.Thread(target=one, args=(r,)) for r in ranges]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_bodies_are_received_on_more_than_one_loop_and_the_loops_end_with_their_origins(server):
    before = set(_http_threads())
    origins = Origins(retries=1, timeout=10)
    ranges = [(i * 10_000, i * 10_000 + 9_000) for i in range(12)]
    results = _read_concurrently(origins, server["url"], ranges)
    assert all(results[r] == DATA[r[0] : r[1]] for r in ranges)
    if (os.cpu_count() or 1) > 1:
        # fsspec's loop and the daemon's own, each with its filesystem: an aiohttp session is made
        # on a loop by the first request received there
        receivers = origins._receivers["http"]
        assert len(receivers) == HTTP_LOOPS and len({fs.loop for fs in receivers}) == HTTP_LOOPS
        assert all(fs._session is not None for fs in receivers)
        del receivers
    mine = set(_http_threads()) - before
    assert len(mine) == (HTTP_LOOPS - 1 if (os.cpu_count() or 1) > 1 else 0)
    del origins, results
    deadline = time.monotonic() + 10
    while any(t.is_alive() for t in mine) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert not any(t.is_alive() for t in mine), "an Origins left its event loop threads running"


@pytest.fixture
def trailing_garbage_server():
    """A raw HTTP/1.1 server that answers every ranged GET with the right 206 and an honest
    Content-Length -- then, a moment later, 100 bytes more on the kept-alive connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def handle(conn):
        conn.settimeout(5)
        buffered = b""
        with conn:
            for _ in range(200):  # bounded: requests per connection
                while b"\r\n\r\n" not in buffered:
                    try:
                        more = conn.recv(65536)
                    except OSError:
                        return
                    if not more:
                        return
                    buffered += more
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                ranges = [line for line in head.split(b"\r\n") if line.lower().startswith(b"range:")]
                first, _, last = ranges[0].split(b"=", 1)[1].strip().partition(b"-")
                start, end = int(first), int(last) + 1
                body = DATA[start:end]
                conn.sendall(b"HTTP/1.1 206 Partial Content\r\n"
                             + f"Content-Range: bytes {start}-{end - 1}/{len(DATA)}\r\n".encode()
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                time.sleep(0.05)  # the answer is complete: the extra bytes come after it
                try:
                    conn.sendall(b"G" * 100)
                except OSError:
                    return

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/f.bin"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_bytes_after_an_honest_body_never_reach_a_reader(trailing_garbage_server):
    """Each answer is right; the bytes that follow it poison its connection for the next
    request, which aiohttp cannot parse: that is a wrong answer, retried on a new connection --
    never other bytes, never a permanent failure."""
    origins = Origins(retries=3, timeout=5)
    n = 12
    for i in range(n):
        start = (i * 7919) % 250_000
        assert origins.read(trailing_garbage_server, start, start + 20_000) == DATA[start : start + 20_000]
    assert origins.stats.snapshot().get("origin_retries", 0) >= 1  # the poisoned connections were met

"""refmount's own range server (the demo's and the benchmark's origin)."""

from __future__ import annotations

import socket
import struct
import time

from refmount.rangeserver import RangeServer


def test_a_client_that_resets_its_connection_prints_nothing(tmp_path, capfd):
    """A daemon that stops resets its kept-alive connections; the server printed a traceback
    for each (in the demo's output too)."""
    (tmp_path / "f").write_bytes(b"x" * 100)
    with RangeServer(str(tmp_path)) as server:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as s:
            s.sendall(b"GET /f HTTP/1.1\r\nHost: here\r\nRange: bytes=0-9\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.") and "GET" in server.counts
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        deadline = time.monotonic() + 10
        while server.counts["GET"] < 2 and time.monotonic() < deadline:  # a second one still answers
            with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as s:
                s.sendall(b"GET /f HTTP/1.0\r\nRange: bytes=0-9\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.")
    assert "Traceback" not in capfd.readouterr().err

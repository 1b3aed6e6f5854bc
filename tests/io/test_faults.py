"""The fault suite: a misbehaving HTTP origin on 127.0.0.1, in every mode. Each read gives the
right bytes or EIO -- never other bytes -- within a bounded time, with a bounded number of
requests, and reads recover once the origin does."""

from __future__ import annotations

import errno
import json
import os
import threading

import pytest

from refmount.rangeserver import RangeServer

CHUNK, N, GAP = 4096, 6, 1000
DATA = os.urandom(N * (CHUNK + GAP) + 5000)
TIMEOUT, RETRIES = 1.0, 2
# a read fails within timeout x attempts + backoff (0.2 s, doubling), here plus slack for the
# kernel's own retry of a failed read (answered at once from the remembered failure)
BOUND = TIMEOUT * RETRIES + 0.2 + 5


def _refs(tmp_path, url: str) -> str:
    meta = {"shape": [N * 1024], "chunks": [1024], "dtype": "<f4", "compressor": None, "filters": None,
            "fill_value": None, "order": "C", "zarr_format": 2}
    refs = {".zgroup": '{"zarr_format":2}', "a/.zarray": json.dumps(meta)}
    refs.update({f"a/{i}": [url, i * (CHUNK + GAP), CHUNK] for i in range(N)})
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    return str(path)


def _want(i: int) -> bytes:
    return DATA[i * (CHUNK + GAP) : i * (CHUNK + GAP) + CHUNK]


def _read(root: str, i: int) -> bytes | int:
    """The chunk's bytes, or the errno of the failure; raises if it takes longer than BOUND."""
    out: list = []

    def run():
        try:
            with open(os.path.join(root, "a", str(i)), "rb") as f:
                out.append(f.read())
        except OSError as exc:
            out.append(exc.errno)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive(), f"a read of chunk {i} took longer than {BOUND} s"
    return out[0]


def _walk(root: str) -> tuple[int, int, int]:
    """(right, wrong, eio) over every chunk."""
    right = wrong = eio = 0
    for i in range(N):
        got = _read(root, i)
        if got == errno.EIO:
            eio += 1
        elif got == _want(i):
            right += 1
        else:
            wrong += 1
    return right, wrong, eio


@pytest.fixture
def origin(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "f.bin").write_bytes(DATA)
    with RangeServer(str(www), max_requests=5000) as server:
        server.stall = 3 * TIMEOUT
        yield server


@pytest.mark.parametrize("fault", ["shift", "shift-bare", "ignore-range", "long", "truncate", "reset", "stall",
                                   "retry-after"])
def test_every_fault_is_eio_never_other_bytes_and_recovers(fault, origin, tmp_path, mount):
    log = tmp_path / "log"
    with mount(_refs(tmp_path, f"{origin.url}/f.bin"), timeout=TIMEOUT, retries=RETRIES, failed_ttl=0.5,
               log_file=str(log)) as root:
        origin.fault = fault
        right, wrong, eio = _walk(root)
        assert wrong == 0
        assert eio == N and right == 0, (fault, right, eio)
        # the reads' own attempts, plus one failed fetch-ahead: neither prefetch nor the
        # kernel's retries of failed reads multiply them (aiohttp itself repeats a request once
        # when the server drops a kept-alive connection)
        per_attempt = 2 if fault == "reset" else 1
        print(f"fault {fault}: {N} reads, {wrong} wrong, {eio} EIO, {origin.counts['GET']} GET")  # for reports (-s)
        assert origin.counts["GET"] <= (N + 1) * RETRIES * per_attempt, origin.counts
        origin.fault = None
        import time

        time.sleep(0.6)  # failed_ttl: then the ranges are asked for again
        assert _walk(root) == (N, 0, 0)
    text = log.read_text()
    if fault == "ignore-range":
        assert text.count("ignores HTTP Range requests (it answers a ranged request") == 1  # said once, clearly
    if fault in ("shift", "shift-bare"):
        assert "206" in text and ("asked for" in text or "Content-Range" in text)


def test_a_server_that_ignores_range_is_refused_at_mount(origin, tmp_path, mountpoint):
    from tests.conftest import run_cli

    origin.fault, origin.fault_probes = "ignore-range", True
    result = run_cli(_refs(tmp_path, f"{origin.url}/f.bin"), mountpoint)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"refmount: origin {origin.url.replace('http://', 'http://')}: the server ignores "
                                     "HTTP Range requests (it answered a one-byte request with the whole object); "
                                     "refmount cannot read from it")
    assert origin.counts["GET"] == 0 and origin.counts["probe_bytes"] <= len(DATA)


def test_many_readers_of_a_dead_chunk_cost_a_bounded_number_of_requests(origin, tmp_path, mount):
    with mount(_refs(tmp_path, f"{origin.url}/f.bin"), timeout=TIMEOUT, retries=RETRIES, prefetch=False) as root:
        origin.fail = True
        results = []
        threads = [threading.Thread(target=lambda: results.append(_read(root, 0))) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(BOUND * 2)
        assert results == [errno.EIO] * 16
        assert origin.counts["GET"] <= RETRIES * 2  # one fetch shared, then the remembered failure


def test_redirects_are_checked_against_the_policy(origin, tmp_path, mount):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "f.bin").write_bytes(b"s" * len(DATA))  # a "secret" of the same size
    with RangeServer(str(elsewhere)) as other:
        origin.fault, origin.redirect_to = "redirect", other.url
        # not allowed: the redirect is refused, the other origin never asked
        with mount(_refs(tmp_path, f"{origin.url}/f.bin"), allow_origin=[origin.url], retries=1) as root:
            assert _walk(root) == (0, 0, N)
        assert other.counts["GET"] == 0
        # no policy (a user's own mount): redirects are followed, each answer checked as usual
        (elsewhere / "f.bin").write_bytes(DATA)
        with mount(_refs(tmp_path, f"{origin.url}/f.bin"), retries=1) as root:
            assert _walk(root) == (N, 0, 0)
        assert other.counts["GET"] > 0

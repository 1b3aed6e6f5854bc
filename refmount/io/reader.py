"""From a reference and a byte window to bytes: blocks, cache, origins, fetching ahead.

A ranged reference up to ``whole_limit`` bytes is one block: the first read of a chunk file
fetches the whole chunk with one request and later kernel reads are served from memory.
Larger ranges and whole-object references are read in aligned ``block_size`` blocks, with
the next blocks fetched ahead while a reader moves forward.

``fetch_ahead`` takes segments a caller expects to be read soon (the prefetcher's next chunk
files), merges neighbours of the same original into one request (gap <= ``max_gap``, request
<= ``max_request``), runs them on a pool of ``parallel`` fetchers, and splits the answers into
per-chunk cache entries -- so a later read of any of them waits for, or finds, those bytes.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from cachetools import LRUCache, TTLCache

from refmount.io.cache import MemoryCache
from refmount.io.disk import DiskCache
from refmount.io.origins import Origins
from refmount.errors import FetchError, ShortRead
from refmount.index import Decoded, Inline, Range, Ref, Unreadable

log = logging.getLogger("refmount.reader")

Segment = tuple[str, int, int, str]  # url, start, length, check (``Range.check``): also the cache key


def size_text(n: int) -> str:
    """A size for messages: whole MiB, or bytes below one."""
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"


class Reader:
    def __init__(
        self,
        origins: Origins,
        cache: MemoryCache,
        block_size: int = 8 << 20,
        whole_limit: int = 32 << 20,
        parallel: int = 16,
        max_gap: int = 64 << 10,
        max_request: int = 4 << 20,
        ahead_budget: int | None = None,
        readahead_blocks: int = 2,
        disk: DiskCache | None = None,
    ):
        self.origins = origins
        self.disk = disk
        self.cache = cache
        self.stats = cache.stats
        self.block_size = block_size
        self.whole_limit = whole_limit
        self.max_gap = max_gap
        self.max_request = max_request
        self.readahead_blocks = readahead_blocks
        self.ahead_budget = ahead_budget if ahead_budget is not None else min(cache.max_bytes // 4, 512 << 20)
        self._ahead_bytes = 0
        self._lock = threading.Lock()
        self.parallel = parallel
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="refmount-fetch")
        # originals whose fetch-ahead just failed (the origin, not a range): nothing more is
        # fetched ahead from them until a read succeeds or this expires
        self._failing: TTLCache = TTLCache(maxsize=4096, ttl=max(origins.failed_ttl, 5.0))
        # segments handed whole to a cache downstream (``served``): not fetched ahead again
        self._downstream: LRUCache = LRUCache(maxsize=1 << 14)  # keys only: a few MB at most

    def size(self, ref: Ref) -> int:
        if isinstance(ref, Inline):
            return len(ref.data)
        if isinstance(ref, Range):
            return ref.length
        if isinstance(ref, Decoded):
            return ref.codec.nbytes
        if isinstance(ref, Unreadable):
            return ref.length
        return self.origins.size(ref.url)

    def block_of(self, ref: Ref, size: int) -> int:
        return size if size <= self.whole_limit else self.block_size

    def segment(self, ref: Ref, size: int, index: int) -> Segment:
        """Block ``index`` of a reference as a ``Segment``."""
        block = self.block_of(ref, size)
        if isinstance(ref, Range):
            return ref.url, ref.offset + index * block, min(block, size - index * block), ref.check
        return ref.url, index * block, min(block, size - index * block), ""

    def _fetch(self, seg: Segment) -> bytes:
        """One segment from the disk cache, else from its origin (then kept on disk)."""
        url, start, length, check = seg
        if self.disk is None:
            data = self.origins.read(url, start, start + length, check)
        else:
            self.origins.check(url)  # a policy reloaded since the entry was written still applies
            version = self._version(seg)
            data = self.disk.get(url, start, length, version)
            if data is None and self.disk.shared:
                data = self._fetch_shared(seg, version)
            elif data is None:
                data = self.origins.read(url, start, start + length, check)
                self.disk.put(url, start, length, data, version)
        with self._lock:  # it answers again: fetch ahead again (cachetools caches need a lock)
            self._failing.pop(url, None)
        return data

    def _fetch_shared(self, seg: Segment, version: str | None) -> bytes:
        """A shared cache: one daemon fetches (its lease), the others wait for the entry; a
        holder that dies or fails lets the next one fetch."""
        url, start, length, check = seg
        for _ in range(3):
            if self.disk.lease(url, start, length, version):
                try:
                    data = self.origins.read(url, start, start + length, check)
                    self.disk.put_now(url, start, length, data, version)
                    return data
                finally:
                    self.disk.release(url, start, length, version)
            data = self.disk.wait_for(url, start, length, version)
            if data is not None:
                return data
        data = self.origins.read(url, start, start + length, check)
        self.disk.put(url, start, length, data, version)
        return data

    def _version(self, seg: Segment) -> str | None:
        """What names the original's state in the disk cache: the reference's own check,
        else the etag or mtime the origin reported."""
        return seg[3] or self.origins.version(seg[0])

    def _on_disk(self, seg: Segment) -> bool:
        return self.disk is not None and self.disk.has(seg[0], seg[1], seg[2], self._version(seg))

    def _into_cache(self, key, produce, ahead: bool = True) -> None:
        """Fulfil a claimed cache key with ``produce()`` (on the pool), or fail it; ``ahead``:
        counted among the chunks fetched ahead (see ``MemoryCache.fulfil``)."""
        try:
            self.cache.fulfil(key, produce(), ahead)
        except Exception as exc:
            self.cache.fail(key, exc)

    def read(self, ref: Ref, offset: int, length: int, size: int | None = None) -> bytes:
        """Bytes ``[offset, offset+length)`` of the file, clamped to its size."""
        data, start, end = self.read_span(ref, offset, length, size)
        return data if start == 0 and end == len(data) else data[start:end]

    def read_span(self, ref: Ref, offset: int, length: int, size: int | None = None) -> tuple[bytes, int, int]:
        """``read`` without its copy: ``(data, start, end)``, the bytes asked being
        ``data[start:end]`` -- a cached block as it is, for a caller that copies them once anyway."""
        if isinstance(ref, Inline):
            n = len(ref.data)
            return ref.data, min(offset, n), min(offset + length, n)
        if isinstance(ref, Unreadable):
            raise FetchError(ref.reason)
        if isinstance(ref, Decoded):  # the whole chunk, decoded once and cached decoded
            self._fits(ref)
            key = (ref.codec, ref.source)
            if key in self._downstream:  # asked again: the kernel let go of it (see below)
                with self._lock:
                    self._downstream.clear()
            data = self.cache.get(key, lambda: self._decode(ref))
            n = len(data)
            return data, min(offset, n), min(offset + length, n)
        if size is None:
            size = self.size(ref)
        end = min(offset + length, size)
        if offset >= end:
            return b"", 0, 0
        if self.origins.is_local(ref.url):  # the kernel's page cache is the cache for local files
            if isinstance(ref, Range):
                data = self.origins.read(ref.url, ref.offset + offset, ref.offset + end, ref.check)
            else:
                data = self.origins.read(ref.url, offset, end)
            return data, 0, len(data)
        block = self.block_of(ref, size)
        first, last = offset // block, (end - 1) // block
        blocks = (size + block - 1) // block
        if blocks > 1 and self.readahead_blocks:
            ahead = range(last + 1, min(last + 1 + self.readahead_blocks, blocks))
            self.fetch_ahead([self.segment(ref, size, b) for b in ahead])
        parts = []
        for b in range(first, last + 1):
            seg = self.segment(ref, size, b)
            if seg in self._downstream:  # the kernel asks again for what it had: it let go of
                with self._lock:  # its pages, perhaps of others too -- fetch ahead as before
                    self._downstream.clear()
            data = self.cache.get(seg, lambda seg=seg: self._fetch(seg))
            lo = b * block
            if first == last:
                return data, max(offset - lo, 0), end - lo
            parts.append(data[max(offset - lo, 0) : end - lo])
        data = b"".join(parts)
        return data, 0, len(data)

    def served(self, ref: Ref, size: int) -> None:
        """Every byte of a file went to a cache downstream (the mount's page cache): a chunk
        fetched whole is dropped from memory, which takes the next chunk fetched instead of
        fresh pages. A later read the kernel no longer holds fetches it again (or finds it on disk)."""
        if isinstance(ref, Decoded):  # the decoded chunk and the bytes it was decoded from
            key = (ref.codec, ref.source)
            with self._lock:
                self._downstream[key] = True
            self.cache.discard(key)
            if not isinstance(ref.source, Inline):
                self.served(ref.source, self.size(ref.source))
        elif isinstance(ref, Range) and size <= self.whole_limit and not self.origins.is_local(ref.url):
            seg = self.segment(ref, size, 0)
            with self._lock:
                self._downstream[seg] = True
            self.cache.discard(seg)

    def _fits(self, ref: Decoded) -> None:
        """A decoded chunk is kept whole in the memory cache between the kernel's reads of it:
        one larger than the cache would be fetched and decoded again for each of them (hours
        for a chunk of gigabytes) and hold memory past the bound. It fails at once instead."""
        if ref.codec.nbytes > self.cache.max_bytes:
            raise FetchError(f"decoded view of {getattr(ref.codec, 'path', '?')}: a chunk decodes to "
                             f"{size_text(ref.codec.nbytes)}, more than the memory cache holds ({size_text(self.cache.max_bytes)}): "
                             "mount with a larger --cache-size, or read the raw view")

    def _decode(self, ref: Decoded) -> bytes:
        source = ref.source
        raw = source.data if isinstance(source, Inline) else self.read(source, 0, self.size(source))
        try:
            data = ref.codec.decode(raw)
        except FetchError:
            raise
        except Exception as exc:
            raise FetchError(f"cannot decode a chunk of {getattr(ref.codec, 'path', '?')}: {type(exc).__name__}: {exc}") from exc
        self.stats.add("decoded_chunks")
        return data

    def decode_ahead(self, refs: list[Decoded]) -> None:
        """Decode chunks on the pool (their raw bytes are being fetched ahead): readers find
        them decoded, and decoding uses more than one core."""
        for ref in refs:
            key = (ref.codec, ref.source)
            if ref.codec.nbytes <= self.cache.max_bytes and key not in self._downstream and self.cache.claim(key):
                # (not counted apart: the raw chunk it decodes was fetched ahead, and is counted)
                self._pool.submit(self._into_cache, key, lambda ref=ref: self._decode(ref), False)

    # -- fetching ahead ---------------------------------------------------------------
    def _plan(self, segments: list[Segment]) -> list[list[Segment]]:
        """Group segments into requests: same URL and check, sorted, gaps <= max_gap, size <= max_request."""
        runs: list[list[Segment]] = []
        for seg in sorted(set(segments)):
            if runs:
                run = runs[-1]
                url, start, _, check = run[0]
                end = max(s + n for _, s, n, _ in run)
                if seg[0] == url and seg[3] == check and 0 <= seg[1] - end <= self.max_gap and seg[1] + seg[2] - start <= self.max_request:
                    run.append(seg)
                    continue
            runs.append([seg])
        return runs

    def fetch_ahead(self, segments: list[Segment]) -> int:
        """Start fetching ``segments`` in the background; returns how many were started."""
        with self._lock:
            failing = {s[0] for s in segments if s[0] in self._failing}
            held = {s for s in segments if s in self._downstream}
        wanted = [s for s in segments if s[2] > 0 and not self.origins.is_local(s[0]) and s not in self.cache
                  and s[0] not in failing and s not in held]
        started = 0
        if self.disk is not None:  # what the disk holds is loaded from there, one by one
            on_disk = [s for s in wanted if self._on_disk(s)]
            if on_disk:
                skip = set(on_disk)
                wanted = [s for s in wanted if s not in skip]
            for seg in on_disk:
                if self.cache.claim(seg):
                    started += 1
                    self.stats.add("prefetch_chunks")  # (fetched ahead from the disk: no request)
                    self._pool.submit(self._into_cache, seg, lambda seg=seg: self._fetch(seg))
        for run in self._plan(wanted):
            nbytes = sum(n for _, _, n, _ in run)
            with self._lock:
                if self._ahead_bytes + nbytes > self.ahead_budget:
                    break
                self._ahead_bytes += nbytes
            claimed = [s for s in run if self.cache.claim(s)]
            if not claimed:
                self._release(nbytes)
                continue
            started += len(claimed)
            self.stats.add("prefetch_requests")
            self.stats.add("prefetch_chunks", len(claimed))
            shared = self.disk is not None and self.disk.shared
            self._pool.submit(self._fetch_run_shared if shared else self._fetch_run, claimed, nbytes)
        return started

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._ahead_bytes -= nbytes

    def _fetch_run_shared(self, run: list[Segment], reserved: int) -> None:
        """Fetch-ahead with a shared disk cache: ranges another daemon already published are
        read from disk, ranges another daemon is fetching are waited for, and the rest -- this
        daemon's leases -- are fetched as one merged request, published, then released."""
        done: set[Segment] = set()
        mine: list[Segment] = []
        theirs: list[Segment] = []
        version = self._version(run[0])
        try:
            for seg in run:
                url, start, length, _ = seg
                data = self.disk.get(url, start, length, version)
                if data is not None:
                    self.cache.fulfil(seg, data)
                    done.add(seg)
                elif self.disk.lease(url, start, length, version):
                    mine.append(seg)
                else:
                    theirs.append(seg)
            if mine:
                url, first, _, check = mine[0]
                end = max(s + n for _, s, n, _ in mine)
                try:
                    data = self.origins.read(url, first, end, check)
                except Exception as exc:
                    for seg in mine:
                        self.cache.fail(seg, exc)
                        done.add(seg)
                else:
                    for seg in mine:
                        _, s, n, _ = seg
                        piece = data[s - first : s - first + n]
                        self.disk.put_now(url, s, n, piece, version)
                        self.cache.fulfil(seg, piece)
                        done.add(seg)
                finally:
                    for _, s, n, _ in mine:
                        self.disk.release(url, s, n, version)
            for seg in theirs:
                done.add(seg)
                self._into_cache(seg, lambda seg=seg: self._fetch(seg))
        except Exception as exc:  # never leave a claimed range in flight: its readers would wait forever
            for seg in run:
                if seg not in done:
                    self.cache.fail(seg, exc)
            for url, s, n, _ in mine:
                self.disk.release(url, s, n, version)
            raise
        finally:
            self._release(reserved)

    def _fetch_run(self, run: list[Segment], reserved: int) -> None:
        url, start, _, check = run[0]
        end = max(s + n for _, s, n, _ in run)
        try:
            try:
                data = self.origins.read(url, start, end, check)
            except Exception as exc:
                if len(run) == 1 or not isinstance(exc, ShortRead):
                    # the origin failed, not one range: readers waiting on these share the
                    # failure; later readers ask for their own range (no retry storm from here)
                    log.warning("prefetch %s [%d, %d) failed: %s", url, start, end, exc)
                    with self._lock:
                        self._failing[url] = True
                    for seg in run:
                        self.cache.fail(seg, exc)
                    return
                # one range past the end of its original must not fail its neighbours
                for seg in run:
                    try:
                        self.cache.fulfil(seg, self._fetch(seg))
                    except Exception as one:
                        self.cache.fail(seg, one)
                return
            version = self._version(run[0]) if self.disk is not None else None
            for seg in run:
                _, s, n, _ = seg
                piece = data[s - start : s - start + n]
                if self.disk is not None:
                    self.disk.put(url, s, n, piece, version)
                self.cache.fulfil(seg, piece)
        finally:
            self._release(reserved)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

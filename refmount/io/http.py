"""Exact ranged reads over HTTP, on the aiohttp session of fsspec's HTTP filesystem (so its
client options, headers and connection pool apply).

fsspec's own ``cat_file`` trusts whatever comes back. Here every answer is checked: a ``206``
must carry the ``Content-Range`` that was asked and exactly that many bytes (a body that runs
longer is cut off and refused, so memory stays bounded whatever the server sends); a ``200`` is
a server that ignored the ``Range`` header -- acceptable only when the whole object is exactly
the range; redirects are followed by hand, each hop checked against the origin policy.
"""

from __future__ import annotations

import asyncio
import re
from email.utils import parsedate_to_datetime
from typing import Callable
from urllib.parse import urljoin

import aiohttp

from refmount.errors import FetchError, ShortRead

_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*\Z", re.I)
MAX_REDIRECTS = 5


class HTTPStatus(Exception):
    """An answer other than the range: ``status`` drives the retry classification."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(f"HTTP {status} {message}".strip())
        self.status = status
        self.retry_after = retry_after


class WrongAnswer(Exception):
    """A 206 for other bytes, or a body of the wrong length: retried (a flaky proxy), then EIO."""


class IgnoresRange(FetchError):
    """The server answers ranged requests with the whole object: permanent for that host."""


class Redirected(FetchError):
    """A redirect the origin policy refuses, or too many of them."""


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        import time

        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def check_content_range(header: str | None, start: int, end: int) -> None:
    m = _CONTENT_RANGE.match(header or "")
    if m is None:
        raise WrongAnswer(f"206 without a valid Content-Range ({header!r}) for bytes {start}-{end - 1}")
    first, last, total = int(m.group(1)), int(m.group(2)), m.group(3)
    if (first, last) == (start, end - 1):
        return
    if first == start and last < end - 1 and total.isdigit() and int(total) == last + 1:
        raise ShortRead(f"got {last + 1 - start} of {end - start} bytes: the original has {total} bytes, the "
                            f"reference reads up to byte {end}")
    raise WrongAnswer(f"206 for bytes {first}-{last}, asked for {start}-{end - 1}")


async def _body(response, length: int) -> bytes:
    """Exactly ``length`` bytes of the body, reading no more than one chunk past them."""
    declared = response.content_length
    if declared is not None and declared != length:
        raise WrongAnswer(f"Content-Length {declared} for a range of {length} bytes")
    if declared == length:  # aiohttp's parser stops at Content-Length: read() is bounded by it
        data = await response.read()
        if len(data) != length:  # (a connection closed early raises before this)
            raise WrongAnswer(f"got {len(data)} of {length} bytes")
        return data
    try:  # no Content-Length (chunked): exactly the bytes asked, and nothing after them
        data = await response.content.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise WrongAnswer(f"got {len(exc.partial)} of {length} bytes") from None
    if await response.content.read(1):  # anything after them: the answer is not this range
        raise WrongAnswer(f"body longer than the {length} bytes asked (cut off)")
    return data


async def get_range(fs, url: str, start: int, end: int, headers: dict[str, str],
                    refused: Callable[[str], str | None], timeout: float) -> bytes:
    """Bytes ``[start, end)`` of ``url``; raises ``HTTPStatus``, ``WrongAnswer``,
    ``IgnoresRange``, ``Redirected`` or aiohttp's errors. The whole exchange, redirects
    included, is bounded by ``timeout`` seconds."""
    return await asyncio.wait_for(_get_range(fs, url, start, end, headers, refused), timeout)


async def _get_range(fs, url, start, end, headers, refused) -> bytes:
    try:
        return await _exchange(fs, url, start, end, headers, refused)
    except aiohttp.ClientResponseError as exc:
        if exc.status != 400:  # a session made to raise for statuses: as it says
            raise
        # what aiohttp raises for an answer it cannot parse (bytes left over from a previous
        # answer on a kept-alive connection, a broken proxy): retried on a new connection
        first = (exc.message or "").splitlines()[0] if exc.message else "400"
        raise WrongAnswer(f"an answer that cannot be parsed as HTTP: {first}") from None


async def _exchange(fs, url, start, end, headers, refused) -> bytes:
    session = await fs.set_session()
    kw = fs.kwargs.copy()
    kw.pop("allow_redirects", None)
    request_headers = dict(kw.pop("headers", None) or {})
    request_headers.update(headers)
    request_headers["Range"] = f"bytes={start}-{end - 1}"
    if not any(k.lower() == "accept-encoding" for k in request_headers):
        # the stored bytes, not a compressed rendering of them (a server that gzips a range
        # answers with a body whose length and bytes are not the range's)
        request_headers["Accept-Encoding"] = "identity"
    target = url
    for _ in range(MAX_REDIRECTS + 1):
        async with session.get(fs.encode_url(target), headers=request_headers, allow_redirects=False, **kw) as r:
            if r.status in (301, 302, 303, 307, 308):
                location = r.headers.get("Location")
                if not location:
                    raise HTTPStatus(r.status, "redirect without a Location")
                target = urljoin(target, location)
                problem = refused(target)
                if problem is not None:
                    raise Redirected(f"{url}: redirected to {target}, which is refused: {problem}")
                continue
            if r.status == 206:
                check_content_range(r.headers.get("Content-Range"), start, end)
                return await _body(r, end - start)
            if r.status == 200:
                if start == 0 and r.content_length == end:  # the whole object is the range asked
                    return await _body(r, end - start)
                raise IgnoresRange(f"{url}: the server ignores HTTP Range requests (answered 200 with the whole "
                                   f"object for bytes {start}-{end - 1}); refmount cannot read from it")
            if r.status == 416:
                raise ShortRead(f"HTTP 416: bytes {start}-{end - 1} are past the end of the original")
            if r.status in (404, 410):
                raise FileNotFoundError(f"HTTP {r.status}: {target}")
            if r.status in (401, 403):
                raise PermissionError(f"HTTP {r.status}: {target}")
            raise HTTPStatus(r.status, r.reason or "", retry_after(r.headers.get("Retry-After")))
    raise Redirected(f"{url}: more than {MAX_REDIRECTS} redirects")

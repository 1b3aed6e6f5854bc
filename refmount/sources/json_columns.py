"""The bulk of a kerchunk JSON set -- millions of ``"key": ["url", offset, length]`` entries --
read into columns straight from the text, with NumPy over the positions of its quotes, instead
of a Python object per entry.

``split(text)`` returns the entries of exactly that form in the ``refs`` object (version 1) or
the top object (version 0) as ``Columns``, and the document's remaining text: everything else
(version, templates, metadata, inline data, entries of any other form), which the caller parses
as JSON as before. An entry is taken only when its neighbourhood is exactly that form: a key and
URL without escapes or control characters, offset and length plain integers (no sign, fraction,
exponent or leading zero; length not 0), directly inside the refs object. A document that cannot
be split safely (not an object, a repeated top-level key, too many irregular places) gives None
and is parsed whole; so the result is always what a JSON parser reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_BYTES = 1 << 20  # smaller documents parse faster whole
MAX_IRREGULAR = 100_000  # places handled one by one in Python, at most
MAX_GAP = 64  # bytes between a URL and the next key, at most, for an entry to be taken
KEPT_BYTES = 1 << 20  # the rest (walked in Python) may be this large, or a quarter of the text
ROWS_BYTES = 256 << 20  # the keys as one fixed-width array, at most
_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 13, 32]] = True
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[48:58] = True
QUOTE, BACKSLASH, COMMA, COLON, LBRACKET, RBRACKET, LBRACE, RBRACE = b'"\\,:[]{}'


@dataclass
class Columns:
    keys: np.ndarray  # (n,) fixed-width bytes: each key's UTF-8 (no key holds a NUL)
    urls: list[str]  # distinct URLs as written
    url_ids: np.ndarray  # (n,) int64 index into urls
    offsets: np.ndarray  # (n,) int64
    lengths: np.ndarray  # (n,) int64


def _rows(buf: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """``(n, width)`` bytes: row ``i`` is ``buf[starts[i]:starts[i] + width]`` (zeros past the end
    of ``buf``), gathered in one operation through a view of overlapping windows."""
    last = len(buf) - width  # the last start whose window lies within buf
    near = starts > last
    if near.any():  # rows reaching past the end (a long width, the last entries): from a padded copy
        base = int(starts[near].min())
        tail = np.concatenate([buf[base:], np.zeros(width, dtype=buf.dtype)])
        out = np.empty((len(starts), width), dtype=buf.dtype)
        out[near] = _rows(tail, starts[near] - base, width)
        if (~near).any():
            out[~near] = _rows(buf, starts[~near], width)
        return out
    windows = np.lib.stride_tricks.as_strided(buf, shape=(last + 1, width), strides=(buf.strides[0],) * 2,
                                              writeable=False)
    return windows[starts]


def _strings(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The byte strings ``buf[starts[i]:ends[i]]`` as one fixed-width array."""
    lengths = ends - starts
    width = max(int(lengths.max()) if len(lengths) else 1, 1)
    out = _rows(buf, starts, width)
    out[np.arange(width) >= lengths[:, None]] = 0
    return out.view(f"S{width}").reshape(len(starts))


def _key_gaps(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Whether each gap is ``ws* ':' ws* '[' ws*``."""
    n = len(starts)
    state = np.zeros(n, dtype=np.int8)  # 0: before ':', 1: before '[', 2: after it; -1: no
    length = ends - starts
    width = int(min(length.max(), 16)) if n else 0
    chars = _rows(buf, starts, width).T if width else None
    for j in range(width):
        char = chars[j]
        live = (j < length) & (state >= 0) & ~_WS[char]
        state = np.where(live & (state == 0) & (char == COLON), 1,
                         np.where(live & (state == 1) & (char == LBRACKET), 2, np.where(live, -1, state)))
    return (state == 2) & (length <= 16)


# the gap after a URL, one byte at a time for every entry at once, by a transition table:
# states 0 before ',' | 1 the offset's first digit | 2 offset digits | 3 an offset of "0" | 4 after
# the offset | 5 the length's first digit | 6 length digits | 7 after the length | 8 after ']' |
# 9 after ',' (another entry follows: whitespace only) | 10 after '}' (the object ends: stop) |
# 11 not this form. Byte classes: whitespace, '0', '1'-'9', ',', ']', '}', anything else.
_CLASS = np.full(256, 6, dtype=np.int8)
_CLASS[[9, 10, 13, 32]] = 0
_CLASS[48] = 1
_CLASS[49:58] = 2
_CLASS[[COMMA, RBRACKET, RBRACE]] = [3, 4, 5]
_NO = 11
_STEP = np.full((12, 7), _NO, dtype=np.int8)
_STEP[0, [0, 3]] = [0, 1]
_STEP[1, [0, 1, 2]] = [1, 3, 2]
_STEP[2, [0, 1, 2, 3]] = [4, 2, 2, 5]
_STEP[3, [0, 3]] = [4, 5]  # a digit after a leading "0": not JSON
_STEP[4, [0, 3]] = [4, 5]
_STEP[5, [0, 2]] = [5, 6]  # a length of 0 (or "0..."): not this form
_STEP[6, [0, 1, 2, 4]] = [7, 6, 6, 8]
_STEP[7, [0, 4]] = [7, 8]
_STEP[8, [0, 3, 5]] = [8, 9, 10]
_STEP[9, 0] = 9
_STEP[10, :] = 10
_STEP = _STEP.ravel()


def _url_gaps(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, block: int = 1 << 17):
    """Parse each gap as ``ws* ',' ws* OFFSET ws* ',' ws* LENGTH ws* ']' ws* (',' ws* | '}' ...)``:
    (ok, offset, length, position of ']', whether ',' follows (another entry) rather than '}').
    A block of gaps at a time: the temporaries stay small and are reused, not fresh pages."""
    if len(starts) > block:
        parts = [_url_gaps(buf, starts[i:i + block], ends[i:i + block], block) for i in range(0, len(starts), block)]
        return tuple(np.concatenate(column) for column in zip(*parts))
    n = len(starts)
    length = ends - starts
    state = np.where(length > MAX_GAP, _NO, 0).astype(np.int8)
    offset = np.zeros(n, dtype=np.int64)
    size = np.zeros(n, dtype=np.int64)
    digits_o = np.zeros(n, dtype=np.int8)
    digits_s = np.zeros(n, dtype=np.int8)
    bracket = np.zeros(n, dtype=np.int8)  # where ']' is, from the gap's start
    width = int(min(length.max(), MAX_GAP)) if n else 0
    if width:
        chars = np.ascontiguousarray(_rows(buf, starts, width).T)  # (width, n): byte j of every gap
        # past a gap's end it reads as whitespace: that leaves every state that can still be taken
        # (after ',' or '}') as it is, and brings no other state to one that can
        classes = _CLASS[chars]
        classes[np.arange(width)[:, None] >= length] = 0
    for j in range(width):
        new = np.take(_STEP, state * 7 + classes[j])  # (at most 11 * 7 + 6: int8 holds it)
        in_offset, in_size = new == 2, new == 6
        for number, digits, where in ((offset, digits_o, in_offset), (size, digits_s, in_size)):
            np.multiply(number, 10, out=number, where=where)
            np.add(number, chars[j], out=number, where=where)
            np.subtract(number, 48, out=number, where=where)
            digits += where
        np.copyto(bracket, j, where=(new == 8) & (state != 8))
        state = new
    ok = ((state == 9) | (state == 10)) & (digits_o <= 18) & (digits_s <= 18)  # more digits: not int64-safe
    return ok, offset, size, starts + bracket, state == 9


def _before(buf: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The last non-whitespace byte before each position (within 16 bytes; 0 otherwise)."""
    out = np.zeros(len(positions), dtype=np.uint8)
    found = np.zeros(len(positions), dtype=bool)
    for back in range(1, 17):
        at = positions - back
        char = buf[np.maximum(at, 0)]
        take = ~found & (at >= 0) & ~_WS[char]
        out[take] = char[take]
        found |= take
        if found.all():
            break
    return out


def _positions(buf: np.ndarray, block: int = 4 << 20) -> tuple[np.ndarray, np.ndarray]:
    """The positions of every quote, and of every backslash or control character, found a block
    at a time: the comparisons' temporaries stay small and are reused, not fresh pages each."""
    quotes, odd = [], []
    for start in range(0, len(buf), block):
        part = buf[start:start + block]
        quotes.append(np.flatnonzero(part == QUOTE) + start)
        odd.append(np.flatnonzero((part == BACKSLASH) | (part < 32)) + start)
    return np.concatenate(quotes), np.concatenate(odd)


def split(text: bytes) -> tuple[bytes, Columns] | None:
    if len(text) < MIN_BYTES:
        return None
    try:  # what a JSON parser refuses is refused for the bulk as well (ASCII: UTF-8 at once)
        text.isascii() or text.decode("utf-8")
    except UnicodeDecodeError:
        return None
    buf = np.frombuffer(text, dtype=np.uint8)
    head = text[:4096].lstrip(b" \t\r\n")
    if head[:1] != b"{":
        return None  # a list of sets, or not JSON: parsed whole
    quotes, odd = _positions(buf)
    # a quote after an odd run of backslashes is inside a string
    after = odd[buf[odd] == BACKSLASH] + 1
    after = after[after < len(buf)]
    escaped = after[buf[after] == QUOTE]
    if len(escaped) > MAX_IRREGULAR:
        return None
    drop = []
    for q in escaped.tolist():
        run = 0
        while q - run - 1 >= 0 and text[q - run - 1] == BACKSLASH:
            run += 1
        if run % 2:
            drop.append(q)
    if drop:  # (positions among the sorted quotes: one pass, where a set difference compares each with all)
        quotes = np.delete(quotes, np.searchsorted(quotes, np.array(drop, dtype=quotes.dtype)))
    if len(quotes) % 2 or len(quotes) < 4:
        return None
    opens, closes = quotes[0::2], quotes[1::2]
    # strings holding an escape or a control character are never taken as a key or URL
    owner = np.searchsorted(opens, odd, side="right") - 1
    within = (owner >= 0) & (odd < closes[np.maximum(owner, 0)])
    plain = np.ones(len(opens), dtype=bool)
    plain[owner[within]] = False
    # candidate keys: a plain string followed by ':' '[' and a plain string (the URL)
    gap_end = np.append(opens[1:], len(buf))
    maybe = np.flatnonzero((buf[np.minimum(closes + 1, len(buf) - 1)] == COLON) | _WS[buf[np.minimum(closes + 1, len(buf) - 1)]])
    maybe = maybe[maybe < len(opens) - 1]
    maybe = maybe[plain[maybe] & plain[maybe + 1]]
    keys_at = maybe[_key_gaps(buf, closes[maybe] + 1, gap_end[maybe])]
    url_at = keys_at + 1
    ok, offsets, lengths, bracket, entry_follows = _url_gaps(buf, closes[url_at] + 1, gap_end[url_at])
    before = _before(buf, opens[keys_at])
    ok &= (before == COMMA) | (before == LBRACE)
    keys_at, url_at, offsets, lengths, bracket, entry_follows = (
        a[ok] for a in (keys_at, url_at, offsets, lengths, bracket, entry_follows))
    if not len(keys_at):
        return None
    # taken spans: from the key's quote to the next string (a ',' follows) or past the ']'
    starts = opens[keys_at]
    ends = np.where(entry_follows, gap_end[url_at], bracket + 1)
    # runs of adjacent spans; a run ended by its object's '}' also takes the ',' before it
    breaks = np.flatnonzero(starts[1:] > ends[:-1]) + 1
    run_starts, run_ends = starts[np.r_[0, breaks]], ends[np.r_[breaks - 1, len(ends) - 1]]
    if len(run_starts) > MAX_IRREGULAR:
        return None
    runs = []
    for s, e in zip(run_starts.tolist(), run_ends.tolist()):
        if text[e:e + 4096].lstrip(b" \t\r\n")[:1] == b"}":
            lead = text[max(s - 4096, 0):s].rstrip(b" \t\r\n")
            if lead.endswith(b","):
                s = s - (s - max(s - 4096, 0) - len(lead)) - 1
        runs.append((s, e))
    segments, position = [], 0
    for s, e in runs:
        if s > position:
            segments.append((position, s))
        position = max(position, e)
    if position < len(text):
        segments.append((position, len(text)))
    if sum(e - s for s, e in segments) > max(KEPT_BYTES, len(text) // 4):
        return None  # mostly other forms: the kept text is walked in Python, so parse it all whole
    scanned = _scan(text, segments, opens, closes)
    if scanned is None:
        return None
    depth_at_end, refs_span, v1 = scanned
    # every taken entry must sit directly in the refs object (v1) or the top object (v0)
    seg_starts = np.array([s for s, _ in segments], dtype=np.int64)
    where = np.searchsorted(seg_starts, starts, side="right") - 1
    if np.any(where < 0):
        return None
    depth = np.asarray(depth_at_end, dtype=np.int64)[where]
    if v1:
        lo, hi = refs_span
        if not (np.all(depth == 2) and np.all((starts > lo) & (ends <= hi))):
            return None
    elif not np.all(depth == 1):
        return None
    if int((closes[keys_at] - opens[keys_at]).max()) * len(keys_at) > ROWS_BYTES:
        return None  # keys as one fixed-width array would not fit
    keys = _strings(buf, opens[keys_at] + 1, closes[keys_at])
    url_starts, url_ends = opens[url_at] + 1, closes[url_at]
    # URLs: most equal the one before; the rest are compared as Python bytes
    url_len = url_ends - url_starts
    same = np.zeros(len(url_at), dtype=bool)
    same[1:] = url_len[1:] == url_len[:-1]
    # compared 8 bytes at a time: the whole words from a URL's start, then the word ending at its
    # end (URLs under 8 bytes: one word, the bytes past the end masked off)
    def words(at: np.ndarray) -> np.ndarray:
        return _rows(buf, at, 8).view("<u8").reshape(len(at))

    for k in range(0, int(url_len.max()) - 8, 8):
        if not same.any():
            break
        word = words(url_starts + k)
        same[1:] &= (word[1:] == word[:-1]) | (url_len[1:] < k + 8)
    short = url_len < 8
    tail = words(np.where(short, url_starts, url_ends - 8))
    if short.any():
        rest = np.minimum(url_len, 7).astype(np.uint64) * np.uint64(8)
        tail &= np.where(short, (np.uint64(1) << rest) - np.uint64(1), np.uint64(0xFFFFFFFFFFFFFFFF))
    same[1:] &= tail[1:] == tail[:-1]
    firsts = np.flatnonzero(~same)
    if len(firsts) > MAX_IRREGULAR:
        return None
    ids: dict[bytes, int] = {}
    first_ids = np.array([ids.setdefault(text[s:e], len(ids)) for s, e in
                          zip(url_starts[firsts].tolist(), url_ends[firsts].tolist())], dtype=np.int64)
    url_ids = first_ids[np.cumsum(~same) - 1]
    kept = b"".join(text[s:e] for s, e in segments)
    return kept, Columns(keys, [u.decode("utf-8") for u in ids], url_ids, offsets, lengths)


def _scan(text: bytes, segments, opens: np.ndarray, closes: np.ndarray):
    """Walk the kept text (outside strings) for brackets and top-level keys: (depth at each
    segment's end, the refs object's span, whether it is a version 1 set), or None."""
    depth = 0
    stack: list[tuple[int, int]] = []
    depths: list[int] = []
    top_keys: list[bytes] = []
    refs_open = refs_close = None
    for start, end in segments:
        i = int(np.searchsorted(closes, start))  # the first string ending at or after start
        pos = start
        while pos < end:
            nxt = int(opens[i]) if i < len(opens) and opens[i] < end else end
            for j in range(pos, nxt):
                c = text[j]
                if c == LBRACE or c == LBRACKET:
                    depth += 1
                    stack.append((c, j))
                elif c == RBRACE or c == RBRACKET:
                    depth -= 1
                    if not stack:
                        return None
                    opener = stack.pop()
                    if opener[1] == refs_open:
                        refs_close = j
            if nxt >= end:
                break
            close = int(closes[i])
            if depth == 1:  # a string in the top object: a key when ':' follows
                rest = text[close + 1:min(end, close + 4097)].lstrip(b" \t\r\n")  # a bounded look
                if rest[:1] == b":":
                    name = text[nxt + 1:close]
                    top_keys.append(name)
                    value = rest[1:].lstrip(b" \t\r\n")
                    if name == b"refs" and value[:1] == b"{":
                        refs_open = min(end, close + 4097) - len(value)
            pos = close + 1
            i += 1
        depths.append(depth)
    if depth != 0 or stack or len(set(top_keys)) != len(top_keys):
        return None  # unbalanced, or a repeated top-level key: left to the JSON parser
    v1 = b"version" in top_keys
    if v1 and (refs_open is None or refs_close is None):
        return None
    return depths, (refs_open, refs_close), v1

"""kerchunk JSON: value forms, templates, gen, compression, relative URLs, bad input."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma

import pytest
import zstandard

from refmount.errors import RefmountError
from refmount.index import Inline, Range, Union, Whole
from refmount.sources import open_source


def write(tmp_path, doc, name="refs.json", compress=None) -> str:
    raw = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
    if compress:
        raw = compress(raw)
    path = tmp_path / name
    path.write_bytes(raw)
    return str(path)


def test_value_forms(tmp_path):
    ix = open_source(
        write(
            tmp_path,
            {
                "version": 1,
                "refs": {
                    "text": "héllo",
                    "ctl": "a\u0000b",
                    "b64": "base64:AAEC/w==",
                    "obj": {"zarr_format": 2},
                    "whole": ["s3://b/k.nc"],
                    "range": ["https://h/f.nc", 10, 20],
                    "zero": ["https://h/f.nc", 10, 0],
                    "/lead": "x",
                },
            },
        )
    )
    assert ix.node("text") == Inline("héllo".encode())  # UTF-8 bytes: 6
    assert ix.node("ctl") == Inline(b"a\x00b")
    assert ix.node("b64") == Inline(b"\x00\x01\x02\xff")
    assert json.loads(ix.node("obj").data) == {"zarr_format": 2}
    assert ix.node("whole") == Whole("s3://b/k.nc")
    assert ix.node("range") == Range("https://h/f.nc", 10, 20)
    assert ix.node("zero") == Inline(b"")  # never a request for zero bytes
    assert ix.node("lead") == Inline(b"x")


def test_v0_and_relative_urls_resolve_against_the_reference_file(tmp_path):
    sub = tmp_path / "refs"
    sub.mkdir()
    ix = open_source(write(sub, {"a": ["../data/f.nc", 0, 4], "b": ["file:///abs/f.nc"], "c": ["/abs/g.nc"]}))
    assert ix.node("a") == Range(str(tmp_path / "data" / "f.nc"), 0, 4)
    assert ix.node("b") == Whole("/abs/f.nc")
    assert ix.node("c") == Whole("/abs/g.nc")


def test_templates(tmp_path):
    ix = open_source(
        write(
            tmp_path,
            {"version": 1, "templates": {"u": "https://h/x.grib", "d": "s3://b"}, "refs": {
                "a": ["{{u}}", 1, 2], "b": ["{{d}}/y.nc"], "c": "{{u}} stays text"}},
        )
    )
    assert ix.node("a") == Range("https://h/x.grib", 1, 2)
    assert ix.node("b") == Whole("s3://b/y.nc")
    assert ix.node("c") == Inline(b"{{u}} stays text")


@pytest.mark.parametrize("url, message", [("{{ u }}", "unsupported template"), ("{{v}}", "unknown template")])
def test_template_errors_name_the_key(tmp_path, url, message):
    path = write(tmp_path, {"version": 1, "templates": {"u": "x"}, "refs": {"k": [url, 0, 1]}})
    with pytest.raises(RefmountError, match=f"key 'k'.*{message}"):
        open_source(path)


def test_gen_expands_safely_and_overrides_refs(tmp_path):
    ix = open_source(
        write(
            tmp_path,
            {
                "version": 1,
                "templates": {"d": "https://h"},
                "refs": {"g/0.0": "old"},
                "gen": [
                    {"key": "g/{{i}}.{{j}}", "url": "{{d}}/f{{i}}", "offset": "{{i * 10 + j}}", "length": "2",
                     "dimensions": {"i": {"stop": 3}, "j": [0, 5]}},
                    {"key": "w/{{k}}", "url": "{{d}}/w", "dimensions": {"k": {"start": 1, "stop": 7, "step": 3}}},
                ],
            },
        )
    )
    assert ix.node("g/0.0") == Range("https://h/f0", 0, 2)
    assert ix.node("g/2.5") == Range("https://h/f2", 25, 2)
    assert [k for k, _ in ix.listdir("g")] == ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5"]
    assert [k for k, _ in ix.listdir("w")] == ["1", "4"]


@pytest.mark.parametrize(
    "gen, message",
    [
        ([{"key": "k{{i}}", "url": "u", "dimensions": {"i": {"stop": 10**9}}}], "more than"),
        ([{"key": "k{{__import__('os')}}", "url": "u", "dimensions": {"i": [1]}}], "unsupported expression"),
        ([{"key": "k{{i.real}}", "url": "u", "dimensions": {"i": [1]}}], "unsupported expression"),
        ([{"key": "k{{i}}", "url": "u", "offset": "1", "dimensions": {"i": [1]}}], "go together"),
    ],
)
def test_gen_refuses_what_it_cannot_do_safely(tmp_path, gen, message):
    with pytest.raises(RefmountError, match=message):
        open_source(write(tmp_path, {"version": 1, "gen": gen}))


@pytest.mark.parametrize(
    "compress",
    [gzip.compress, bz2.compress, lzma.compress, lambda b: zstandard.ZstdCompressor().compress(b)],
)
def test_compressed_files_detected_by_magic_bytes(tmp_path, compress):
    ix = open_source(write(tmp_path, {"version": 1, "refs": {"k": "v"}}, name="refs.bin", compress=compress))
    assert ix.node("k") == Inline(b"v")


@pytest.mark.parametrize("kind, compress", [
    ("gzip", gzip.compress), ("bz2", bz2.compress), ("xz", lzma.compress),
    ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_decompression_is_bounded_member_by_member_and_truncation_is_said(kind, compress):
    """A few MB that decompress to gigabytes (a bomb of spaces, still valid JSON) are refused
    past the limit -- an eighth of the memory limit by default -- before they are all made;
    several members/frames are read one after another; a cut stream is truncated."""
    from refmount.sources.reading import decompress, document_limit

    text = json.dumps({"version": 1, "refs": {f"k{i}": "v" * (i % 97) for i in range(20_000)}}).encode()
    two = compress(text[:1000]) + compress(text[1000:])
    assert decompress(two, "refs.json") == text
    with pytest.raises(RefmountError, match=r"refs.json: decompresses to more than 1 MiB, an eighth of this machine's"):
        decompress(compress(text + b" " * (3 << 20)), "refs.json", limit=1 << 20)
    whole = compress(text)
    with pytest.raises(RefmountError, match=rf"refs.json: (truncated \({kind} stream ends early\)|cannot decompress)"):
        decompress(whole[: len(whole) // 2], "refs.json")
    assert document_limit() >= 256 << 20


def test_streamed_zstd_without_content_size(tmp_path):
    raw = json.dumps({"k": "v" * 1000}).encode()
    out = zstandard.ZstdCompressor().compressobj()
    frame = out.compress(raw) + out.flush()  # streaming: no content size in the header
    ix = open_source(write(tmp_path, frame, name="refs.json.zst"))
    assert ix.node("k") == Inline(b"v" * 1000)


def test_list_of_sets_becomes_numbered_subtrees(tmp_path):
    ix = open_source(write(tmp_path, [{"version": 1, "refs": {".zgroup": "{}"}}, {"a": "b"}]))
    assert isinstance(ix, Union)
    assert ix.node("0/.zgroup") == Inline(b"{}") and ix.node("1/a") == Inline(b"b")


@pytest.mark.parametrize(
    "doc, message",
    [
        (b"{not json", "malformed JSON: .* at line 1 column 2"),
        (b"{\"k\": \"\x80\"}", "not UTF-8 JSON"),
        ({"version": 2, "refs": {}}, "unsupported reference set version 2"),
        ({"version": "1", "refs": {}}, "unsupported reference set version '1'"),
        ({"version": 1, "refs": []}, "'refs' must be an object"),
        ({"k": ["u", 1]}, "key 'k': unsupported value"),
        ({"k": ["u", "1", "2"]}, "key 'k': offset and length must be non-negative integers"),
        ({"k": ["u", -1, 2]}, "key 'k': offset and length"),
        ({"k": 3}, "key 'k': unsupported value"),
        ({"k": None}, "key 'k': unsupported value"),
        ({"k": [None, 0, 4]}, "key 'k': reference has no URL"),
        ({"k": "base64:***"}, "key 'k': invalid base64"),
        ({"k": ["simplecache::s3://b/k"]}, "key 'k': chained URL"),
        ({"a/../b": "x"}, "'a/../b'"),
        ({"a": "x", "a/b": "y"}, "'a' is both a file and a directory"),
        ([], "empty list"),
        ("text", "must be a JSON object"),
    ],
)
def test_bad_reference_files_fail_with_one_line_naming_file_and_problem(tmp_path, doc, message):
    path = write(tmp_path, doc)
    with pytest.raises(RefmountError, match=message) as info:
        open_source(path)
    text = str(info.value)
    assert "\n" not in text and str(tmp_path) in text


@pytest.mark.parametrize("bulk", [0, 40_000])  # parsed whole, and by the column parser (over 1 MiB)
def test_a_key_with_a_lone_surrogate_is_named(tmp_path, bulk):
    """JSON can spell a lone UTF-16 surrogate ("\\ud800"); no file name can hold one. The key is
    named (it was "malformed: UnicodeEncodeError ...")."""
    refs = {".zgroup": '{"zarr_format":2}', "lone\ud800/x": "j", "ok\udcff": "escaped byte: a file name can"}
    refs.update({f"a/{i}": [str(tmp_path / "d.bin"), i, 1] for i in range(bulk)})
    with pytest.raises(RefmountError, match=r"key 'lone\\ud800/x': holds a lone UTF-16 surrogate"):
        open_source(write(tmp_path, {"version": 1, "refs": refs}))


def test_missing_reference_file(tmp_path):
    with pytest.raises(RefmountError, match="no such reference file"):
        open_source(str(tmp_path / "nope.json"))


def test_each_key_keeps_its_own_url_among_many(tmp_path):
    refs = {f"v/{i}": [f"https://h/f{i % 7}.nc", i, 3] for i in range(1000)}
    refs["v/rel"] = ["data/f.nc", 0, 3]
    ix = open_source(write(tmp_path, {"version": 1, "refs": refs}))
    for i in range(1000):
        assert ix.node(f"v/{i}") == Range(f"https://h/f{i % 7}.nc", i, 3)
    assert ix.node("v/rel") == Range(str(tmp_path / "data" / "f.nc"), 0, 3)
    assert sorted(ix.urls()) == sorted({f"https://h/f{i}.nc" for i in range(7)} | {str(tmp_path / "data" / "f.nc")})

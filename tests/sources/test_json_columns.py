"""The columns fast path of kerchunk JSON (``sources.json_columns``) against the whole-document
parse: for every generated document -- canonical entries mixed with every other form, escapes,
duplicate and slash-led keys, templates, any whitespace, malformed text -- both give the same
tree key for key, or both refuse it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refmount.errors import FetchError, RefmountError
from refmount.io.origins import Origins
from refmount.sources import json_columns, kerchunk_json

SETTINGS = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _load(path, fast: bool, monkeypatch):
    monkeypatch.setattr(json_columns, "MIN_BYTES", 0 if fast else 1 << 62)
    try:
        index = kerchunk_json.load(str(path), Origins())
    except (RefmountError, FetchError) as exc:
        return "refused", type(exc).__name__
    return "tree", sorted(index.items()), sorted(getattr(index, "_dirs", {}).items()) if hasattr(index, "_dirs") else None


def _same(path, monkeypatch, expect_columns: bool | None = None):
    fast, slow = _load(path, True, monkeypatch), _load(path, False, monkeypatch)
    assert fast == slow
    if expect_columns is not None:
        monkeypatch.setattr(json_columns, "MIN_BYTES", 0)
        assert (json_columns.split(path.read_bytes()) is not None) == expect_columns
    return fast


key_text = st.one_of(st.sampled_from(["v/0.0", "v/0.1", "a/b/c", ".zarray", "v/.zattrs", "/lead", "é/ü", 'q"uote',
                                      "back\\slash", "tab\there", "x" * 70, "a//b", "../x", "v/1.0"]),
                     st.text(alphabet="abv/.0123", min_size=1, max_size=8))
canonical = st.tuples(st.sampled_from(["data.bin", "http://h/x.nc", "s3://b/k", "{{u}}/f", 'q"u', "é.nc"]),
                      st.integers(0, 10**12), st.integers(1, 10**9)).map(list)
other = st.one_of(st.text(max_size=10), st.integers(), st.floats(allow_nan=False), st.none(),
                  st.lists(st.integers(-5, 5), max_size=3), st.tuples(st.just("data.bin")).map(list),
                  st.tuples(st.just("data.bin"), st.integers(-3, 3), st.integers(-3, 3)).map(list),
                  st.tuples(st.just("data.bin"), st.floats(0, 10), st.integers(1, 3)).map(list),
                  st.dictionaries(st.sampled_from(["k", "v/0.0"]), canonical, max_size=2),
                  st.just("base64:AAEC"))
entries = st.lists(st.tuples(key_text, st.one_of(canonical, canonical, other)), max_size=25)


def _dump(value, style: int) -> str:
    if style == 0:
        return json.dumps(value, separators=(",", ":"))
    if style == 1:
        return json.dumps(value)
    if style == 2:
        return json.dumps(value, indent=2)
    return json.dumps(value, indent="\t", ensure_ascii=False)


@SETTINGS
@given(entries=entries, version=st.sampled_from([None, 1, "1", 2]), style=st.integers(0, 3),
       templates=st.booleans(), duplicate=st.booleans())
def test_the_fast_path_reads_what_the_whole_parse_reads(tmp_path_factory, monkeypatch, entries, version, style,
                                                        templates, duplicate):
    path = tmp_path_factory.mktemp("doc") / "refs.json"
    refs = dict(entries)
    body = _dump(refs, style)
    if duplicate and entries:  # the same key twice in the text: the later one counts
        key, value = entries[0]
        body = body[:-1].rstrip() + ("," if refs else "") + json.dumps(key) + ":" + json.dumps(["dup.bin", 1, 2]) + "}"
    if version is None:
        text = body
    else:
        head = {"version": version}
        if templates:
            head["templates"] = {"u": "http://t"}
        text = json.dumps(head)[:-1] + ', "refs": ' + body + "}"
    path.write_text(text)
    _same(path, monkeypatch)


@pytest.mark.parametrize("text, taken", [
    ('{"version":1,"refs":{"a/0":["d",1,2],"a/1":["d",3,4]}}', True),
    ('{"version":1,"refs":{".zgroup":"{}","a/0":["d",1,2]}}', True),  # the last entry: takes the ',' before it
    ('{"version":1,"refs":{"a/0":["d",1,2],".zgroup":"{}"}}', True),
    ('{"refs":{"a/0":["d",1,2]},"version":1}', True),
    ('{"a/0":["d",1,2],"a/1":["d",0,2]}', True),  # version 0
    ('{"a/0":["d",1,2],"a/1":{"x":["d",0,2]}}', False),  # a nested object: parsed whole
    ('{"version":null,"refs":{"a/0":["d",1,2]}}', True),
    ('{"version":1,"refs":{"a/0":["d",01,2]}}', False),  # not JSON: a leading zero
    ('{"version":1,"refs":{"a/0":["d",1,2] "a/1":["d",1,2]}}', False),  # not JSON: a missing comma
    ('{"version":1,"refs":{"a/0":["d",1,2],}}', False),  # not JSON: a trailing comma
    ('{"version":1,"version":1,"refs":{"a/0":["d",1,2]}}', False),
    ('{"version":1,"refs":{"a/0":["d",1,2],"a/0":"x"}}', True),  # in both: parsed whole
    ('{"version":1,"refs":{"a/0":["d",1,2]}} trailing', True),
    ('[{"a/0":["d",1,2]}]', False),
    ('{"version":1,"refs":{"a/0":["d",1,0],"a/1":["d",-1,2],"a/2":["d",1.5,2]}}', False),
    # URLs of one length differing in one byte, at and around the 8-byte words they are compared by
    ('{"version":1,"refs":{"a/0":["abcdefgh",1,2],"a/1":["abcdefgX",1,2],"a/2":["abcdefghi",1,2],'
     '"a/3":["abcdefghX",1,2],"a/6":["abcdefghijklmnopq",1,2],'
     '"a/7":["abcdefghijklmnopX",1,2],"a/8":["Xbcdefghijklmnopq",1,2],"a/9":["abcdefgXijklmnopq",1,2],'
     '"a/10":["ab",1,2],"a/11":["aX",1,2],"a/12":["aX",1,2]}}', True),
    # a long key early, short entries at the very end (their windows reach past the text)
    ('{"version":1,"refs":{"' + "k" * 200 + '":["d",1,2],"a/0":["d",1,2],"b":["e",3,4]}}', True),
])
def test_edge_cases(tmp_path, monkeypatch, text, taken):
    path = tmp_path / "refs.json"
    path.write_text(text)
    _same(path, monkeypatch, expect_columns=taken)


def test_a_large_set_is_taken_whole_and_reads_the_same(tmp_path, monkeypatch):
    rng = random.Random(1)
    refs = {".zgroup": '{"zarr_format":2}', "v/.zarray": json.dumps({"shape": [300, 300]})}
    for i in range(300):
        for j in range(300):
            refs[f"v/{i}.{j}"] = [f"data{rng.randrange(3)}.bin", rng.randrange(10**9), rng.randrange(1, 10**6)]
    refs["v/inline"] = "base64:AAEC"
    refs["v/whole"] = ["data0.bin"]
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}, indent=1))
    kind, items, dirs = _same(path, monkeypatch, expect_columns=True)
    assert kind == "tree" and len(items) == len(refs) - 0


CONFORMANCE_SETS = sorted(p for p in (Path(__file__).resolve().parent.parent / "data" / "conformance").rglob("*.json")
                          if "expected" not in p.parts)


@pytest.mark.parametrize("path", CONFORMANCE_SETS, ids=lambda p: p.name)
def test_real_kerchunk_outputs_read_the_same_both_ways(path, monkeypatch):
    """kerchunk's own outputs (ujson escapes, templates, gen, v0 and v1, the parse-only sets):
    the same tree through the columns and through the whole-document parse."""
    _same(path, monkeypatch)


def test_gaps_parsed_a_block_at_a_time_read_the_same():
    """The gaps after URLs are parsed in blocks of entries (small reused temporaries): blocks of 7
    give what one block gives, entry for entry -- the forms taken, their numbers, their ends, and
    the forms left to the JSON parser, in whichever block they fall."""
    forms = [", {o}, {n}], ", ",{o},{n}]}}", " , {o} ,\n {n} ] ,", ", 1.5, 2], ", ", {o}], ", ", 01, 2], "]
    gaps = [forms[i % len(forms)].format(o=i * 10, n=10 + i % 7).encode() for i in range(1000)]
    buf = np.frombuffer(b"".join(gaps), dtype=np.uint8)
    ends = np.cumsum([len(g) for g in gaps])
    starts = ends - [len(g) for g in gaps]
    whole = json_columns._url_gaps(buf, starts, ends)
    blocked = json_columns._url_gaps(buf, starts, ends, 7)
    for one, other in zip(whole, blocked):
        assert np.array_equal(one, other)
    ok = whole[0]
    assert ok.tolist() == [i % 6 < 3 for i in range(1000)]  # the last three forms: not this form
    assert whole[1][ok].tolist() == [i * 10 for i in range(1000) if i % 6 < 3]

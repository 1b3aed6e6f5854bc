"""Property-based fuzzing of every input format (hypothesis): JSON reference sets (structure and
bytes, plain and compressed), Parquet sets (metadata and record files) and Icechunk
repositories (every kind of object). Each generated input either loads -- and then every key
reads as bytes, ENOENT or EIO -- or is refused with one line naming it; never another
exception, never a hang. A fixed seed runs every time, and a second seed that changes daily
(``REFMOUNT_FUZZ_SEED`` picks one); about 1,100 inputs per run, a sample of them through the
real command line."""

from __future__ import annotations

import datetime
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import refmount
from refmount.errors import FetchError, RefmountError
from refmount.mount.mountpoint import is_mounted
from tests.conftest import CONFORMANCE
from tests.sources.test_icechunk import DATA as ICECHUNK

ROTATING = int(os.environ.get("REFMOUNT_FUZZ_SEED") or datetime.date.today().toordinal())
SEEDS = [pytest.param(0, id="fixed-seed"), pytest.param(ROTATING, id=f"seed-{ROTATING}")]
FAST = settings(max_examples=200, deadline=20_000, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
MAX_KEYS_READ = 300
EXAMPLES_RUN = 0.95  # of max_examples (hypothesis may skip an input it generated twice)

# -- values that break naive code -------------------------------------------------------
nasty_ints = st.sampled_from([-1, -(2**63), 2**63, 2**64, 2**63 - 1, 10**30, 0, 1])
nasty_text = st.sampled_from(["", "..", ".", "/", "//", "a/../b", "\x00", "\ud800", "a\x00b", "x" * 300,
                              "{{u}}", "{{ u }}", "{{", "file:///etc/passwd", "http://[::1", "s3://", "a::b",
                              "base64:!!!", "base64:", "http://h:99999/x", "\u00e9", "%2e%2e"])
leaf = st.one_of(st.none(), st.booleans(), nasty_ints, st.integers(), st.floats(allow_nan=True), nasty_text,
                 st.text(max_size=20))
json_value = st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                          max_leaves=12)


def _deep(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _check_loads_or_one_line(path: str, seen: list) -> None:
    """Load through the engine (as the daemon does); read every key of what loads."""
    seen.append(path)
    try:
        engine = refmount.open(path, allow_missing=True, prefetch=False, retries=1, timeout=2, failed_ttl=0,
                               cache_size=32 << 20)
    except (RefmountError, FetchError) as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message, message
        return
    with engine:
        try:
            for n, key in enumerate(engine.walk()):  # a listing may fail with EIO (a corrupt manifest)
                if n >= MAX_KEYS_READ:
                    break
                try:
                    engine.read(key, 0, 1 << 16)
                except (FileNotFoundError, IsADirectoryError, FetchError):
                    pass
        except FetchError as exc:
            assert "\n" not in str(exc)


# -- JSON ----------------------------------------------------------------------------------
BASE_JSON = json.loads((CONFORMANCE / "synthetic.h5.v1.json").read_text())


@st.composite
def json_sets(draw):
    refs = json.loads(json.dumps(BASE_JSON))
    kind = draw(st.sampled_from(["value", "key", "top", "gen", "templates", "deep", "range"]))
    keys = sorted(refs["refs"])
    if kind == "value":
        refs["refs"][draw(st.sampled_from(keys))] = draw(json_value)
    elif kind == "key":
        refs["refs"][draw(nasty_text)] = draw(st.sampled_from(list(refs["refs"].values())))
    elif kind == "top":
        refs[draw(st.sampled_from(["version", "refs", "templates", "gen"]))] = draw(json_value)
    elif kind == "gen":
        refs["gen"] = [{"key": draw(st.sampled_from(["k/{{i}}", "{{i}}/{{j}}", "{{", "../{{i}}", "k"])),
                        "url": draw(st.sampled_from(["data/data.bin", "{{u}}", "{{i}}", "", "/{{i}}"])),
                        "offset": draw(st.one_of(st.sampled_from(["{{i}}*10", "-1", "{{i}}**99", "(" * 400 + "1" + ")" * 400,
                                                                   "{{i}} // 0", "1" * 40]), json_value)),
                        "length": draw(st.sampled_from(["10", "0", "-5", "{{i}}"])),
                        "dimensions": {"i": draw(st.one_of(st.just({"start": 0, "stop": 10**12, "step": 1}),
                                                           st.just({"stop": 5}), json_value)),
                                       "j": draw(st.one_of(st.lists(st.integers(), max_size=3), json_value))}}]
    elif kind == "templates":
        refs["templates"] = {"u": draw(nasty_text)}
        refs["refs"][draw(st.sampled_from(keys))] = ["{{u}}", draw(nasty_ints), draw(nasty_ints)]
    elif kind == "deep":
        refs["refs"][draw(st.sampled_from(keys))] = _deep(draw(st.sampled_from([50, 900, 3000])))
    else:
        refs["refs"][draw(st.sampled_from(keys))] = [draw(st.sampled_from(["data/data.bin", "data/nope.bin", 7, None])),
                                                    draw(nasty_ints), draw(nasty_ints)]
    return refs


def _dump(value) -> bytes:
    try:
        return json.dumps(value).encode("utf-8", "surrogatepass")
    except (RecursionError, ValueError):
        return b"[" * 5000


@pytest.mark.parametrize("run_seed", SEEDS)
def test_fuzz_json_structure(run_seed, tmp_path_factory):
    directory = tmp_path_factory.mktemp("json")
    (directory / "data").mkdir()
    shutil.copy(CONFORMANCE / "data" / "synthetic.h5", directory / "data")
    (directory / "data" / "data.bin").write_bytes(bytes(range(256)))

    EXAMPLES = 200
    seen: list = []

    @seed(run_seed)
    @settings(FAST, max_examples=EXAMPLES)
    @given(json_sets())
    def run(refs):
        path = directory / "refs.json"
        path.write_bytes(_dump(refs))
        _check_loads_or_one_line(str(path), seen)

    run()
    assert len(seen) >= EXAMPLES_RUN * EXAMPLES, len(seen)  # the cases did run


@pytest.mark.parametrize("run_seed", SEEDS)
def test_fuzz_json_bytes(run_seed, tmp_path_factory):
    """Bit flips and truncations of a real set, plain, gzip and zstd."""
    directory = tmp_path_factory.mktemp("jsonb")
    shutil.copytree(CONFORMANCE / "data", directory / "data")
    raw = (CONFORMANCE / "air.nc.v1.json").read_bytes()

    EXAMPLES = 150
    seen: list = []

    @seed(run_seed)
    @settings(FAST, max_examples=EXAMPLES)
    @given(st.sampled_from(["plain", "gzip", "zstd"]), st.integers(0, 10**9), st.integers(0, 255),
           st.sampled_from(["flip", "truncate", "both"]))
    def run(form, where, byte, how):
        data = {"plain": raw, "gzip": gzip.compress(raw), "zstd": zstandard.compress(raw)}[form]
        data = bytearray(data)
        if how in ("flip", "both"):
            data[where % len(data)] ^= byte or 1
        if how in ("truncate", "both"):
            data = data[: where % len(data)]
        path = directory / {"plain": "refs.json", "gzip": "refs.json.gz", "zstd": "refs.json.zst"}[form]
        path.write_bytes(bytes(data))
        _check_loads_or_one_line(str(path), seen)

    run()
    assert len(seen) >= EXAMPLES_RUN * EXAMPLES, len(seen)  # the cases did run


# -- Parquet -------------------------------------------------------------------------------
@st.composite
def parquet_sets(draw):
    metadata = {".zgroup": {"zarr_format": 2},
                "v/.zarray": {"shape": draw(st.sampled_from([[4], [10**12, 10**12, 10**6], [0], [-1], []])),
                              "chunks": draw(st.sampled_from([[1], [1, 1, 1], [0], ["a"], None])),
                              "dtype": "<i4", "compressor": None, "filters": None, "fill_value": 0,
                              "order": "C", "zarr_format": 2}}
    if draw(st.booleans()):
        metadata["v/.zarray"][draw(st.sampled_from(["shape", "chunks", "dtype"]))] = draw(json_value)
    zmeta = {"metadata": metadata, "record_size": draw(st.one_of(st.just(2), nasty_ints, json_value))}
    if draw(st.booleans()):
        zmeta[draw(st.sampled_from(["metadata", "record_size"]))] = draw(json_value)
    columns = {
        "path": draw(st.sampled_from([pa.array(["data.bin", None], pa.string()), pa.array([1, 2], pa.int64()),
                                      pa.array(["\x00", "../../etc/passwd"], pa.string())])),
        "offset": draw(st.sampled_from([pa.array([0, 4], pa.int64()), pa.array([-100, 2**62], pa.int64()),
                                        pa.array(["a", "b"], pa.string()), pa.array([2**64 - 1, 0], pa.uint64()),
                                        pa.array([0.5, 1.5], pa.float64())])),
        "size": draw(st.sampled_from([pa.array([4, 4], pa.int64()), pa.array([-5, 2**63 - 1], pa.int64()),
                                      pa.array([None, None], pa.int64())])),
        "raw": draw(st.sampled_from([pa.array([None, b"xy"], pa.binary()), pa.array([1, 2], pa.int32())])),
    }
    drop = draw(st.sets(st.sampled_from(list(columns)), max_size=2))
    record = {k: v for k, v in columns.items() if k not in drop}
    corrupt = draw(st.sampled_from([None, "truncate", "garbage"]))
    return zmeta, record, corrupt


@pytest.mark.parametrize("run_seed", SEEDS)
def test_fuzz_parquet(run_seed, tmp_path_factory):
    directory = tmp_path_factory.mktemp("parquet")
    (directory / "data.bin").write_bytes(bytes(range(64)))

    EXAMPLES = 120
    seen: list = []

    @seed(run_seed)
    @settings(FAST, max_examples=EXAMPLES)
    @given(parquet_sets())
    def run(case):
        zmeta, record, corrupt = case
        root = directory / "refs.parq"
        shutil.rmtree(root, ignore_errors=True)
        (root / "v").mkdir(parents=True)
        (root / ".zmetadata").write_bytes(_dump(zmeta))
        if record:
            pq.write_table(pa.table(record), root / "v" / "refs.0.parq")
            if corrupt:
                data = (root / "v" / "refs.0.parq").read_bytes()
                (root / "v" / "refs.0.parq").write_bytes(data[: len(data) // 2] if corrupt == "truncate" else data[::-1])
        _check_loads_or_one_line(str(root), seen)

    run()
    assert len(seen) >= EXAMPLES_RUN * EXAMPLES, len(seen)  # the cases did run


# -- Icechunk -----------------------------------------------------------------------------
def _icechunk_objects(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())


@pytest.mark.parametrize("run_seed", SEEDS)
@pytest.mark.parametrize("spec", ["v2", "v1"])
def test_fuzz_icechunk(run_seed, spec, tmp_path_factory):
    pristine = ICECHUNK / spec
    objects = [o for o in _icechunk_objects(pristine) if not o.startswith("chunks/")]
    directory = tmp_path_factory.mktemp(f"icechunk-{spec}")

    EXAMPLES = 60
    seen: list = []

    @seed(run_seed)
    @settings(FAST, max_examples=EXAMPLES)
    @given(st.sampled_from(objects), st.integers(0, 10**9), st.integers(1, 255),
           st.sampled_from(["flip", "truncate", "empty", "zeros"]))
    def run(name, where, byte, how):
        repo = directory / "repo"
        shutil.rmtree(repo, ignore_errors=True)
        shutil.copytree(pristine, repo)
        target = repo / name
        data = bytearray(target.read_bytes())
        if how == "flip" and data:
            data[where % len(data)] ^= byte
        elif how == "truncate":
            data = data[: where % max(len(data), 1)]
        elif how == "empty":
            data = bytearray()
        else:
            data = bytearray(len(data))
        target.write_bytes(bytes(data))
        _check_loads_or_one_line(str(repo), seen)

    run()
    assert len(seen) >= EXAMPLES_RUN * EXAMPLES, len(seen)  # the cases did run


# -- through the real command line ------------------------------------------------------------
CLI_CASES = [
    {"version": 1, "refs": {"k": ["data.bin", 2**63, 1]}},
    {"version": 1, "refs": {"\ud800": "x"}},
    {"version": 1, "refs": {"k": ["data\x00.bin", 0, 1]}},
    {"version": 1, "refs": {"k": _deep(1200)}},
    {"version": 1, "gen": [{"key": "k{{i}}", "url": "data.bin", "offset": "(" * 600 + "1" + ")" * 600, "length": "1",
                            "dimensions": {"i": {"stop": 2}}}]},
    {"version": 1, "gen": [{"key": "k{{i}}", "url": "data.bin", "dimensions": {"i": {"stop": 10**10}}}]},
    {"version": 1, "refs": {"k": ["data.bin", -100, 50]}},
    {"version": 1, "refs": {"a": "x", "a/b": "y"}},
    {"version": 1, "refs": {"../x": "y"}},
    {"version": 1, "refs": {"k": ["simplecache::data.bin", 0, 1]}},
    {"version": 1, "refs": [1, 2]},
    {"version": 2, "refs": {}},
    [{"version": 1, "refs": {"k": 1}}],
]


@pytest.mark.parametrize("case", range(len(CLI_CASES)))
def test_bad_inputs_through_the_command_line(case, tmp_path, mountpoint):
    (tmp_path / "data.bin").write_bytes(b"0123456789")
    refs = tmp_path / "refs.json"
    refs.write_bytes(_dump(CLI_CASES[case]))
    for extra in ([], ["-f"]):  # background, and foreground as systemd runs it
        result = subprocess.run([sys.executable, "-m", "refmount", *extra, str(refs), mountpoint],
                                capture_output=True, text=True, timeout=60)
        if result.returncode == 0:  # it mounted (a valid if odd set): unmount, reads were fuzzed above
            subprocess.run([sys.executable, "-m", "refmount", "umount", mountpoint], capture_output=True, timeout=30)
            assert not extra, "a foreground mount returned before it was unmounted"
            continue
        assert "Traceback" not in result.stderr, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines and lines[-1].startswith(("refmount: ", "20")), result.stderr
        assert all("refmount" in line for line in lines), result.stderr
        assert not is_mounted(mountpoint)


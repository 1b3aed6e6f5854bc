"""Parquet reference directories: lazy records, row rules, grid lookups, listings."""

from __future__ import annotations

import errno
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refmount.errors import FetchError, RefmountError
from refmount.index import Dir, Inline, Range, Whole
from refmount.sources import open_source


def make_set(root, arrays: dict, record_size: int, records: dict) -> str:
    """arrays: name -> (shape, chunks); records: (array, n) -> list of row dicts (None = skip file)."""
    root.mkdir()
    metadata = {".zgroup": {"zarr_format": 2}}
    for name, (shape, chunks) in arrays.items():
        metadata[f"{name}/.zarray"] = {"shape": shape, "chunks": chunks, "dtype": "<i4", "compressor": None,
                                       "filters": None, "fill_value": 0, "order": "C", "zarr_format": 2}
    (root / ".zmetadata").write_text(json.dumps({"metadata": metadata, "record_size": record_size}))
    for (array, n), rows in records.items():
        (root / array).mkdir(parents=True, exist_ok=True)
        rows = rows + [{"path": None, "offset": 0, "size": 0, "raw": None}] * (record_size - len(rows))
        table = pa.table({
            "path": pa.array([r["path"] for r in rows], pa.string()),
            "offset": pa.array([r["offset"] for r in rows], pa.int64()),
            "size": pa.array([r["size"] for r in rows], pa.int64()),
            "raw": pa.array([r["raw"] for r in rows], pa.binary()),
        })
        pq.write_table(table, root / array / f"refs.{n}.parq")
    return str(root)


def row(path=None, offset=0, size=0, raw=None):
    return {"path": path, "offset": offset, "size": size, "raw": raw}


@pytest.fixture
def pset(tmp_path):
    # v: shape (5, 4), chunks (2, 2) -> grid (3, 2) = 6 chunks; record_size 4 -> 2 records
    return make_set(
        tmp_path / "refs.parq",
        {"v": ([5, 4], [2, 2]), "grp/w": ([3], [1]), "empty": ([0], [0])},
        4,
        {
            ("v", 0): [row("data.bin", 10, 5), row(raw=b"inline"), row("data.bin"), row()],
            # record 1 (chunks 4, 5) never written
            ("grp/w", 0): [row("s3://b/k", 1, 2)],  # padded: rows 1..3 null
        },
    )


def test_rows_map_to_refs(pset, tmp_path):
    ix = open_source(pset)
    data = str(tmp_path / "data.bin")
    assert ix.node("v/0.0") == Range(data, 10, 5)  # relative to the set's parent directory
    assert ix.node("v/0.1") == Inline(b"inline")
    assert ix.node("v/1.0") == Whole(data)  # offset 0, size 0: the whole object
    assert ix.node("v/1.1") is None  # null row
    assert ix.node("v/2.0") is None and ix.node("v/2.1") is None  # record file never written
    assert ix.node("grp/w/0") == Range("s3://b/k", 1, 2)
    assert ix.node("grp/w/1") is None  # padding row


@pytest.mark.parametrize("name", ["3.0", "0.2", "0", "0.0.0", "00.0", "-1.0", "a.b", ""])
def test_out_of_grid_or_malformed_chunk_names_are_absent(pset, name):
    assert open_source(pset).node(f"v/{name}") is None


def test_listing_comes_from_the_grid_and_loaded_records(pset):
    ix = open_source(pset)
    assert list(ix.listdir("")) == [(".zgroup", False), ("empty", True), ("grp", True), ("v", True)]
    assert list(ix.listdir("v")) == [(".zarray", False), ("0.0", False), ("0.1", False), ("1.0", False)]
    assert list(ix.listdir("grp/w")) == [(".zarray", False), ("0", False)]
    assert list(ix.listdir("empty")) == [(".zarray", False)]  # zero-size array: empty grid
    assert ix.node("grp") == Dir(3)
    assert ix.node(".zmetadata") is None  # the set's own file is not shown


def test_mount_reads_only_zmetadata_until_a_chunk_is_touched(pset):
    ix = open_source(pset)
    assert len(ix._records) == 0
    ix.node("v/.zarray")
    assert len(ix._records) == 0
    ix.node("v/0.0")
    assert list(ix._records.keys()) == [("v", 0)]


def test_unreadable_record_is_an_error_not_missing(pset, tmp_path):
    """Chunks whose record cannot be read are unknown, not absent: "absent" would make Zarr
    readers serve fill values instead of the data."""
    (tmp_path / "refs.parq" / "v" / "refs.0.parq").write_bytes(b"not parquet")
    ix = open_source(pset)
    with pytest.raises(FetchError, match="refs.0.parq is unreadable"):
        ix.node("v/0.0")
    assert ix.node("v/.zarray") is not None
    assert ix.node("v/4.0") is None  # record 1 was never written: missing for sure


def test_a_first_record_unreadable_at_mount_is_one_line(pset, tmp_path, mountpoint):
    """The mount reads an array's first record file to find its originals: one that is not
    Parquet stops the mount with one line naming it (not the daemon's exit status)."""
    from tests.conftest import run_cli

    (tmp_path / "refs.parq" / "v" / "refs.0.parq").write_bytes(b"not parquet")
    result = run_cli(pset, mountpoint)
    assert result.returncode == 1 and not os.path.ismount(mountpoint)
    assert result.stderr.startswith("refmount: record file ") and "refs.0.parq is unreadable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "daemon exited" not in result.stderr, result.stderr


def test_a_listing_through_an_unreadable_record_is_eio(tmp_path, mount):
    """Listing an array reads its record files: one that is not Parquet fails the listing with
    EIO and a log line naming it (it was EINVAL with a traceback); chunks of the other
    records still read."""
    (tmp_path / "data.bin").write_bytes(bytes(range(64)))
    pset = make_set(tmp_path / "refs.parq", {"v": ([4], [1])}, 2,
                    {("v", 0): [row(str(tmp_path / "data.bin"), 0, 4), row(str(tmp_path / "data.bin"), 4, 4)],
                     ("v", 1): [row(str(tmp_path / "data.bin"), 8, 4)]})
    (tmp_path / "refs.parq" / "v" / "refs.1.parq").write_bytes(b"not parquet")
    with mount(pset) as root:
        with pytest.raises(OSError) as failed:
            os.listdir(os.path.join(root, "v"))
        assert failed.value.errno == errno.EIO
        assert open(os.path.join(root, "v", "1"), "rb").read() == bytes(range(4, 8))
    log = (tmp_path / "refmount.log").read_text()
    assert "ERROR refmount.fs: EIO /v: record file" in log and "refs.1.parq is unreadable" in log
    assert "Traceback" not in log


def test_record_failure_over_http_is_eio_then_the_data_once_the_origin_recovers(tmp_path, http_origin, mount):
    www = http_origin.dir
    (www / "data.bin").write_bytes(bytes(range(256)) * 4)
    make_set(www / "refs.parq", {"v": ([4], [1])}, 2,
             {("v", 0): [row(f"{http_origin.url}/data.bin", 10, 4), row(f"{http_origin.url}/data.bin", 20, 4)],
              ("v", 1): [row(f"{http_origin.url}/data.bin", 30, 4), row(f"{http_origin.url}/data.bin", 40, 4)]})
    with mount(f"{http_origin.url}/refs.parq", retries=1, prefetch=False, failed_ttl=0) as root:
        http_origin.fail = True  # every request answers 503 from now on
        for name in ("0", "3"):
            with pytest.raises(OSError) as info:
                with open(os.path.join(root, "v", name), "rb") as f:
                    f.read()
            assert info.value.errno == errno.EIO  # not ENOENT: a fill value would be wrong data
        http_origin.fail = False
        with open(os.path.join(root, "v", "0"), "rb") as f:
            assert f.read() == bytes(range(10, 14))
        with open(os.path.join(root, "v", "3"), "rb") as f:
            assert f.read() == bytes(range(40, 44))


def test_a_record_larger_than_the_memory_for_records_is_read_once(tmp_path, caplog):
    """Long URLs and many rows per record (kerchunk writes 100,000) with a small --cache-size
    decode to more than the bound: that raised "value too large" at mount. The last such record
    is held beside the LRU, read once for all its chunks, with one warning."""
    from refmount.io.origins import Origins
    from refmount.io.stats import Stats

    data = tmp_path / "data.bin"
    data.write_bytes(bytes(range(256)) * 4)
    long = str(tmp_path) + "/." * 40 + "/data.bin"
    n = 20_000
    pset = make_set(tmp_path / "big.parq", {"v": ([n], [1])}, n, {("v", 0): [row(long, i % 1000, 1) for i in range(n)]})
    stats = Stats()
    with caplog.at_level("WARNING", logger="refmount.parquet"):
        ix = open_source(pset, Origins(stats=stats), memory=1 << 20)
        refs = [ix.node(f"v/{i}") for i in range(0, n, 7)]
    assert all(r == Range(long, i % 1000, 1) for r, i in zip(refs, range(0, n, 7)))
    assert stats.snapshot()["source_requests"] == 2  # .zmetadata and the record, once
    assert [r.getMessage() for r in caplog.records if "held beyond it" in r.getMessage()] == [
        f"{pset}: record files decode to {ix._oversized[1].nbytes >> 20} MiB, more than the 1 MiB kept for records "
        "(a quarter of --cache-size): one is held beyond it at a time"]


def test_one_record_file_is_not_taken_for_a_set(pset):
    with pytest.raises(RefmountError, match=r"refs.0.parq: one Parquet file, not a kerchunk Parquet reference set"):
        open_source(os.path.join(pset, "v", "refs.0.parq"))


@pytest.mark.parametrize("content, message", [
    ("{}", "needs metadata and record_size"),
    ('{"metadata": {}, "record_size": 0}', "invalid metadata or record_size"),
    ("nope", "needs metadata and record_size"),
    ('{"metadata": {"x/.zarray": "not json"}, "record_size": 1}', "x/.zarray has no valid shape/chunks"),
    ('{"metadata": {"x/.zarray": "' + "[" * 100_000 + "]" * 100_000 + '"}, "record_size": 1}', "x/.zarray has no valid"),
    ('{"metadata": {"x/.zarray": [1, 2]}, "record_size": 1}', "x/.zarray has no valid shape/chunks"),
    ("[" * 100_000 + "]" * 100_000, "needs metadata and record_size"),
])
def test_bad_zmetadata(tmp_path, content, message):
    root = tmp_path / "bad.parq"
    root.mkdir()
    (root / ".zmetadata").write_text(content)
    with pytest.raises(RefmountError, match=message):
        open_source(str(root))


def test_large_grid_lookup_and_listing(tmp_path):
    # 10 x 10 x 10 chunks, record_size 64: 16 record files, every 7th chunk present
    present = {n for n in range(1000) if n % 7 == 0}
    records = {}
    for n in present:
        records.setdefault(("big", n // 64), [row() for _ in range(64)])[n % 64] = row("x.bin", n * 10, 10)
    pset = make_set(tmp_path / "big.parq", {"big": ([10, 100, 1000], [1, 10, 100])}, 64, records)
    ix = open_source(pset)
    names = [name for name, _ in ix.listdir("big") if not name.startswith(".")]
    expected = [f"{n // 100}.{n // 10 % 10}.{n % 10}" for n in sorted(present)]
    assert names == expected
    assert ix.node("big/9.9.4") == Range(str(tmp_path / "x.bin"), 9940, 10)
    assert ix.node("big/9.9.9") is None


def test_record_files_held_count_against_the_cache_size(tmp_path):
    """The decoded record files a mount holds are a quarter of ``--cache-size`` (not a fixed
    256 MiB), and the chunk cache gets the rest: the mount's memory stays within its bound."""
    import refmount

    records = {("v", n): [row(str(tmp_path / "data.bin"), i, 1) for i in range(1000)] for n in range(40)}
    (tmp_path / "data.bin").write_bytes(bytes(range(256)) * 4)
    root = make_set(tmp_path / "big.parq", {"v": ([40_000], [1])}, 1000, records)
    with refmount.open(root, cache_size="8MiB") as engine:
        assert engine.tree.reserved_bytes() == 2 << 20
        assert engine.reader.cache.max_bytes == 6 << 20
        for n in range(40):  # every record file, once
            assert engine.read(f"v/{n * 1000 + 7}") == bytes([7])
        held = engine.tree.tree if hasattr(engine.tree, "tree") else engine.tree
        assert 0 < held._records.currsize <= 2 << 20 and len(held._records) < 40


def test_dictionary_encoded_paths_as_kerchunk_writes_them(tmp_path):
    """kerchunk's ``refs_to_dataframe`` writes ``path`` as a pandas categorical (an Arrow
    dictionary column) when few files hold many chunks: read through its dictionary."""
    (tmp_path / "data.bin").write_bytes(bytes(range(100)))
    root = tmp_path / "cat.parq"
    root.mkdir()
    metadata = {".zgroup": {"zarr_format": 2}, "v/.zarray": {"shape": [4], "chunks": [1], "dtype": "|u1",
                "compressor": None, "filters": None, "fill_value": 0, "order": "C", "zarr_format": 2}}
    (root / ".zmetadata").write_text(json.dumps({"metadata": metadata, "record_size": 4}))
    (root / "v").mkdir()
    paths = pa.array(["data.bin", "data.bin", None, "data.bin"]).dictionary_encode()
    pq.write_table(pa.table({"path": paths, "offset": pa.array([5, 6, 0, 9], pa.int64()),
                             "size": pa.array([1, 2, 0, 3], pa.int64()), "raw": pa.array([None] * 4, pa.binary())}),
                   root / "v" / "refs.0.parq")
    assert pq.read_table(root / "v" / "refs.0.parq").schema.field("path").type.id == pa.dictionary(pa.int32(), pa.string()).id
    tree = open_source(str(root))
    assert tree.node("v/0") == Range(str(tmp_path / "data.bin"), 5, 1)
    assert tree.node("v/3") == Range(str(tmp_path / "data.bin"), 9, 3)
    assert tree.node("v/2") is None

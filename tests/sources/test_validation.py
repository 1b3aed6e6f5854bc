"""Reference values and odd-but-valid inputs: refused, bounded or accepted as they should be."""

from __future__ import annotations

import errno
import json
import os
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from refmount.errors import RefmountError
from refmount.sources import open_source
from tests.conftest import run_cli


def _write(tmp_path, refs, name="refs.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    return str(path)


@pytest.mark.parametrize("value, fragment", [
    (["d.bin", -1, 4], r"non-negative integers below 2\*\*63"),
    (["d.bin", 2**63, 4], r"non-negative integers below 2\*\*63"),
    (["d.bin", 2**63 - 2, 4], r"non-negative integers below 2\*\*63"),  # the end passes 2**63
    (["d.bin", 1.5, 4], r"non-negative integers below 2\*\*63"),
    (["d\x00.bin", 0, 4], "NUL"),
])
def test_json_offsets_and_urls_are_checked_at_load(tmp_path, value, fragment):
    with pytest.raises(RefmountError, match=fragment):
        open_source(_write(tmp_path, {"k": value}))


def test_a_negative_parquet_offset_is_eio_never_other_bytes(tmp_path, http_origin, mount):
    """The record that holds it is refused (EIO for its chunks), never served from [size-100)."""
    (http_origin.dir / "d.bin").write_bytes(bytes(range(200)))
    root = tmp_path / "refs.parq"
    (root / "v").mkdir(parents=True)
    meta = {"shape": [2], "chunks": [1], "dtype": "|u1", "compressor": None, "filters": None, "fill_value": 0,
            "order": "C", "zarr_format": 2}
    (root / ".zmetadata").write_text(json.dumps({"metadata": {".zgroup": {"zarr_format": 2}, "v/.zarray": meta},
                                                 "record_size": 1}))
    for n, offset in ((0, 10), (1, -100)):
        pq.write_table(pa.table({"path": [f"{http_origin.url}/d.bin"], "offset": [offset], "size": [50],
                                 "raw": pa.array([None], pa.binary())}), root / "v" / f"refs.{n}.parq")
    with mount(str(root)) as mnt:
        assert open(f"{mnt}/v/0", "rb").read() == bytes(range(10, 60))
        with pytest.raises(OSError) as info:
            open(f"{mnt}/v/1", "rb").read()
        assert info.value.errno == errno.EIO
    assert http_origin.counts["bytes"] == 50


def test_a_huge_parquet_grid_lists_at_once(tmp_path):
    """A .zarray of 10**12 x 10**12 x 10**6 chunks with one record file: listing reads that one
    record (from a directory listing), it does not probe 10**24 / record_size names."""
    root = tmp_path / "refs.parq"
    (root / "v").mkdir(parents=True)
    meta = {"shape": [10**12, 10**12, 10**6], "chunks": [1, 1, 1], "dtype": "|u1", "compressor": None,
            "filters": None, "fill_value": 0, "order": "C", "zarr_format": 2}
    (root / ".zmetadata").write_text(json.dumps({"metadata": {".zgroup": {"zarr_format": 2}, "v/.zarray": meta},
                                                 "record_size": 10}))
    pq.write_table(pa.table({"path": pa.array([None] * 10, pa.string()), "offset": [0] * 10, "size": [0] * 10,
                             "raw": pa.array([b"x"] + [None] * 9, pa.binary())}), root / "v" / "refs.0.parq")
    done = []
    thread = threading.Thread(target=lambda: done.append(list(open_source(str(root)).listdir("v"))), daemon=True)
    thread.start()
    thread.join(30)
    assert done and sorted(done[0]) == [(".zarray", False), ("0.0.0", False)]


def test_a_truncated_zstd_reference_file_says_truncated(tmp_path):
    data = zstandard.compress(json.dumps({"version": 1, "refs": {"k": "v" * 1000}}).encode())
    path = tmp_path / "refs.json.zst"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RefmountError, match=r"refs.json.zst: truncated \(zstd stream ends early\)"):
        open_source(str(path))


def test_ipv6_literal_and_file_localhost_origins(tmp_path, mount):
    from refmount.rangeserver import RangeServer

    (tmp_path / "d.bin").write_bytes(b"0123456789")
    with RangeServer(str(tmp_path), host="::1") as server:
        assert server.url.startswith("http://[::1]:")
        refs = _write(tmp_path, {"a": [f"file://localhost{tmp_path}/d.bin", 2, 3], "b": [f"{server.url}/d.bin", 4, 4]})
        tree = open_source(refs)
        assert tree.node("a").url == f"{tmp_path}/d.bin" and tree.node("b").url == f"{server.url}/d.bin"
        with mount(refs, allow_origin=[str(tmp_path), server.url]) as root:  # allowed by name, port and all
            assert open(f"{root}/a", "rb").read() == b"234"
            assert open(f"{root}/b", "rb").read() == b"4567"


def test_a_refused_origin_lists_but_never_reads(tmp_path, mountpoint):
    (tmp_path / "allowed").mkdir()
    (tmp_path / "secret.bin").write_bytes(b"secret")
    refs = _write(tmp_path, {"k": [str(tmp_path / "secret.bin"), 0, 6]})
    result = run_cli("--allow-origin", str(tmp_path / "allowed"), refs, mountpoint)
    assert result.returncode == 1 and "not under any allowed origin" in result.stderr
    assert not os.path.ismount(mountpoint)

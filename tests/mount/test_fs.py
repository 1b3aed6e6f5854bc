"""FUSE-level behaviour: paged listings with attributes (readdirplus), stat through listings."""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest


def test_large_directory_lists_completely_with_exact_attributes(tmp_path, http_origin, mount):
    (http_origin.dir / "w.bin").write_bytes(b"x" * 1234)
    refs = {f"d/{i}": ["data.bin", i, (i % 97) + 1] for i in range(20_000)}
    refs.update({f"d/sub{i}/k": "v" for i in range(30)})
    refs["d/whole"] = [f"{http_origin.url}/w.bin"]  # size unknown until asked: listed without attributes
    (tmp_path / "refs.json").write_text(json.dumps({"version": 1, "refs": refs}))
    with mount(str(tmp_path / "refs.json"), allow_missing=True) as root:  # data.bin: never read
        with os.scandir(os.path.join(root, "d")) as entries:
            seen = {e.name: (e.is_dir(), e.stat().st_size) for e in entries}
        assert len(seen) == 20_000 + 30 + 1
        for i in range(20_000):
            assert seen[str(i)] == (False, (i % 97) + 1)
        assert all(seen[f"sub{i}"][0] for i in range(30))
        assert seen["whole"] == (False, 1234)
        assert os.stat(os.path.join(root, "d")).st_nlink == 2 + 30
        listed = subprocess.run(["ls", "-l", os.path.join(root, "d")], capture_output=True, text=True).stdout
        assert len(listed.splitlines()) == 1 + 20_000 + 30 + 1  # "total" line + entries
        assert sorted(os.listdir(os.path.join(root, "d"))) == sorted(seen)  # a second listing


def test_listing_a_file_is_enotdir(tmp_path, mount):
    (tmp_path / "refs.json").write_text(json.dumps({"f": "x"}))
    with mount(str(tmp_path / "refs.json")) as root:
        with pytest.raises(NotADirectoryError):
            os.listdir(os.path.join(root, "f"))
        with pytest.raises(OSError) as info:
            os.listdir(os.path.join(root, "nope"))
        assert info.value.errno == errno.ENOENT

"""Config files: mounting from one, command-line overrides, ``refmount check``."""

from __future__ import annotations

import json
import os

from refmount.mount.mountpoint import is_mounted
from tests.conftest import run_cli


def _dataset(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(bytes(range(256)) * 64)
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"version": 1, "refs": {".zgroup": '{"zarr_format": 2}', "x/0": [str(data), 256, 1024]}}))
    return data, refs


def test_config_mounts_with_relative_paths_and_flags_override_it(tmp_path):
    data, _ = _dataset(tmp_path)
    conf = tmp_path / "etc"
    conf.mkdir()
    (tmp_path / "mnt").mkdir()
    (conf / "era5.toml").write_text(
        f"""
mountpoint = "../mnt"
cache-size = "64MiB"
log-file = "refmount.log"
allow-origin = ["{tmp_path}"]

[sources.era5]
url = "../refs.json"
"""
    )
    mnt = str(tmp_path / "mnt")
    result = run_cli("--config", conf / "era5.toml", "--cache-size", "96MiB", cwd=str(conf))
    assert result.returncode == 0, result.stderr
    try:
        with open(os.path.join(mnt, "x", "0"), "rb") as f:
            assert f.read() == data.read_bytes()[256:1280]
        stats = run_cli("stats", "--json", mnt)
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["memory_cache_limit"] == 96 << 20  # the flag won
        assert "mounted" in (conf / "refmount.log").read_text()  # relative to the config file
    finally:
        run_cli("umount", mnt)
    assert not is_mounted(mnt)


def test_check_lists_every_problem_and_mounts_nothing(tmp_path):
    _, refs = _dataset(tmp_path)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"version": 1, "refs": {"shadow": ["file:///etc/shadow"]}}))
    conf = tmp_path / "bad.toml"
    conf.write_text(
        f"""
mountpoint = "{tmp_path / 'absent'}"
cache-size = "lots"
retries = 0
colour = "blue"
allow-other = true

[sources.good]
url = "{refs}"
storage-options = {{ s3 = {{ anon = true }} }}

[sources.missing]
url = "{tmp_path / 'nope.json'}"

[sources.secret]
url = "{secret}"
storage-options = {{ s3 = {{ anon = false }} }}
"""
    )
    result = run_cli("check", "--config", conf)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("refmount: ") for line in lines) and "Traceback" not in result.stderr
    for fragment in (
        "cache-size: invalid size 'lots'",
        "retries: expected an integer >= 1",
        "colour: unknown key",
        "storage-options.s3.anon: conflicts",
        "absent: not a directory",
        "source missing:",
        "source secret: origin /etc/shadow: local files are refused",
    ):
        assert any(fragment in line for line in lines), (fragment, lines)
    # the same config refuses to mount, with one line
    mounted = run_cli("--config", conf)
    assert mounted.returncode == 1 and len(mounted.stderr.strip().splitlines()) == 1


def test_check_accepts_a_good_config(tmp_path):
    _, refs = _dataset(tmp_path)
    (tmp_path / "mnt").mkdir()
    conf = tmp_path / "good.toml"
    conf.write_text(f'mountpoint = "mnt"\nsources = ["{refs}"]\nallow-origin = ["{tmp_path}/"]\n')
    result = run_cli("check", "--config", conf)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok: 1 source(s), mountpoint {tmp_path / 'mnt'}"


def test_unreadable_config_is_one_line(tmp_path):
    conf = tmp_path / "broken.toml"
    conf.write_text("mountpoint = \n")
    for args in (["--config", conf], ["check", "--config", conf], ["--config", tmp_path / "none.toml"]):
        result = run_cli(*args)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1 and str(args[-1]) in result.stderr, result.stderr


def test_cache_dir_auto_is_kept_as_a_word(tmp_path):
    from refmount.cli.config import load

    conf = tmp_path / "c.toml"
    conf.write_text('cache-dir = "auto"\nlog-file = "log"\n')
    values, problems = load(str(conf))
    assert not problems and values["cache_dir"] == "auto" and values["log_file"] == str(tmp_path / "log")

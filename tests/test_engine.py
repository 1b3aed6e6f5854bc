"""The engine: refmount as a library, with the mount on top -- and the options table."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import weakref
from importlib.metadata import requires

import pytest

import refmount
from refmount.engine import Engine, options_for
from refmount.errors import FetchError, RefmountError
from refmount.mount.operations import RefFS
from refmount.mount.reload import Reloader
from refmount.options import OPTIONS, RELOADABLE, MountOptions
from tests.conftest import CONFORMANCE
from tests.test_conformance import _expected


@pytest.mark.parametrize("fixture", ["chunked3d.h5.v1.json", "synthetic.h5.parq", "edge.v0.json"])
def test_engine_reads_every_key_as_expected(fixture):
    import hashlib

    with refmount.open(str(CONFORMANCE / fixture)) as engine:
        for key, want in _expected(fixture).items():
            if want["status"] == "missing":
                with pytest.raises(FileNotFoundError):
                    engine.read(key)
            elif want["status"] == "error":
                assert engine.info(key)["size"] == want["size"]
                with pytest.raises(FetchError):
                    engine.read(key)
            elif "json" in want:
                assert json.loads(engine.read(key)) == want["json"], key
            else:
                data = engine.read(key)
                assert hashlib.sha256(data).hexdigest() == want["sha256"] and engine.info(key)["size"] == len(data), key
                if len(data) > 4:
                    assert engine.read(key, 2, 4) == data[2:4]
        assert engine.stats()["origin_requests"] > 0 or fixture == "edge.v0.json"


def test_engine_errors_and_listing(tmp_path):
    with pytest.raises(RefmountError, match="no such reference file"):
        refmount.open(str(tmp_path / "nope.json"))
    with pytest.raises(RefmountError, match="cache_size: invalid size"):
        refmount.open(str(CONFORMANCE / "air.nc.v1.json"), cache_size="lots")
    with pytest.raises(RefmountError, match="unknown option 'colour'"):
        refmount.open(str(CONFORMANCE / "air.nc.v1.json"), colour="blue")
    with refmount.open(str(CONFORMANCE / "air.nc.v1.json"), view="decoded") as engine:
        names = dict(engine.listdir(""))
        assert names["air"] is True and names[".zmetadata"] is False
        zarray = json.loads(engine.read("air/.zarray"))
        assert zarray["compressor"] is None and zarray["dtype"] == "<i2"
        with pytest.raises(IsADirectoryError):
            engine.read("air")
        with pytest.raises(NotADirectoryError):
            engine.listdir("air/.zarray")


def test_options_round_trip_every_field():
    """Options -> daemon hand-off -> options keeps every field (the views were once dropped)."""
    values = {
        "sources": [("a", "/x/a.json"), ("b", "s3://bucket/b.json")], "mountpoint": "/mnt/x", "cache_size": 123 << 20,
        "cache_dir": "/var/cache/x", "disk_cache_size": 7 << 30, "storage_options": {"s3": {"anon": True, "n": 2}},
        "allow_origin": ["/data", "s3://bucket/"], "authorize_virtual": ["s3://v/"], "relocate": ["s3://old/=/new/"],
        "all_refs": True, "refresh": 2.5, "allow_missing": True, "allow_other": True, "allow_non_empty": True, "timeout": 4.5, "retries": 7, "file_timeout": 12.0, "concat_dim": "time",
        "parallel": 3, "prefetch": False, "xattrs": False, "view": "v2", "views": {"b": "decoded"},
        "failed_ttl": 5.0, "shared_cache": True, "metrics_addr": "127.0.0.1:9750", "max_gap": 1 << 10, "max_request": 1 << 21, "read_ahead": 256 << 10, "attr_timeout": 9.0, "log_file": "/tmp/x.log", "log_level": "DEBUG",
    }
    assert set(values) == set(OPTIONS), "a new option needs a value here"
    opts = MountOptions(**values)
    for field in dataclasses.fields(MountOptions):
        assert getattr(opts, field.name) != field.default, field.name  # every value differs from its default
    assert MountOptions.from_json(opts.to_json()) == opts
    assert RELOADABLE >= {"sources", "views", "view", "allow_origin"} and "cache_size" not in RELOADABLE


def test_command_line_round_trip_through_the_daemon_arguments(tmp_path):
    """Every flag given -> options; the background daemon's arguments -> the same options."""
    from refmount.cli.commands import _mount_parser, _options, child_args

    argv = ["--cache-size", "100MiB", "--cache-dir", str(tmp_path / "c"), "--disk-cache-size", "1GiB",
            "-o", "s3.anon=true", "--allow-origin", "/data", "--authorize-virtual", "s3://v/",
            "--relocate", "s3://old/=new", "--all-refs", "--refresh", "3", "--allow-missing", "--allow-other", "--allow-non-empty",
            "--timeout", "5", "--retries", "2", "--file-timeout", "9", "--concat-dim", "t", "--failed-ttl", "0", "--shared-cache", "--metrics-addr", "9750", "--parallel", "4", "--no-prefetch", "--no-xattrs", "--view", "v2",
            "--max-gap", "1KiB", "--max-request", "2MiB", "--read-ahead", "256KiB", "--attr-timeout", "60", "--log-file", "x.log",
            "--log-level", "warning", "a.json", str(tmp_path / "mnt")]
    given = {a.lstrip("-").removeprefix("no-").replace("-", "_") for a in argv if a.startswith("--")} | {"storage_options"}
    assert given >= {name for name, f in OPTIONS.items() if f.metadata["cli"]}, "a new option needs a flag here"
    parser = _mount_parser()
    args = parser.parse_intermixed_args(argv)
    first = _options(args)
    again = _options(parser.parse_intermixed_args(child_args(args)))
    assert again == first
    assert first.cache_size == 100 << 20 and first.prefetch is False and first.log_level == "WARNING"
    assert first.relocate == [f"s3://old/=file://{os.getcwd()}/new"] and first.storage_options == {"s3": {"anon": True}}


def test_every_option_has_a_flag_and_a_config_key():
    from refmount.cli import config
    from refmount.cli.commands import _mount_parser

    flags = {a.dest for a in _mount_parser()._actions}
    for name, field in OPTIONS.items():
        if field.metadata["cli"]:
            assert name in flags, name
        if name not in ("sources", "views"):
            assert name.replace("_", "-") in config.KEYS, name


def test_views_reach_the_daemon_from_the_python_api(mount, tmp_path):
    source = str(CONFORMANCE / "air.nc.v1.json")
    with mount({"raw": source, "dec": source}, views={"dec": "decoded"}) as root:
        assert json.load(open(f"{root}/dec/air/.zarray"))["compressor"] is None
        assert json.load(open(f"{root}/raw/air/.zarray"))["dtype"] == "<i2"
        assert os.path.getsize(f"{root}/dec/air/0.0.0") == 124 * 11 * 21 * 2  # decoded


def test_reloads_keep_no_old_tree_alive(tmp_path):
    """Each reload builds a new tree; neither the prefetcher nor anything else keeps the old
    ones (a --refresh on a busy branch would otherwise grow without bound)."""
    opts = options_for(str(CONFORMANCE / "chunked3d.h5.v1.json"), mountpoint=str(tmp_path))
    with Engine(opts) as engine:
        fs = RefFS(engine.tree, engine.reader, lambda: None, engine.prefetcher, sources=list(opts.sources),
                   stats=engine.stats, xattrs=True)
        reloader = Reloader(opts, fs, engine, lambda: opts, lambda: "status")
        old = []
        for _ in range(5):
            old.append(weakref.ref(engine.tree))
            fh = fs.open("temp/0.0.0", os.O_RDONLY)
            fs.read("temp/0.0.0", 4096, 0, fh)  # the prefetcher learns this tree
            fs.release("temp/0.0.0", fh)
            assert reloader.reload(fresh_options=False)
        gc.collect()
        assert [ref() for ref in old] == [None] * 5
        assert fs.tree is engine.tree


def test_numcodecs_is_a_runtime_dependency():
    assert any(r.startswith("numcodecs") and "extra" not in r for r in requires("refmount"))


def test_layers_are_kept():
    """import-linter's contracts in pyproject.toml: one-way layers, FUSE only in the mount."""
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    result = subprocess.run([lint], capture_output=True, text=True, timeout=120,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout

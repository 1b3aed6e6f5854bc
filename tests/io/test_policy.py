"""Origin policy: what a reference set may make a shared (root / allow_other) daemon read."""

from __future__ import annotations

import json
import os

import pytest

from refmount.errors import FetchError
from refmount.io.origins import Origins
from refmount.mount.mountpoint import is_mounted
from refmount.io.policy import OriginPolicy
from tests.conftest import run_cli


@pytest.mark.parametrize(
    "url, refused",
    [
        ("/etc/shadow", "local files are refused"),
        ("file:///etc/shadow", "local files are refused"),
        ("http://127.0.0.1:8080/x", "loopback, link-local or private"),
        ("http://localhost/x", "loopback, link-local or private"),
        ("http://169.254.169.254/latest/meta-data/", "loopback, link-local or private"),
        ("https://10.1.2.3/x", "loopback, link-local or private"),
        ("http://[::1]/x", "loopback, link-local or private"),
        ("ssh://host/etc/shadow", "protocol 'ssh' is refused"),
        ("memory://x", "protocol 'memory' is refused"),
        ("s3://bucket/key", None),
        ("https://93.184.216.34/data.nc", None),
    ],
)
def test_shared_daemon_refuses_local_private_and_odd_origins(url, refused):
    problem = OriginPolicy(shared=True).problem(url)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem


def test_a_private_daemon_without_prefixes_reads_anything():
    policy = OriginPolicy(shared=False)
    assert not policy.active and policy.problem("/etc/hostname") is None


def test_allowed_prefixes_match_whole_components_and_real_paths(tmp_path):
    allowed = tmp_path / "data"
    allowed.mkdir()
    (allowed / "a.nc").write_bytes(b"x")
    (tmp_path / "database").mkdir()
    (allowed / "escape").symlink_to("/etc")
    policy = OriginPolicy([str(allowed), "https://host/archive", "s3://bucket/era5/"], shared=True)
    assert policy.problem(str(allowed / "a.nc")) is None
    assert policy.problem(f"file://{allowed}/a.nc") is None
    assert policy.problem(str(tmp_path / "database" / "a.nc")) is not None  # not a prefix of the name
    assert policy.problem(str(allowed / "escape" / "shadow")) is not None  # a symlink out is resolved
    assert policy.problem(str(allowed / ".." / "database" / "x")) is not None
    assert policy.problem("https://host/archive/2020/x.nc") is None
    assert policy.problem("https://host/archive2/x.nc") is not None
    assert policy.problem("https://host:8443/archive/x.nc") is not None
    assert policy.problem("s3://bucket/era5/x.nc") is None
    assert policy.problem("s3://bucket/era5-private/x.nc") is not None


def test_refused_origin_is_an_error_at_read_time(tmp_path):
    data = tmp_path / "x.bin"
    data.write_bytes(b"secret")
    origins = Origins(policy=OriginPolicy([str(tmp_path / "elsewhere")], shared=True))
    with pytest.raises(FetchError, match="not under any allowed origin"):
        origins.read(str(data), 0, 6)
    assert origins.stats.snapshot()["origin_refused"] == 1


def _refs(tmp_path, refs) -> str:
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    return str(path)


def test_root_with_allow_other_refuses_a_reference_to_etc(tmp_path, mountpoint):
    assert os.geteuid() == 0, "the suite runs as root (as CI does)"
    refs = _refs(tmp_path, {".zgroup": '{"zarr_format": 2}', "pw": ["file:///etc/passwd", 0, 64]})
    service = dict(os.environ, INVOCATION_ID="0123456789abcdef")  # as systemd starts a system unit
    for extra, env in ((["--allow-other"], None), ([], service)):
        result = run_cli(*extra, refs, mountpoint, env=env)
        assert result.returncode == 1
        assert result.stderr.strip() == (
            "refmount: origin /etc/passwd: local files are refused when other users can read the mount "
            "(--allow-other or a system service); allow a directory with --allow-origin"
        )
        assert not is_mounted(mountpoint)
    # an explicit prefix that does not cover it changes nothing; one that does, mounts
    result = run_cli("--allow-other", "--allow-origin", str(tmp_path), refs, mountpoint)
    assert result.returncode == 1 and "not under any allowed origin" in result.stderr
    result = run_cli("--allow-other", "--allow-origin", "/etc/", refs, mountpoint)
    assert result.returncode == 0, result.stderr
    try:
        st = os.stat(os.path.join(mountpoint, "pw"))
        assert st.st_mode & 0o777 == 0o444 and os.stat(mountpoint).st_mode & 0o777 == 0o555
    finally:
        run_cli("umount", mountpoint)


def test_root_alone_reads_local_originals_without_allowing_them(tmp_path, mountpoint):
    """Without --allow-other only root can read root's mount, and root reads the originals
    anyway: nothing to protect, so the first try of a newcomer in a container just works."""
    data = tmp_path / "x.bin"
    data.write_bytes(b"0123456789")
    refs = _refs(tmp_path, {".zgroup": '{"zarr_format": 2}', "k": [str(data), 2, 4]})
    env = {k: v for k, v in os.environ.items() if k != "INVOCATION_ID"}
    _mounts_and_reads(mountpoint, refs, env=env)


def _mounts_and_reads(mountpoint, *args, env=None):
    result = run_cli(*args, mountpoint, env=env)
    assert result.returncode == 0, result.stderr
    try:
        with open(os.path.join(mountpoint, "k"), "rb") as f:
            assert f.read() == b"2345"
    finally:
        run_cli("umount", mountpoint)


def test_loopback_http_needs_allowing_when_shared(tmp_path, mountpoint, http_origin):
    (http_origin.dir / "f.bin").write_bytes(b"0123456789")
    refs = _refs(tmp_path, {"k": [f"{http_origin.url}/f.bin", 2, 4]})
    result = run_cli("--allow-other", refs, mountpoint)
    assert result.returncode == 1 and "loopback, link-local or private address (127.0.0.1)" in result.stderr
    assert http_origin.counts["GET"] == 0  # refused before any request
    _mounts_and_reads(mountpoint, "--allow-other", "--allow-origin", http_origin.url, refs)

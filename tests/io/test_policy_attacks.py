"""The policy attack set: references that try to make a daemon read what it must not, as root
with and without --allow-other. The secret's bytes are never served."""

from __future__ import annotations

import errno
import json
import os

import pytest

from refmount.mount.mountpoint import is_mounted
from refmount.rangeserver import RangeServer
from tests.conftest import run_cli

SECRET = b"the secret " * 100
PUBLIC = b"public data" * 100


def _refs(tmp_path, refs: dict) -> str:
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"version": 1, "refs": {".zgroup": '{"zarr_format":2}', **refs}}))
    return str(path)


def _read(path: str) -> bytes | int:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        return exc.errno


@pytest.fixture
def files(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "realdir").mkdir(parents=True)
    (allowed / "real.bin").write_bytes(PUBLIC)
    (allowed / "realdir" / "f.bin").write_bytes(PUBLIC)
    (tmp_path / "secretdir").mkdir()
    (tmp_path / "secret.bin").write_bytes(SECRET)
    (tmp_path / "secretdir" / "f.bin").write_bytes(SECRET)
    os.symlink(allowed / "real.bin", allowed / "link.bin")
    os.symlink(allowed / "realdir", allowed / "sub")
    return tmp_path


@pytest.mark.parametrize("allow_other", [False, True])
def test_symlinks_swapped_after_the_mount_cannot_lead_outside(files, mount, allow_other):
    allowed = files / "allowed"
    refs = _refs(files, {"file": [str(allowed / "link.bin"), 0, len(PUBLIC)],
                         "dir": [str(allowed / "sub" / "f.bin"), 0, len(PUBLIC)]})
    with mount(refs, allow_origin=[str(allowed)], allow_other=allow_other) as root:
        os.replace(_swap(allowed / "link.bin", files / "secret.bin"), allowed / "link.bin")
        os.replace(_swap(allowed / "sub", files / "secretdir"), allowed / "sub")
        assert _read(f"{root}/file") == errno.EIO
        assert _read(f"{root}/dir") == errno.EIO


def _swap(link, target):
    tmp = link.with_name(link.name + ".new")
    os.symlink(target, tmp)
    return tmp


@pytest.mark.parametrize("allow_other", [False, True])
@pytest.mark.parametrize("form", ["{base}/public/../secret.bin", "{base}/public/%2e%2e/secret.bin",
                                  "{base}/public/%2E%2E%2Fsecret.bin", "http://data.example.org@{hostport}/secret.bin",
                                  "{base}/publicity/../secret.bin"])
def test_http_urls_that_leave_an_allowed_prefix_are_refused(tmp_path, mountpoint, form, allow_other):
    www = tmp_path / "www"
    (www / "public").mkdir(parents=True)
    (www / "public" / "ok.bin").write_bytes(PUBLIC)
    (www / "secret.bin").write_bytes(SECRET)
    with RangeServer(str(www)) as server:
        url = form.format(base=server.url, hostport=server.url.removeprefix("http://"))
        refs = _refs(tmp_path, {"k": [url, 0, len(SECRET)]})
        extra = ["--allow-other"] if allow_other else []
        result = run_cli(*extra, "--allow-origin", f"{server.url}/public/", "--allow-origin", "http://data.example.org",
                         refs, mountpoint)
        assert result.returncode == 1, result.stdout
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert ("not under any allowed origin" in result.stderr or "user information" in result.stderr), result.stderr
        assert not is_mounted(mountpoint)
        assert server.counts["GET"] == 0 and server.counts["bytes"] == 0


def test_a_shared_daemon_refuses_local_and_private_origins_without_an_allow_list(files, mountpoint):
    for url in (str(files / "secret.bin"), "http://127.0.0.1:9/secret", "http://[::1]:9/secret",
                "file://localhost" + str(files / "secret.bin"), "http://169.254.169.254/latest/meta-data"):
        result = run_cli("--allow-other", _refs(files, {"k": [url, 0, 10]}), mountpoint)
        assert result.returncode == 1 and "refused" in result.stderr, (url, result.stderr)
        assert not is_mounted(mountpoint)


def test_a_mount_never_reads_through_itself(tmp_path):
    """Mounting over the directory that holds the reference file or the originals would hide
    them: refused at mount, one line. An original that leads into the mount later (a symlink
    re-pointed after mounting) is EIO with a log line -- the read used to wait on itself, one
    FUSE thread after another, and never returned."""
    import threading

    data = tmp_path / "data"
    data.mkdir()
    (data / "orig.bin").write_bytes(PUBLIC)
    inner = tmp_path / "inner"
    inner.mkdir()
    refs = _refs(tmp_path, {"a": [str(data / "orig.bin"), 0, 5], "b": [str(tmp_path / "link.bin"), 0, 5]})
    os.symlink(data / "orig.bin", tmp_path / "link.bin")
    for where, what in ((str(data), "an original is inside it"), (str(tmp_path), "the reference set is inside it")):
        result = run_cli(refs, where)  # (not empty, to begin with)
        assert result.returncode == 1 and not is_mounted(where) and "not empty" in result.stderr
        result = run_cli(refs, where, "--allow-non-empty")
        assert result.returncode == 1 and not is_mounted(where)
        assert result.stderr.strip() == (f"refmount: mountpoint {where}: {what} ("
                                          f"{data / 'orig.bin' if 'original' in what else refs}); the mount would hide it -- mount elsewhere")
    log = tmp_path / "log"
    assert run_cli(refs, inner, "--log-file", log).returncode == 0
    try:
        os.replace(_swap(tmp_path / "link.bin", inner / "a"), tmp_path / "link.bin")  # into the mount
        got: list = []
        reader = threading.Thread(target=lambda: got.append(_read(str(inner / "b"))), daemon=True)
        reader.start()
        reader.join(30)
        assert got == [errno.EIO], "a read through the mount itself did not return"
        assert _read(str(inner / "a")) == PUBLIC[:5]
    finally:
        run_cli("umount", inner)
    assert "inside this mount itself" in log.read_text()


def test_an_allow_prefix_is_never_empty_and_relative_to_where_it_was_given(files, mountpoint):
    """`--allow-origin "$DATA"` with DATA unset passed an empty prefix, which the daemon (working
    in /) took for / -- every file allowed. It is refused; a relative prefix means the directory
    it names where the command runs, from the command line, a config file (its directory) and
    the Python API alike."""
    import refmount

    refs = _refs(files, {"public": [str(files / "allowed" / "real.bin"), 0, 11], "secret": [str(files / "secret.bin"), 0, 10]})
    for option in ("--allow-origin", "--authorize-virtual"):
        result = run_cli(option, "", refs, mountpoint)
        assert result.returncode == 1 and result.stderr.strip() == f"refmount: {option}: an empty value (an unset variable?)"
        assert not is_mounted(mountpoint)
    result = run_cli("--allow-origin", "allowed", refs, mountpoint, cwd=files)
    assert result.returncode == 1 and "secret.bin: not under any allowed origin" in result.stderr, result.stderr
    only = files / "public.json"  # (``_refs`` writes refs.json: another name)
    only.write_text(json.dumps({"version": 1, "refs": {".zgroup": '{"zarr_format":2}',
                                                       "public": [str(files / "allowed" / "real.bin"), 0, 11]}}))
    only = str(only)
    result = run_cli("--allow-origin", "allowed", only, mountpoint, "--log-file", files / "log", cwd=files)
    try:
        assert result.returncode == 0, result.stderr
        assert _read(f"{mountpoint}/public") == PUBLIC[:11]
    finally:
        run_cli("umount", mountpoint)
    conf = files / "conf" / "refmount.toml"
    conf.parent.mkdir()
    conf.write_text(f'mountpoint = "{mountpoint}"\nsources = ["{refs}"]\nallow-origin = ["../allowed"]\n')
    result = run_cli("check", "--config", conf)
    assert result.returncode == 1 and "secret.bin: not under any allowed origin" in result.stderr, result.stderr
    assert "public" not in result.stderr
    here = os.getcwd()
    os.chdir(files)
    try:
        with pytest.raises(refmount.RefmountError, match="secret.bin: not under any allowed origin"):
            refmount.open(refs, allow_origin=["allowed"])
        with refmount.open(only, allow_origin=["allowed"]) as engine:
            assert engine.read("public") == PUBLIC[:11]
    finally:
        os.chdir(here)


def test_originals_that_are_not_files_are_refused_never_waited_on(tmp_path, mountpoint):
    """A reference set is untrusted: one pointing at a FIFO hung the mount for ever (the open
    waits for a writer), and `scan` of a FIFO named x.nc likewise. A FIFO or a character device
    is not an original: one line at mount; with --allow-missing, EIO on read (a directory, which
    an Icechunk container's URL may be, is checked at read: EIO too)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    refs = _refs(tmp_path, {"fifo": [str(fifo), 0, 10], "dir": [str(tmp_path), 0, 10], "dev": ["/dev/zero", 0, 10]})
    result = run_cli(refs, mountpoint, timeout=60)  # (a hang raises TimeoutExpired)
    assert result.returncode == 1 and not is_mounted(mountpoint)
    assert "2 local originals missing or unreadable" in result.stderr and "not a regular file" in result.stderr
    result = run_cli("--allow-missing", refs, mountpoint, "--log-file", tmp_path / "log", timeout=60)
    try:
        assert result.returncode == 0, result.stderr
        for key in ("fifo", "dir", "dev"):
            assert _read(f"{mountpoint}/{key}") == errno.EIO, key
    finally:
        run_cli("umount", mountpoint)
    log = (tmp_path / "log").read_text()
    assert "not a regular file (a FIFO)" in log and "not a regular file (a directory)" in log
    assert "not a regular file (a character device)" in log
    os.mkfifo(tmp_path / "x.nc")
    result = run_cli("scan", tmp_path / "x.nc", "-o", tmp_path / "out.json", timeout=60)
    assert result.returncode == 1 and result.stderr.strip() == f"refmount: {tmp_path / 'x.nc'}: not a regular file (a FIFO)"

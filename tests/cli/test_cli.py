"""The command line as a user runs it: mounts, errors, umount, inspect, demo."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from refmount.mount.mountpoint import is_mounted, lazy_unmount
from refmount.options import default_log_file
from tests.conftest import run_cli


@pytest.fixture
def refs(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"0123456789abcdefghijklmnopqrstuvwxyz")
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"version": 1, "refs": {
        ".zgroup": '{"zarr_format":2}', "a/b": ["data.bin", 3, 5], "c": "base64:AAEC", "t": "héllo"}}))
    return path


def _mounted(args, mountpoint):
    result = run_cli(*args, mountpoint)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # one line: where it is mounted and where its log is (by default one file per mountpoint,
    # under the suite's own state directory, never the user's)
    if "--log-file" in args:
        log = str(args[args.index("--log-file") + 1])
    else:
        log = default_log_file(str(mountpoint))
        assert log.startswith(os.environ["XDG_STATE_HOME"]) and log.endswith("-mnt.log")
    where = os.path.abspath(mountpoint)
    line, = result.stdout.splitlines()
    assert line.startswith("refmount: serving ") and line.endswith(
        f" at {where} (log: {log}; stop with: refmount umount {shlex.quote(where)})"), line
    assert is_mounted(mountpoint)
    assert os.path.exists(log)
    return result


def _one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("refmount: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_mount_read_and_umount(refs, mountpoint, tmp_path):
    _mounted([refs], mountpoint)  # the default log: one file per mountpoint
    try:
        root = mountpoint
        assert sorted(os.listdir(root)) == [".zgroup", ".zmetadata", "a", "c", "t"]  # .zmetadata: consolidated
        assert open(os.path.join(root, "a", "b"), "rb").read() == b"34567"
        st = os.stat(os.path.join(root, "t"))
        assert st.st_size == 6 and open(os.path.join(root, "t"), "rb").read() == "héllo".encode()
        assert st.st_mode & 0o777 == 0o444 and st.st_nlink == 1
        assert st.st_mtime_ns == os.stat(refs).st_mtime_ns
        assert os.stat(os.path.join(root, "c")).st_blocks == 1  # du sees real sizes
        assert os.stat(root).st_nlink == 3  # '.', '..' and one subdirectory
        du = subprocess.run(["du", "-s", "-B1", "--apparent-size", root], capture_output=True, text=True)
        assert int(du.stdout.split()[0]) >= 5 + 3 + 6 + 17
        with pytest.raises(OSError) as info:
            open(os.path.join(root, "c"), "wb")
        assert info.value.errno == errno.EROFS
        with pytest.raises(OSError) as info:
            os.mkdir(os.path.join(root, "new"))
        assert info.value.errno == errno.EROFS
        with pytest.raises(FileNotFoundError):
            os.stat(os.path.join(root, "a", "nope"))
    finally:
        result = run_cli("umount", mountpoint)
    assert result.returncode == 0, result.stderr
    assert not is_mounted(mountpoint)


def test_several_sources_with_names(refs, tmp_path, mountpoint):
    other = tmp_path / "other.json.gz"
    import gzip

    other.write_bytes(gzip.compress(json.dumps({"k": "v"}).encode()))
    _mounted([refs, f"named={other}", "--log-file", tmp_path / "log"], mountpoint)
    try:
        assert sorted(os.listdir(mountpoint)) == ["named", "refs"]
        assert open(os.path.join(mountpoint, "named", "k"), "rb").read() == b"v"
        assert open(os.path.join(mountpoint, "refs", "a", "b"), "rb").read() == b"34567"
    finally:
        run_cli("umount", mountpoint)


def test_duplicate_source_names_are_refused(refs, mountpoint):
    _one_line_error(run_cli(refs, refs, mountpoint), "two sources are named 'refs'")
    assert not is_mounted(mountpoint)


@pytest.mark.parametrize("name", ["..", "."])
def test_a_source_name_that_is_no_directory_name_is_refused(refs, mountpoint, name):
    _one_line_error(run_cli(f"{name}={refs}", f"b={refs}", mountpoint), f"source name {name!r}: a directory name")
    assert not is_mounted(mountpoint)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{oops", "malformed JSON"),
        ('{"version": 3}', "unsupported reference set version 3"),
        ('{"k": ["u", 1]}', "key 'k': unsupported value"),
    ],
)
def test_bad_reference_file(tmp_path, mountpoint, content, fragment):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    _one_line_error(run_cli(bad, mountpoint), str(bad), fragment)
    assert not is_mounted(mountpoint)


def test_missing_reference_file(tmp_path, mountpoint):
    _one_line_error(run_cli(tmp_path / "nope.json", mountpoint), "nope.json: no such reference file")


def test_missing_and_non_directory_mountpoints(refs, tmp_path):
    _one_line_error(run_cli(refs, tmp_path / "absent"), "absent: does not exist")
    _one_line_error(run_cli(refs, refs), "not a directory")


def test_a_mountpoint_with_files_in_it_is_refused_unless_allowed(refs, mountpoint, tmp_path):
    """A mount hides what the directory holds: a mistyped mountpoint (a home directory, a data
    directory) is refused in one line; ``--allow-non-empty`` mounts anyway, and the files are
    there again after the unmount."""
    (Path(mountpoint) / "mine.txt").write_text("keep me")
    _one_line_error(run_cli(refs, mountpoint), "not empty", "--allow-non-empty")
    assert not is_mounted(mountpoint)
    check = run_cli("check", refs, mountpoint)
    assert check.returncode != 0 and "not empty" in check.stdout + check.stderr
    _mounted([refs, "--allow-non-empty", "--log-file", tmp_path / "log"], mountpoint)
    try:
        assert "mine.txt" not in os.listdir(mountpoint) and open(os.path.join(mountpoint, "a", "b"), "rb").read() == b"34567"
    finally:
        run_cli("umount", mountpoint)
    assert (Path(mountpoint) / "mine.txt").read_text() == "keep me"


def test_mountpoint_already_mounted(refs, mountpoint, tmp_path):
    _mounted([refs, "--log-file", tmp_path / "log"], mountpoint)
    try:
        _one_line_error(run_cli(refs, mountpoint), "already mounted")
        assert open(os.path.join(mountpoint, "a", "b"), "rb").read() == b"34567"  # first mount untouched
    finally:
        run_cli("umount", mountpoint)


def test_no_fuse_library_is_a_clear_error(refs, mountpoint):
    env = dict(os.environ, FUSE_LIBRARY_PATH="/nonexistent/libfuse3.so")
    _one_line_error(run_cli(refs, mountpoint, env=env), "FUSE is not available")
    assert not is_mounted(mountpoint)


def test_unwritable_log_file(refs, mountpoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    _one_line_error(run_cli(refs, mountpoint, "--log-file", blocker / "sub" / "log"), "log file")
    assert not is_mounted(mountpoint)


def test_usage_errors(refs):
    _one_line_error(run_cli(refs), "need at least one SOURCE and a MOUNTPOINT")
    _one_line_error(run_cli("--cache-size", "lots", refs, "/tmp"), "invalid size 'lots'")
    _one_line_error(run_cli("-o", "nodots=1", refs, "/tmp"), "invalid storage option")
    for value in ("nan", "inf"):  # nan passed every comparison: a timeout of nan seconds mounted
        _one_line_error(run_cli("--timeout", value, refs, "/tmp"), "--timeout: expected a finite number >= 0.001")
    _one_line_error(run_cli("umount", "/tmp"), "not mounted")


def test_version_bare_call_and_per_command_help():
    from refmount import __version__

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"refmount {__version__}"
    bare = run_cli()
    assert bare.returncode == 2 and bare.stderr.startswith("usage: refmount [OPTIONS] SOURCE")
    for command in ("check", "inspect", "stats", "umount", "demo"):  # every command with its summary
        assert any(line.split()[:1] == [command] and len(line.split()) > 3 for line in bare.stderr.splitlines()), command
    assert "Icechunk" in bare.stderr
    helped = run_cli("--help")
    assert helped.returncode == 0 and "--allow-missing" in helped.stdout and "commands:" in helped.stdout
    check = run_cli("check", "--help")
    assert check.returncode == 0 and check.stdout.startswith("usage: refmount check")
    assert "without mounting" in check.stdout and "--probe" in check.stdout
    for command in ("inspect", "stats", "umount"):
        out = run_cli(command, "--help")
        assert out.returncode == 0 and out.stdout.startswith(f"usage: refmount {command}"), command


def test_missing_local_originals(tmp_path, mountpoint):
    """References made on another machine: the mount refuses to start (one line naming the file
    and the count), check and inspect say the same, --allow-missing mounts with EIO for them."""
    (tmp_path / "here.bin").write_bytes(b"0123456789")
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"version": 1, "refs": {
        ".zgroup": '{"zarr_format":2}', "a": ["here.bin", 0, 4], "b": ["/gone/one.nc", 0, 4],
        "c": ["/gone/two.nc", 0, 4], "d": ["/gone/two.nc", 4, 4]}}))
    _one_line_error(run_cli(refs, mountpoint), "2 local originals missing or unreadable: /gone/",
                    "No such file or directory", "(and 1 more)", "--allow-missing")
    assert not is_mounted(mountpoint)
    check = run_cli("check", refs, mountpoint)
    assert check.returncode == 1 and "2 local original(s) missing or unreadable" in check.stderr
    assert "original /gone/one.nc: No such file or directory" in check.stderr and "ok:" not in check.stdout
    allowed = run_cli("check", "--allow-missing", refs, mountpoint)
    assert allowed.returncode == 0 and "warning: " in allowed.stderr and allowed.stdout.startswith("ok:")
    inspect = run_cli("inspect", "--json", refs)
    assert inspect.returncode == 0, inspect.stderr
    summary = json.loads(inspect.stdout)
    assert summary["origin_files"] == 3
    assert summary["unreadable_originals"] == {"/gone/one.nc": "No such file or directory",
                                               "/gone/two.nc": "No such file or directory"}
    assert "originals missing or unreadable: 2 of 3" in run_cli("inspect", refs).stdout
    result = run_cli("--allow-missing", "--log-file", tmp_path / "log", refs, mountpoint)
    assert result.returncode == 0, result.stderr
    try:
        assert open(os.path.join(mountpoint, "a"), "rb").read() == b"0123"
        with pytest.raises(OSError) as info:
            open(os.path.join(mountpoint, "b"), "rb").read()
        assert info.value.errno == errno.EIO
    finally:
        run_cli("umount", mountpoint)
    log = (tmp_path / "log").read_text()
    assert "2 local originals missing or unreadable" in log
    eio = [line for line in log.splitlines() if "EIO /b:" in line]
    assert len(eio) == 1, log  # the kernel's retry of the failed read is not logged again
    assert "/gone/one.nc" in eio[0] and "[0, 4)" in eio[0] and "No such file or directory" in eio[0]


def test_foreground_sigterm_unmounts_cleanly(refs, mountpoint):
    proc = subprocess.Popen([sys.executable, "-m", "refmount", "-f", "-v", str(refs), mountpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(mountpoint) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open(os.path.join(mountpoint, "a", "b"), "rb").read() == b"34567"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not is_mounted(mountpoint)
        err = proc.stderr.read()
        assert "mounted" in err  # foreground logs go to stderr
        # -v: one line per origin request with its range and time; no binding or libfuse noise
        assert re.search(r"DEBUG refmount.fetch: pread \S+data.bin \[3, 8\) -> 5 bytes \([0-9.]+ ms\)", err), err
        assert "Ignoring invalid max threads" not in err and "Set libFUSE" not in err and "libFUSE" not in err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_does_not_wait_for_a_stalled_origin_or_a_file_held_open(tmp_path, mountpoint, http_origin):
    """A service stop (SIGTERM) while a read waits on an origin that stopped answering (its
    timeout a minute away): the read fails with EIO at once and the daemon ends, unmounted.
    A file still held open on the mount after that does not keep the daemon."""
    (http_origin.dir / "f.bin").write_bytes(os.urandom(10_000))
    meta = {"zarr_format": 2, "shape": [10], "chunks": [1], "dtype": "|u1", "compressor": None, "filters": None,
            "fill_value": 0, "order": "C"}
    refs = {".zgroup": '{"zarr_format":2}', "a/.zarray": json.dumps(meta)}
    refs.update({f"a/{i}": [f"{http_origin.url}/f.bin", i * 1000, 1000] for i in range(10)})
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"version": 1, "refs": refs}))
    for held_open in (False, True):
        http_origin.fault = None
        proc = subprocess.Popen([sys.executable, "-m", "refmount", "-f", "--timeout", "60", "--retries", "1",
                                 "--no-prefetch", str(path), mountpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        holder = None
        try:
            deadline = time.monotonic() + 30
            while not is_mounted(mountpoint) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert is_mounted(mountpoint)
            if held_open:
                holder = open(os.path.join(mountpoint, ".zgroup"), "rb")
            http_origin.stall, http_origin.fault = 60, "stall"
            outcome: list = []

            def read():
                try:
                    with open(os.path.join(mountpoint, "a", "3"), "rb") as f:
                        outcome.append(f.read())
                except OSError as exc:
                    outcome.append(exc.errno)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            deadline = time.monotonic() + 30
            while http_origin.counts["GET"] == 0 and reader.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)  # (until the request waits at the origin)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0  # without the stop, the read would hold it for a minute
            reader.join(timeout=10)
            assert outcome == [errno.EIO]
            assert not is_mounted(mountpoint)
            err = proc.stderr.read()
            assert "refmount is stopping" in err
            assert ("files are still open" in err) == held_open
        finally:
            if holder is not None:
                holder.close()
            if proc.poll() is None:
                proc.kill()
            http_origin.fault = None


def _kill_daemon(mountpoint):
    pid = int(subprocess.run(["pgrep", "-f", f"refmount --foreground.*{mountpoint}"],
                             capture_output=True, text=True).stdout.split()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.listdir(mountpoint)
        except OSError as exc:
            assert exc.errno in (errno.ENOTCONN, errno.ECONNABORTED)
            return
        time.sleep(0.05)
    pytest.fail("mount did not become dead")


def test_killed_daemon_leaves_a_dead_mount_that_umount_and_remount_clear(refs, mountpoint, tmp_path):
    _mounted([refs, "--log-file", tmp_path / "log"], mountpoint)
    _kill_daemon(mountpoint)
    result = run_cli("umount", mountpoint)  # a dead mount is detached
    assert result.returncode == 0, result.stderr
    assert not is_mounted(mountpoint)
    _mounted([refs, "--log-file", tmp_path / "log"], mountpoint)
    _kill_daemon(mountpoint)
    _mounted([refs, "--log-file", tmp_path / "log"], mountpoint)  # clears the dead mount, mounts again
    try:
        assert open(os.path.join(mountpoint, "a", "b"), "rb").read() == b"34567"
    finally:
        run_cli("umount", mountpoint)
    assert not is_mounted(mountpoint)


def test_the_printed_stop_command_works_for_any_mountpoint_name(refs, tmp_path):
    """A mountpoint with a space, a comma and a quote: the mount works, and the command the
    mount prints to stop it, pasted into a shell, unmounts it."""
    odd = tmp_path / "my data, it's here"
    odd.mkdir()
    try:
        result = _mounted([refs, "--log-file", tmp_path / "odd.log"], str(odd))
        assert open(odd / "a" / "b", "rb").read() == b"34567"
        stop = result.stdout.strip().rsplit("stop with: ", 1)[1].removesuffix(")")
        venv_bin = os.path.dirname(sys.executable)
        done = subprocess.run(["bash", "-c", stop], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PATH": venv_bin + os.pathsep + os.environ["PATH"]})
        assert done.returncode == 0, done.stderr
        assert not is_mounted(str(odd))
    finally:
        if is_mounted(str(odd)):
            lazy_unmount(str(odd))


def test_umount_detaches_a_busy_mount_lazily(refs, mountpoint, tmp_path):
    _mounted([refs, "--log-file", tmp_path / "log"], mountpoint)
    held = open(os.path.join(mountpoint, "a", "b"), "rb")
    try:
        result = run_cli("umount", mountpoint)
        assert result.returncode == 0 and "lazy" in result.stdout
        assert not is_mounted(mountpoint)
        assert held.read() == b"34567"
    finally:
        held.close()
        if is_mounted(mountpoint):
            lazy_unmount(mountpoint)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_umount_and_mount_leave_another_filesystem_alone(refs, mountpoint):
    """`refmount umount` on a mountpoint holding another filesystem (a tmpfs here; as root it
    used to detach it lazily) refuses and leaves it mounted; mounting over it is refused too."""
    subprocess.run(["mount", "-t", "tmpfs", "none", mountpoint], check=True)
    try:
        _one_line_error(run_cli("umount", mountpoint), "not a refmount mount (tmpfs); left mounted")
        assert is_mounted(mountpoint)
        _one_line_error(run_cli(refs, mountpoint), "already mounted (tmpfs; not refmount's")
        assert is_mounted(mountpoint)
    finally:
        subprocess.run(["umount", mountpoint], check=False)


def test_two_mounts_started_at_once_at_one_place_mount_once(refs, mountpoint, tmp_path):
    """Both used to pass the mountpoint check while the other loaded, stacking two mounts; now
    one mounts and the other says why, in one line; a remount right after an unmount works."""
    from concurrent.futures import ThreadPoolExecutor

    def mount_count() -> int:
        with open("/proc/self/mountinfo") as f:
            return sum(line.split(" ")[4] == os.path.realpath(mountpoint) for line in f)

    try:
        for _ in range(3):
            with ThreadPoolExecutor(2) as pool:
                results = list(pool.map(lambda n: run_cli(refs, mountpoint, "--log-file", tmp_path / f"log{n}"), range(2)))
            assert sorted(r.returncode for r in results) == [0, 1], [r.stderr for r in results]
            failed = next(r for r in results if r.returncode)
            _one_line_error(failed)
            assert ("another refmount is being mounted there" in failed.stderr or "already mounted" in failed.stderr)
            assert mount_count() == 1
            assert run_cli("umount", mountpoint).returncode == 0 and mount_count() == 0
            assert run_cli(refs, mountpoint, "--log-file", tmp_path / "log").returncode == 0  # at once again
            assert run_cli("umount", mountpoint).returncode == 0
    finally:
        while is_mounted(mountpoint):
            lazy_unmount(mountpoint)


def test_inspect_table_and_json(conformance):
    source = conformance / "chunked3d.h5.v1.json"
    result = run_cli("inspect", "--json", source)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    temp = next(a for a in summary["arrays"] if a["path"] == "temp")
    assert temp["shape"] == [6, 10, 12] and temp["chunks"] == [2, 3, 5]
    assert temp["refs"] == {"ranged": 25, "missing": 11}
    assert temp["codecs"] == ["shuffle", "zlib"]
    assert summary["origin_files"] == 1
    text = run_cli("inspect", source)
    assert text.returncode == 0
    assert "temp" in text.stdout and "shuffle,zlib" in text.stdout and "11 missing chunks" in text.stdout


def test_inspect_bad_input(tmp_path):
    _one_line_error(run_cli("inspect", tmp_path / "nope.json"), "no such reference file")


def test_demo_runs_end_to_end():
    result = run_cli("demo", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "every value equals h5py on the originals" in result.stdout
    assert "0 HEAD" in result.stdout
    assert "unmounted" in result.stdout
    # it shows the commands it ran, no throughput figure for a tiny archive, and cleans up
    commands = [line for line in result.stdout.splitlines() if line.startswith("$ refmount ")]
    assert len(commands) >= 2 and any(c.startswith("$ refmount umount ") for c in commands)
    assert "MB/s" not in result.stdout
    workdir = result.stdout.split("demo directory: ", 1)[1].split()[0]
    assert workdir.startswith(tempfile.gettempdir()) and not os.path.exists(workdir)

"""The daemon under a service manager: sd_notify readiness, SIGHUP reload, SIGTERM stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import refmount
from refmount.mount.mountpoint import is_mounted, lazy_unmount

SIZE = 96 << 10
KEYS = [f"v/{i}" for i in range(12)]


class Notifications:
    """A ``NOTIFY_SOCKET`` as systemd provides it: path or abstract datagram socket."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(60)

    def next(self) -> dict[str, str]:
        lines = self.sock.recv(65536).decode().splitlines()
        return dict(line.split("=", 1) for line in lines)

    def wait_for(self, key: str) -> dict[str, str]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = self.next()
            if key in message:
                return message
        raise AssertionError(f"no {key} notification")


def _write_refs(path, data_file, extra: dict | None = None) -> None:
    refs = {key: [str(data_file), i * SIZE, SIZE] for i, key in enumerate(KEYS)}
    refs.update(extra or {})
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"version": 1, "refs": refs}, f)
    os.replace(tmp, path)  # as an editor or a publishing job replaces a file


@pytest.fixture
def versions(tmp_path):
    """Two originals: every chunk of version 1 is all b'1', of version 2 all b'2'."""
    files = {}
    for v in (1, 2):
        files[v] = tmp_path / f"data{v}.bin"
        files[v].write_bytes(str(v).encode() * (SIZE * len(KEYS)))
    refs = tmp_path / "refs.json"
    _write_refs(refs, files[1])
    return refs, files


def _start(refs, mountpoint, tmp_path, notify_address, *extra):
    env = dict(os.environ, NOTIFY_SOCKET=notify_address)
    return subprocess.Popen(
        [sys.executable, "-m", "refmount", "-f", "--log-file", str(tmp_path / "log"), *extra,
         str(refs), mountpoint],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc, mountpoint) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert not is_mounted(mountpoint)


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_only_once_mounted_then_status_and_stopping(tmp_path, mountpoint, versions, kind):
    address = str(tmp_path / "notify") if kind == "path" else f"@refmount-test-{os.getpid()}-{time.monotonic_ns()}"
    notes = Notifications(address)
    refs, _ = versions
    proc = _start(refs, mountpoint, tmp_path, address)
    try:
        ready = notes.wait_for("READY")
        # at the moment READY=1 arrives the mount is live and answers
        assert ready["READY"] == "1" and is_mounted(mountpoint)
        assert sorted(os.listdir(os.path.join(mountpoint, "v"))) == sorted(k[2:] for k in KEYS)
        assert "serving" in ready["STATUS"] and str(refs) in ready["STATUS"]
        assert int(ready["MAINPID"]) == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert notes.wait_for("STOPPING")["STOPPING"] == "1"
        assert proc.wait(timeout=30) == 0
    finally:
        _stop(proc, mountpoint)


def test_sighup_swaps_the_tree_while_a_reader_loops(tmp_path, mountpoint, versions):
    refs, files = versions
    notes = Notifications(str(tmp_path / "notify"))
    proc = _start(refs, mountpoint, tmp_path, notes.address)
    seen: list[int] = []
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for key in KEYS:
                try:
                    with open(os.path.join(mountpoint, key), "rb") as f:
                        parts = [f.read(SIZE // 3)]
                        time.sleep(0.002)  # some opens span the reload
                        parts.append(f.read())
                except OSError as exc:
                    problems.append(f"{key}: {exc}")
                    return
                data = b"".join(parts)
                if len(data) != SIZE or len(set(data)) != 1:
                    problems.append(f"{key}: {len(data)} bytes, mixed {sorted(set(data))}")
                    return
                seen.append(int(chr(data[0])))

    try:
        notes.wait_for("READY")
        thread = threading.Thread(target=reader)
        thread.start()
        while len(seen) < 2 * len(KEYS) and thread.is_alive():
            time.sleep(0.01)
        _write_refs(refs, files[2], {"added": "new key"})
        proc.send_signal(signal.SIGHUP)
        reloading = notes.wait_for("RELOADING")
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert notes.wait_for("READY")["READY"] == "1"
        count = len(seen)
        deadline = time.monotonic() + 30
        while thread.is_alive() and time.monotonic() < deadline and (len(seen) < count + 2 * len(KEYS)):
            time.sleep(0.01)
        stop.set()
        thread.join(timeout=60)
        assert not problems, problems
        assert seen[0] == 1 and seen[-1] == 2 and set(seen) == {1, 2}
        # every file opened after the reload has the new bytes; the new key is there
        for key in KEYS:
            with open(os.path.join(mountpoint, key), "rb") as f:
                data = f.read()
                assert data == b"2" * SIZE, (key, os.fstat(f.fileno()).st_mtime_ns, os.stat(refs).st_mtime_ns, seen[-30:])
        assert "added" in os.listdir(mountpoint)
        with open(os.path.join(mountpoint, "added"), "rb") as f:
            assert f.read() == b"new key"

        # a reload that fails keeps serving the current tree, and says why
        with open(refs, "w") as f:
            f.write('{"version": 1, "refs": {')
        proc.send_signal(signal.SIGHUP)
        notes.wait_for("RELOADING")
        assert notes.wait_for("READY")["READY"] == "1"
        with open(os.path.join(mountpoint, KEYS[0]), "rb") as f:
            assert f.read() == b"2" * SIZE
        log = (tmp_path / "log").read_text()
        assert "reload failed, still serving the previous tree" in log and str(refs) in log
    finally:
        stop.set()
        _stop(proc, mountpoint)


def test_a_file_open_across_a_reload_that_resizes_it_is_seen_whole_afterwards(tmp_path, mountpoint, versions):
    """The kernel keeps the entry of a file in use when a reload drops the tree's entries: with
    it, the old size and, without more, the old cached pages. A reload that makes a file larger
    (and other bytes) while a reader holds it open and reads on: the holder keeps its tree, and
    every open after the reload reads the new file whole -- not cut at the old size, not the
    old pages."""
    refs, files = versions
    bigger = tmp_path / "bigger.bin"
    bigger.write_bytes(b"3" * (3 * SIZE))
    notes = Notifications(str(tmp_path / "notify"))
    proc = _start(refs, mountpoint, tmp_path, notes.address)
    try:
        notes.wait_for("READY")
        path = os.path.join(mountpoint, KEYS[0])
        with open(path, "rb") as held:
            assert held.read() == b"1" * SIZE  # in the page cache now
            with open(refs) as f:
                doc = json.load(f)
            doc["refs"][KEYS[0]] = [str(bigger), 0, 3 * SIZE]
            with open(f"{refs}.tmp", "w") as f:
                json.dump(doc, f)
            os.replace(f"{refs}.tmp", refs)
            proc.send_signal(signal.SIGHUP)
            notes.wait_for("RELOADING")
            assert notes.wait_for("READY")["READY"] == "1"
            held.seek(0)
            assert held.read() == b"1" * SIZE  # the holder keeps its tree (and tells the kernel its size)
            with open(path, "rb") as again:  # opened while the old one is still open
                assert again.read() == b"3" * (3 * SIZE)
        for _ in range(2):  # the first open after the holder closed, and one after it
            with open(path, "rb") as f:
                assert f.read() == b"3" * (3 * SIZE)
        # the holder's size leaves the kernel when its close reaches the daemon (the kernel
        # sends the release after close returns): a bounded wait for that, then stat is right
        deadline = time.monotonic() + 10
        while os.stat(path).st_size != 3 * SIZE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.stat(path).st_size == 3 * SIZE
        with open(path, "rb") as f:
            assert f.read() == b"3" * (3 * SIZE)
    finally:
        _stop(proc, mountpoint)


def test_sighup_rereads_the_config_file(tmp_path, mountpoint, versions):
    refs, files = versions
    other = tmp_path / "other.json"
    _write_refs(other, files[2])
    conf = tmp_path / "mount.toml"
    conf.write_text(f'sources = ["one={refs}"]\nallow-origin = ["{tmp_path}"]\n')
    notes = Notifications(str(tmp_path / "notify"))
    env = dict(os.environ, NOTIFY_SOCKET=notes.address)
    proc = subprocess.Popen(
        [sys.executable, "-m", "refmount", "-f", "--config", str(conf), "--log-file", str(tmp_path / "log"), mountpoint],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        notes.wait_for("READY")
        assert sorted(os.listdir(mountpoint)) == ["v"]  # one source is the root
        conf.write_text(f'sources = ["one={refs}", "two={other}"]\nallow-origin = ["{tmp_path}"]\n')
        proc.send_signal(signal.SIGHUP)
        notes.wait_for("RELOADING")
        assert str(other) in notes.wait_for("READY")["STATUS"]  # the status names what is served now
        assert sorted(os.listdir(mountpoint)) == ["one", "two"]
        with open(os.path.join(mountpoint, "two", KEYS[0]), "rb") as f:
            assert f.read() == b"2" * SIZE
        assert os.getxattr(os.path.join(mountpoint, "two", KEYS[0]), "user.refmount.source").decode() == str(other)
    finally:
        _stop(proc, mountpoint)


PARENT = """
import json, os, sys, time
import refmount
refs, mountpoint, log, detach = sys.argv[1:5]
with refmount.mounted(refs, mountpoint, log_file=log, allow_origin=["/"], detach=detach == "1") as root:
    print(os.listdir(root), flush=True)
    time.sleep(600)  # killed here, as a notebook kernel would be
"""


@pytest.mark.parametrize("detach", [False, True])
def test_mounted_follows_its_parent_unless_detached(tmp_path, mountpoint, detach):
    """A killed Python process (a notebook kernel) takes its mount with it: the daemon sees its
    parent's pipe close, unmounts and exits; the next mounted() on that path works."""
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"version": 1, "refs": {".zgroup": '{"zarr_format":2}', "k": "base64:AAEC"}}))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(refs), mountpoint, str(tmp_path / "log"),
                               "1" if detach else "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert "'k'" in parent.stdout.readline()
        daemon = int(subprocess.run(["pgrep", "-f", f"refmount --foreground.*{mountpoint}"],
                                    capture_output=True, text=True).stdout.split()[0])
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while is_mounted(mountpoint) and time.monotonic() < deadline and not detach:
            time.sleep(0.05)
        if detach:
            time.sleep(0.5)
            assert is_mounted(mountpoint)  # the old behaviour: the mount stays
            assert sorted(os.listdir(mountpoint)) == [".zgroup", ".zmetadata", "k"]
            return
        assert not is_mounted(mountpoint)
        for _ in range(100):  # the daemon exits too
            if not os.path.exists(f"/proc/{daemon}") or open(f"/proc/{daemon}/stat").read().split()[2] == "Z":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the daemon outlived its parent")
        assert "is gone: unmounting" in (tmp_path / "log").read_text()
        with refmount.mounted(str(refs), mountpoint, log_file=str(tmp_path / "log2"), allow_origin=["/"]) as root:
            assert open(os.path.join(root, "k"), "rb").read() == b"\x00\x01\x02"
    finally:
        parent.kill()
        if is_mounted(mountpoint):
            lazy_unmount(mountpoint)


def _read_ahead_kb(mountpoint: str) -> int:
    dev = os.stat(mountpoint).st_dev
    with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb") as f:
        return int(f.read())


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may set a mount's read-ahead")
def test_root_raises_the_kernels_read_ahead(tmp_path, mount):
    """Run as root, a mount's read-ahead is 1 MiB (``--read-ahead``; 0 leaves the kernel's)."""
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"a": "x" * 10}))
    with mount(str(refs)) as root:
        assert _read_ahead_kb(root) == 1024
        assert open(os.path.join(root, "a")).read() == "x" * 10
    with mount(str(refs), read_ahead="256KiB") as root:
        assert _read_ahead_kb(root) == 256
    with mount(str(refs), read_ahead=0) as root:
        assert _read_ahead_kb(root) not in (256, 1024)  # the kernel's own (128 for FUSE)


DEAF_ROOT = '''
import errno
import refmount.mount.daemon as daemon
import refmount.mount.operations as operations
daemon.READY_SECONDS = 1.0
answer = operations.RefFS.getattr
def getattr(self, path, fh=None):
    if path == "/":
        raise OSError(errno.EIO, "the root does not answer")
    return answer(self, path, fh)
operations.RefFS.getattr = getattr
'''


def test_a_mount_whose_root_never_answers_is_taken_down_with_one_line(tmp_path, mountpoint):
    """The daemon's readiness check fails (the root's stat never answers -- injected into the
    daemon through ``sitecustomize``: no real reference set makes it so any more): the command
    says so in one line and exits 1, and neither a mount nor a daemon stays behind (the command
    used to wait for the daemon for ever)."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(DEAF_ROOT)
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"version": 1, "refs": {".zgroup": '{"zarr_format": 2}'}}))
    env = dict(os.environ, PYTHONPATH=str(inject))
    result = subprocess.run([sys.executable, "-m", "refmount", str(refs), mountpoint], capture_output=True, text=True,
                            env=env, timeout=90)
    assert result.returncode == 1, result
    assert result.stderr.strip() == f"refmount: mountpoint {mountpoint}: mount did not become ready"
    assert not is_mounted(mountpoint)
    daemons = subprocess.run(["pgrep", "-f", f"refmount.*{mountpoint}"], capture_output=True, text=True).stdout
    assert daemons.strip() == ""


def test_a_stop_during_a_reload_that_waits_on_a_stalled_origin_is_heard(tmp_path, mountpoint, http_origin):
    """SIGHUP re-reads a reference set from an origin that has stopped answering; SIGTERM then
    still stops the daemon at once (the reload does not hold the signal thread, and its wait
    for the origin ends with the stop)."""
    data = os.urandom(SIZE)
    (http_origin.dir / "data.bin").write_bytes(data)
    (http_origin.dir / "refs.json").write_text(json.dumps({"version": 1, "refs": {
        ".zgroup": '{"zarr_format":2}', "v/0": [f"{http_origin.url}/data.bin", 0, SIZE]}}))
    notes = Notifications(str(tmp_path / "notify"))
    proc = _start(f"{http_origin.url}/refs.json", mountpoint, tmp_path, notes.address, "--timeout", "60",
                  "--retries", "1")
    try:
        notes.wait_for("READY")
        with open(os.path.join(mountpoint, "v", "0"), "rb") as f:
            assert f.read() == data
        http_origin.stall, http_origin.fault = 60, "stall"
        asked = http_origin.counts["GET"]
        proc.send_signal(signal.SIGHUP)
        notes.wait_for("RELOADING")
        deadline = time.monotonic() + 30
        while http_origin.counts["GET"] == asked and time.monotonic() < deadline:  # the reload waits on it now
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not is_mounted(mountpoint)
    finally:
        http_origin.fault = None
        _stop(proc, mountpoint)


def test_readers_across_reloads_that_resize_files_read_whole_versions(tmp_path, mountpoint):
    """Readers loop over files while reloads flip the set between two versions whose chunks
    have other sizes (as an Icechunk commit's chunks do). Every open reads exactly one version,
    whole: the kernel keeps one size per path, and a size answered for the other version cut
    reads short (before: about one read in ten, after a few seconds of this)."""
    n, sizes = 6, {1: 50_000, 2: 180_000}
    for v in (1, 2):
        (tmp_path / f"d{v}.bin").write_bytes(str(v).encode() * (sizes[v] * n))
    refs = tmp_path / "refs.json"

    def publish(v):
        doc = {".zgroup": '{"zarr_format":2}'}
        doc.update({f"v/{i}": [str(tmp_path / f"d{v}.bin"), i * sizes[v], sizes[v]] for i in range(n)})
        (tmp_path / "refs.tmp").write_text(json.dumps({"version": 1, "refs": doc}))
        os.replace(tmp_path / "refs.tmp", refs)

    publish(1)
    notes = Notifications(str(tmp_path / "notify"))
    proc = _start(refs, mountpoint, tmp_path, notes.address)
    stop = threading.Event()
    wrong: list = []
    whole = {1: 0, 2: 0}

    def reader(seed: int) -> None:
        import random

        rnd = random.Random(seed)
        while not stop.is_set():
            i = rnd.randrange(n)
            with open(os.path.join(mountpoint, "v", str(i)), "rb") as f:
                if rnd.random() < 0.3:
                    time.sleep(0.01)  # some opens span a reload
                data = f.read()
            version = data[:1].decode()
            if version in ("1", "2") and data == version.encode() * sizes[int(version)]:
                whole[int(version)] += 1
            else:
                wrong.append((i, len(data), sorted(set(data))[:3]))

    try:
        notes.wait_for("READY")
        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        version = 1
        for _ in range(16):  # 16 reloads, each begun while the one before may still run
            version = 3 - version
            publish(version)
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        assert not wrong, wrong[:5]
        assert whole[1] > 0 and whole[2] > 0
    finally:
        stop.set()
        _stop(proc, mountpoint)


def test_a_notify_socket_nobody_reads_never_holds_the_daemon(tmp_path, monkeypatch):
    """A notification listener that stops reading fills its queue; a send then waits, and a
    daemon waiting there neither reloads nor stops (seen with a stalled listener: SIGTERM
    took for ever). Each notification is bounded: it is dropped instead."""
    from refmount.mount import notify

    listener = Notifications(str(tmp_path / "notify"))  # never read from here on
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    results: list[bool] = []

    def flood() -> None:
        for _ in range(5000):
            results.append(notify.sd_notify("STATUS=" + "x" * 1000, timeout=0.2))
            if not results[-1]:
                break

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    sender.join(timeout=60)
    assert not sender.is_alive()  # without the bound, the send that finds the queue full waits for ever
    assert results[0] and results[-1] is False

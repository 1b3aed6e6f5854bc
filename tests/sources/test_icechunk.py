"""Icechunk repositories through real mounts, against the answers the icechunk package gave.

The repositories under ``tests/data/icechunk`` were written by icechunk 2.3.0 (spec v2, spec v1,
and v1 migrated to v2) with ``generate.py``, which also recorded, for every snapshot, each key's
size and SHA-256, each directory's listing and each array's values as the package returns them.
``written_by_1x/`` and ``written_by_2x/`` were written by icechunk 1.1.21 and 2.3.0 with
``generate_written.py`` (spec v1 and v2, and the operations each package offers).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from refmount.errors import RefmountError
from refmount.mount.mountpoint import is_mounted
from refmount.rangeserver import RangeServer
from refmount.sources.icechunk import url
from tests.conftest import run_cli
from tests.views.test_decoded import _ncdump, _needs

DATA = Path(__file__).resolve().parent.parent / "data" / "icechunk"
EXPECTED = json.loads((DATA / "expected.json").read_text())
FILE_PREFIX, HTTP_PREFIX = EXPECTED["file_prefix"], EXPECTED["http_prefix"]


def _originals(directory: Path):
    """The virtual originals in ``directory``, with the modification time they were written
    with, served over HTTP too; ``relocate`` points the repositories' containers at them."""
    shutil.copytree(DATA / "ext", directory, dirs_exist_ok=True)
    for path in directory.rglob("*.bin"):
        os.utime(path, (EXPECTED["ext_mtime"], EXPECTED["ext_mtime"]))
    server = RangeServer(str(directory), max_requests=50_000)
    return server, [f"{FILE_PREFIX}=file://{directory}/", f"{HTTP_PREFIX}={server.url}/"]


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ext")
    server, relocate = _originals(directory)
    with server:
        yield SimpleNamespace(dir=directory, server=server, relocate=relocate)


@pytest.fixture
def own_originals(tmp_path):
    """Originals a test may change."""
    server, relocate = _originals(tmp_path / "ext")
    with server:
        yield SimpleNamespace(dir=tmp_path / "ext", server=server, relocate=relocate)


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _expected_array(want: dict) -> np.ndarray:
    values = np.array(want["values"], dtype=object)
    return np.where(values == None, np.nan, values).astype(want["dtype"])  # noqa: E711 (None marks NaN)


@pytest.mark.parametrize("name", ["v2", "v1", "migrated"])
def test_every_key_at_every_ref_is_what_icechunk_returns(name, originals, mount):
    exp = EXPECTED["repos"][name]
    with mount(str(DATA / name), all_refs=True, relocate=originals.relocate) as root:
        assert sorted(os.listdir(root)) == ["branches", "snapshots", "tags"]
        assert sorted(os.listdir(f"{root}/branches")) == sorted(exp["branches"])
        assert sorted(os.listdir(f"{root}/tags")) == sorted(exp["tags"])  # the deleted tag is not there
        assert sorted(os.listdir(f"{root}/snapshots")) == sorted(exp["snapshots"])
        checked = 0
        for sid, snap in exp["snapshots"].items():
            base = f"{root}/snapshots/{sid}"
            for key, want in snap["keys"].items():
                assert "error" not in want, want
                assert os.stat(f"{base}/{key}").st_size == want["size"], key
                assert _sha(f"{base}/{key}") == want["sha256"], f"{sid}/{key}"
                checked += 1
            for directory, listing in snap["listings"].items():
                assert sorted(os.listdir(f"{base}/{directory}" if directory else base)) == listing, directory
        assert checked >= (3700 if name == "v2" else 120)
        for kind, refs in (("branches", exp["branches"]), ("tags", exp["tags"])):
            for ref, sid in refs.items():
                assert _sha(f"{root}/{kind}/{ref}/zarr.json") == exp["snapshots"][sid]["keys"]["zarr.json"]["sha256"]
        assert not os.path.exists(f"{root}/snapshots/{sid}/small/c/2")  # never written: absent, not zeros
        assert not os.path.exists(f"{root}/tags/gone")


@pytest.mark.parametrize("name", ["v2", "v1"])
def test_zarr_reads_the_arrays_that_were_written(name, originals, mount):
    import zarr

    exp = EXPECTED["repos"][name]
    with mount(str(DATA / name), relocate=originals.relocate) as root:  # auto-detected; branch main
        group = zarr.open_group(root, mode="r")
        arrays = exp["snapshots"][exp["branches"]["main"]]["arrays"]
        assert {"native", "virt", "web", "grp/sub/temp", "grp/c/arr", "scalar"} <= set(arrays)
        for path, want in arrays.items():
            np.testing.assert_array_equal(group[path][...], _expected_array(want), err_msg=path)
        assert group.attrs["n"] == 2


@pytest.mark.parametrize("writer", ["1x", "2x"])
def test_a_repository_written_by_each_icechunk_series(writer, tmp_path, mount):
    """Spec v1 as the 1.x package writes it, spec v2 as 2.x does (``generate_written.py``):
    split manifests, a resized array, a deleted group on a branch, expired snapshots; 2.x also
    an amended commit, a moved group, a shifted array, a reset branch, rewritten manifests and
    garbage collected. Every key at every ref the package could still read, and main's arrays
    through zarr."""
    import zarr

    data = DATA / f"written_by_{writer}"
    exp = json.loads((data / "expected.json").read_text())
    shutil.copytree(data / "ext", tmp_path / "ext")
    relocate = [f"{exp['ext_prefix']}=file://{tmp_path / 'ext'}/"]
    for ref, keys in exp["answers"].items():
        with mount(f"{data / 'repo'}|icechunk:{ref}", relocate=relocate) as root:
            shown = {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}
            assert shown == set(keys), ref
            for key, want in keys.items():
                assert _sha(f"{root}/{key}") == want, f"{ref} {key}"
            if ref == "@branch.main":
                group = zarr.open_group(root, mode="r")
                for path, values in exp["values"].items():
                    assert group[path][...].tolist() == values, path
    assert len(exp["answers"]) >= 4 and sum(map(len, exp["answers"].values())) > 100


def test_a_ref_and_a_node_named_in_the_url(originals, mount):
    import zarr

    exp = EXPECTED["repos"]["v2"]
    dev = exp["snapshots"][exp["branches"]["dev"]]["arrays"]
    with mount(f"{DATA / 'v2'}|icechunk:@branch.dev/grp/sub", relocate=originals.relocate) as root:
        assert sorted(os.listdir(root)) == ["temp", "zarr.json"]
        np.testing.assert_array_equal(zarr.open_array(f"{root}/temp", mode="r")[...], _expected_array(dev["grp/sub/temp"]))
    first = exp["snapshots"][exp["tags"]["v1"]]["arrays"]
    with mount(f"{DATA / 'v2'}|icechunk://tag.v1/native", relocate=originals.relocate) as root:
        np.testing.assert_array_equal(zarr.open_array(root, mode="r")[...], _expected_array(first["native"]))
    with mount(f"{DATA / 'v1'}|icechunk:@{EXPECTED['repos']['v1']['named']['dev']}|zarr3:devonly/x", relocate=originals.relocate) as root:
        assert zarr.open_array(root, mode="r")[...].tolist() == [5, 6, 7]


def test_url_forms():
    base = str(DATA / "v2")
    assert url.parse(f"{base}|icechunk:") == url.Target(base)
    assert url.parse(f"{base}|icechunk") == url.Target(base)
    assert url.parse(f"{base}|icechunk:grp/sub/") == url.Target(base, path="grp/sub")
    assert url.parse(f"{base}|icechunk:@branch.main") == url.Target(base)
    assert url.parse(f"{base}|icechunk:@branch.my%20branch/a%40b") == url.Target(base, "branch", "my branch", "a@b")
    assert url.parse(f"{base}|icechunk:@tag.v1/") == url.Target(base, "tag", "v1")
    assert url.parse(f"{base}|icechunk:@1CECHNKREP0F1RSTCMT0/x") == url.Target(base, "snapshot", "1CECHNKREP0F1RSTCMT0", "x")
    assert url.parse(f"{base}|icechunk://branch.dev/grp") == url.Target(base, "branch", "dev", "grp")
    assert url.parse(f"{base}|icechunk://1CECHNKREP0F1RSTCMT0") == url.Target(base, "snapshot", "1CECHNKREP0F1RSTCMT0")
    assert url.parse(f"{base}|icechunk:grp|zarr3:sub") == url.Target(base, path="grp/sub")
    assert url.parse("s3://bucket/era5/|icechunk:@tag.v5/").base == "s3://bucket/era5/"
    assert str(url.Target(base, "branch", "my branch", "a b")) == f"{base}|icechunk:@branch.my%20branch/a%20b"
    for bad, why in [
        ("@branch./x", "invalid ref"),
        ("@b", "invalid ref"),
        ("@1CECHNKREP0F1RSTCM", "invalid ref"),  # 19 characters
        ("@1cechnkrep0f1rstcmt0", "invalid ref"),  # upper case only
        ("a?b", "'?' and '#'"),
        ("a/../b", "invalid path"),
    ]:
        with pytest.raises(RefmountError, match=why):
            url.parse(f"{base}|icechunk:{bad}")
    with pytest.raises(RefmountError, match="unknown URL pipeline element"):
        url.parse(f"{base}|icechunk:|zip:")


def test_user_mistakes_are_one_line_errors(tmp_path):
    legacy = tmp_path / "legacy"
    (legacy / "refs" / "branch.main").mkdir(parents=True)
    (legacy / "refs" / "branch.main" / "ZZZZZZZZ.json").write_text("{}")
    (legacy / "snapshots").mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    v2 = DATA / "v2"
    cases = [
        (f"{v2}|icechunk:@branch.nope", "no branch 'nope' (known: dev, main)"),
        (f"{DATA / 'v1'}|icechunk:@tag.gone", "tag 'gone' was deleted"),
        (f"{v2}|icechunk:@tag.gone", "tag 'gone' was deleted"),
        (f"{v2}|icechunk:@ZZZZZZZZZZZZZZZZZZZZ", "no snapshot ZZZZZZZZZZZZZZZZZZZZ"),
        (f"{v2}|icechunk:@snapshot.x", "invalid ref"),
        (f"{v2}|icechunk:nowhere", "no group or array 'nowhere'"),
        (f"{empty}|icechunk:", "not an Icechunk repository"),
        (str(legacy), "written by icechunk 0.1.x"),
    ]
    for source, message in cases:
        result = run_cli(source, mnt)
        assert result.returncode == 1, source
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (source, result.stderr)
        assert "Traceback" not in result.stderr
        assert not is_mounted(str(mnt))


def _log(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_changed_originals_fail_and_are_never_served(own_originals, mount, tmp_path):
    log = tmp_path / "refmount.log"
    with mount(str(DATA / "v2"), relocate=own_originals.relocate, log_file=str(log)) as root:
        # virt: chunks 0..2 carry a last-modified checksum, 3 none; web: even chunks an ETag
        assert len(open(f"{root}/virt/c/0/0", "rb").read()) == 64
        assert len(open(f"{root}/web/c/0", "rb").read()) == 16
        os.utime(own_originals.dir / "a.bin")  # a bare touch
        with pytest.raises(OSError) as err:
            open(f"{root}/virt/c/0/1", "rb").read()
        assert err.value.errno == 5
        assert len(open(f"{root}/virt/c/1/1", "rb").read()) == 64  # no checksum: served
        replacement = own_originals.dir / "a.new"  # put back as it was, as a new file (new inode)
        replacement.write_bytes((DATA / "ext" / "a.bin").read_bytes())
        os.utime(replacement, (EXPECTED["ext_mtime"], EXPECTED["ext_mtime"]))
        os.rename(replacement, own_originals.dir / "a.bin")
        assert open(f"{root}/virt/c/0/1", "rb").read() == (DATA / "ext" / "a.bin").read_bytes()[80:144]
        original = (own_originals.dir / "b.bin").read_bytes()
        (own_originals.dir / "b.bin").write_bytes(original[::-1])  # rewritten: new ETag
        with pytest.raises(OSError) as err:
            open(f"{root}/web/c/2", "rb").read()
        assert err.value.errno == 5
        assert open(f"{root}/web/c/3", "rb").read() == original[::-1][48:64]  # no checksum: new bytes
    text = _log(log)
    assert f"virt/c/0/1: {own_originals.dir}/a.bin: the original changed since the reference was written" in text
    assert "web/c/2: " in text and "b.bin: the original changed since the reference was written" in text


def test_unauthorised_containers_are_not_read(originals, mount, tmp_path):
    log = tmp_path / "refmount.log"
    file_only = [r for r in originals.relocate if r.startswith(FILE_PREFIX)]
    with mount(str(DATA / "v2"), log_file=str(log)) as root:  # nothing authorised
        assert os.stat(f"{root}/virt/c/0/0").st_size == 64  # sizes still come from the manifest
        with pytest.raises(OSError) as err:
            open(f"{root}/virt/c/0/0", "rb").read()
        assert err.value.errno == 5
        assert len(open(f"{root}/native/c/0/0", "rb").read()) == 800  # native chunks read
    with mount(str(DATA / "v2"), log_file=str(log), relocate=file_only) as root:
        assert len(open(f"{root}/virt/c/0/0", "rb").read()) == 64
        with pytest.raises(OSError):
            open(f"{root}/web/c/1", "rb").read()
    text = _log(log)
    assert f"virtual chunks under {HTTP_PREFIX} will not be read (authorise with --authorize-virtual {HTTP_PREFIX})" in text
    assert f"virt/c/0/0: virtual chunk container {FILE_PREFIX} is not authorised" in text
    assert f"web/c/1: virtual chunk container {HTTP_PREFIX} is not authorised" in text


def test_authorised_containers_are_still_under_the_origin_policy(originals, mount, tmp_path):
    http_only = [r for r in originals.relocate if r.startswith(HTTP_PREFIX)]
    with mount(str(DATA / "v2"), relocate=http_only, allow_origin=[originals.server.url]) as root:
        assert len(open(f"{root}/native/c/0/0", "rb").read()) == 800  # the repository's own chunks
        assert len(open(f"{root}/web/c/1", "rb").read()) == 16  # the loopback server is allowed
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = run_cli(str(DATA / "v2"), mnt, "--relocate", originals.relocate[0], "--allow-origin", originals.server.url)
    assert result.returncode == 1
    assert result.stderr.strip() == f"refmount: origin {originals.dir}: not under any allowed origin (--allow-origin)"
    assert not is_mounted(str(mnt))


def test_refresh_follows_the_branch_and_open_files_keep_their_snapshot(originals, mount, tmp_path):
    from refmount.sources.icechunk.repository import Repository

    repo = tmp_path / "repo"
    shutil.copytree(DATA / "v2", repo)
    exp = EXPECTED["repos"]["v2"]
    older = exp["named"]["virtual"]  # main before its last commit
    current = (repo / "repo").read_bytes()
    for backup in sorted((repo / "overwritten").iterdir()):
        (repo / "repo").write_bytes(backup.read_bytes())
        if Repository(str(repo)).refs().branches.get("main") == older:
            break
    else:
        pytest.fail("no earlier repo file with main at the second commit")
    with mount(str(repo), relocate=originals.relocate, refresh=0.3) as root:
        new_key = f"{root}/grp/sub/temp/c/1/0/0"
        assert not os.path.exists(new_key)
        before = open(f"{root}/zarr.json", "rb").read()
        assert json.loads(before)["attributes"]["n"] == 1
        held = open(f"{root}/zarr.json", "rb")
        held.read(10)
        tmp = repo / "repo.new"
        tmp.write_bytes(current)
        os.rename(tmp, repo / "repo")  # what a commit does to the ref
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with open(f"{root}/zarr.json", "rb") as f:
                if json.loads(f.read())["attributes"]["n"] == 2:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the new commit did not show")
        assert held.read() == before[10:]  # the open file keeps the snapshot it opened
        held.close()
        assert os.path.exists(new_key)
        third = exp["snapshots"][exp["named"]["third"]]["keys"]
        assert _sha(new_key) == third["grp/sub/temp/c/1/0/0"]["sha256"]
        assert sorted(os.listdir(f"{root}/grp/sub/temp/c")) == ["0", "1", "2"]


def test_inspect_shows_refs_history_and_chunk_kinds(originals):
    result = run_cli("inspect", str(DATA / "v2"), "--relocate", originals.relocate[0])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    exp = EXPECTED["repos"]["v2"]
    assert "icechunk repository (spec v2)" in out
    assert f"main -> {exp['branches']['main']}" in out and f"v1 -> {exp['tags']['v1']}" in out
    assert "deleted tags: gone" in out
    for sid in exp["snapshots"]:
        assert sid in out
    assert f"{FILE_PREFIX} (authorised)" in out and f"{HTTP_PREFIX} (not authorised)" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("many ", "native ", "web "))}
    assert rows["many"][-5:] == ["0", "0", "1200", "0", "0"]  # native, unreadable, virtual, whole, missing
    assert rows["native"][-5:] == ["4", "0", "0", "0", "0"]
    assert rows["web"][-5:] == ["0", "6", "0", "0", "0"]
    v1 = run_cli("inspect", "--json", str(DATA / "v1"))
    summary = json.loads(v1.stdout)
    assert summary["repository"]["spec"] == 1
    assert [s["id"] for s in summary["repository"]["history"]][-1] == "1CECHNKREP0F1RSTCMT0"


def test_a_repository_over_http_and_on_s3(originals, mount, s3_endpoint, http_origin):
    import zarr

    shutil.copytree(DATA / "v2", http_origin.dir / "v2")
    want = EXPECTED["repos"]["v2"]["snapshots"][EXPECTED["repos"]["v2"]["branches"]["main"]]["arrays"]
    with mount(f"{http_origin.url}/v2/", relocate=originals.relocate) as root:
        np.testing.assert_array_equal(zarr.open_group(root, mode="r")["native"][...], _expected_array(want["native"]))
        web = b"".join(open(f"{root}/web/c/{i}", "rb").read() for i in range(6))  # in grid order: fetched ahead
        assert np.frombuffer(web, "<i2").tolist() == list(range(48))
        stats = json.loads(os.getxattr(root, "user.refmount.stats"))
        assert stats["prefetch_chunks"] >= 1 and stats["prefetch_used"] >= 1
    import s3fs

    options = {"s3": {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}}
    fs = s3fs.S3FileSystem(**options["s3"])
    fs.mkdir("icechunk-repos")
    fs.put(str(DATA / "v1") + "/", "icechunk-repos/v1/", recursive=True)
    with mount("s3://icechunk-repos/v1|icechunk:@branch.dev", relocate=originals.relocate, storage_options=options) as root:
        group = zarr.open_group(root, mode="r")
        assert group["devonly/x"][...].tolist() == [5, 6, 7]
        assert group["native"][0, 0] == -1.0


def test_v2_and_decoded_views_for_netcdf_c_and_gdal(originals, mount, tmp_path):
    """Issue 6: an Icechunk repository read by Debian's ncdump and GDAL."""
    import math
    import re

    _needs("ncdump")
    _needs("gdal_translate")
    arrays = EXPECTED["repos"]["v2"]["snapshots"][EXPECTED["repos"]["v2"]["branches"]["main"]]["arrays"]
    native = _expected_array(arrays["native"])
    with mount(str(DATA / "v2"), relocate=originals.relocate, view="v2") as root:
        assert _ncdump(root, "native") == native.ravel().tolist()  # uncompressed chunks, as stored
        tif = tmp_path / "native.tif"
        subprocess.run(["gdal_translate", "-q", f'ZARR:"{root}":/native', str(tif)], check=True, timeout=120)
        info = subprocess.run(["gdalinfo", "-stats", str(tif)], capture_output=True, text=True, check=True).stdout
        stats = {k: float(v) for k, v in re.findall(r"STATISTICS_(\w+)=([-\d.eE+]+)", info)}
        assert math.isclose(stats["MEAN"], native.mean()) and stats["MAXIMUM"] == native.max()
    with mount(f"{DATA / 'v2'}|icechunk:grp/sub", relocate=originals.relocate, view="decoded") as root:
        temp = _expected_array(arrays["grp/sub/temp"])  # zstd in the repository
        assert np.allclose(_ncdump(root, "temp"), temp.ravel(), rtol=1e-6, atol=0)  # ncdump prints 7 digits


def test_virtual_locations_resolve_only_through_authorised_containers():
    from refmount.sources.icechunk.virtual import VirtualAccess

    access = VirtualAccess({"s3://bucket/": None, "s3://bucket/deep/": "deep", "file:///data/ext/": None, "https://h/x/": None},
                           authorized=["s3://bucket/deep/", "file:///data/ext/"], relocate={"https://h/x/": "/srv/x"})
    assert access.resolve("s3://bucket/deep/a%20b//c") == ("s3://bucket/deep/a b//c", None)  # keys verbatim, decoded
    assert access.resolve("vcc://deep/k") == ("s3://bucket/deep/k", None)
    assert "s3://bucket/ is not authorised" in access.resolve("s3://bucket/other")[1]  # the longest prefix decides
    assert access.resolve("file:///data/ext/a/../b.nc") == ("/data/ext/b.nc", None)
    assert "escapes its container" in access.resolve("file:///data/ext/../../etc/passwd")[1]
    assert access.resolve("https://h/x/y.nc") == ("/srv/x/y.nc", None)  # relocated to a local directory
    assert "no virtual chunk container covers" in access.resolve("gs://elsewhere/k")[1]
    assert "no virtual chunk container named 'nope'" in access.resolve("vcc://nope/k")[1]
    assert access.unauthorized() == ["s3://bucket/"]


def test_a_config_file_names_a_repository_relative_to_itself(tmp_path, originals):
    config = tmp_path / "era5.toml"
    shutil.copytree(DATA / "v2", tmp_path / "repos" / "v2")
    (tmp_path / "mnt").mkdir()
    config.write_text(f"""
mountpoint = "mnt"
relocate = {json.dumps(originals.relocate)}
allow-origin = ["/", "{originals.server.url}"]
[sources.dev]
url = "repos/v2|icechunk:@branch.dev/grp"
view = "v2"
""")
    result = run_cli("check", "--config", config)
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('mountpoint = "mnt"\nsources = ["repos/v2|icechunk:@branch.gone"]\n')
    result = run_cli("check", "--config", bad)
    assert result.returncode == 1 and "no branch 'gone' (known: dev, main)" in result.stderr


def test_a_missing_manifest_is_a_one_line_error_and_eio(tmp_path, mount):
    repo = tmp_path / "repo"
    shutil.copytree(DATA / "v2", repo)
    from refmount.sources.icechunk.repository import Repository

    snapshot = Repository(str(repo)).snapshot(EXPECTED["repos"]["v2"]["branches"]["main"])
    manifest = snapshot.nodes["native"].manifests[0][0]
    (repo / "manifests" / manifest).unlink()  # as after garbage collection
    result = run_cli("inspect", repo)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"refmount: {repo}: manifest {manifest} is missing (expired or garbage-collected?)"
    with mount(str(repo)) as root:
        assert sorted(os.listdir(f"{root}/native")) == ["c", "zarr.json"]
        with pytest.raises(OSError) as err:
            os.stat(f"{root}/native/c/0/0")
        assert err.value.errno == 5
        assert len(open(f"{root}/small/c/0", "rb").read()) == 4  # other arrays still read


def test_ref_names_with_slashes_and_unicode(tmp_path):
    """Spec v1 stores ref names percent-encoded (``ünïcode`` as ``%C3%BCn%C3%AFcode``, a slash as
    ``%2F``): they are found by their real names, and under --all-refs a slash makes a directory
    (``branches/feature/x/``) without breaking the listing of its siblings."""
    from refmount.sources import open_source

    repo = tmp_path / "v1"
    shutil.copytree(DATA / "v1", repo)
    exp = EXPECTED["repos"]["v1"]
    for entry, source in (("branch.%C3%BCn%C3%AFcode", "branch.main"), ("branch.feature%2Fx", "branch.dev"),
                          ("tag.rel%2F1.0", "branch.main")):
        (repo / "refs" / entry).mkdir()
        shutil.copy(repo / "refs" / source / "ref.json", repo / "refs" / entry / "ref.json")
    tree = open_source(str(repo), all_refs=True)
    assert {"dev", "feature", "main", "ünïcode"} <= {n for n, _ in tree.listdir("branches")}
    assert list(tree.listdir("branches/feature")) == [("x", True)]
    assert "rel" in {n for n, _ in tree.listdir("tags")} and list(tree.listdir("tags/rel")) == [("1.0", True)]
    assert tree.node("branches/feature/x/zarr.json").data == tree.node("branches/dev/zarr.json").data
    assert tree.node("branches/ünïcode/zarr.json").data == tree.node("branches/main/zarr.json").data
    assert tree.node("branches/feature/nope") is None
    for source, branch in ((f"{repo}|icechunk:@branch.feature%2Fx", "dev"), (f"{repo}|icechunk:@branch.%C3%BCn%C3%AFcode", "main"),
                        (f"{repo}|icechunk://tag.rel%2F1.0", "main")):
        one = open_source(source)
        assert one.node("zarr.json").data == open_source(f"{repo}|icechunk:@branch.{branch}").node("zarr.json").data, source
    assert exp["branches"]["main"]  # the fixture's own refs are untouched


REFNAMES = DATA / "refnames"


@pytest.mark.parametrize("spec", ["v1", "v2"])
def test_ref_names_the_icechunk_package_wrote(tmp_path, mount, spec):
    """Repositories written by icechunk 2.x (``generate_refnames.py``) with branches and tags named
    ``feature/x``, ``feature/deep/er``, ``rel/1.0`` (spec v2), ``ünïcode``, ``with space``: each
    ref read by URL (percent-encoded) and under ``--all-refs`` (nested directories) gives the
    values the package reads at that ref."""
    import zarr
    from urllib.parse import quote

    expected = json.loads((REFNAMES / "expected.json").read_text(encoding="utf-8"))[spec]
    repo = REFNAMES / spec
    with mount(str(repo), all_refs=True) as root:
        assert sorted(os.listdir(f"{root}/branches")) == sorted({n.split("/")[0] for n in expected["branches"]})
        for kind in ("branches", "tags"):
            for name, values in expected[kind].items():
                assert zarr.open_array(f"{root}/{kind}/{name}/v", mode="r")[...].tolist() == values, (kind, name)
    for kind, prefix in (("branches", "branch"), ("tags", "tag")):
        for name, values in expected[kind].items():
            with mount(f"{repo}|icechunk:@{prefix}.{quote(name, safe='')}") as root:
                assert zarr.open_array(f"{root}/v", mode="r")[...].tolist() == values, (kind, name)


def test_a_compressed_object_that_would_make_gigabytes_is_refused_not_read(tmp_path):
    """A repository's metadata object is a zstd frame: one of a few KB that decompresses to
    gigabytes (a hostile or broken repository) is refused past the bound, a MiB at a time,
    never held whole; a real object of the test repository reads as before."""
    import zstandard

    from refmount.sources.icechunk.binary import HEADER, SNAPSHOT, open_object, read_bounded

    bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))
    assert len(bomb) < 64 << 10
    with pytest.raises(RefmountError, match=r"snapshots/X: decompresses to more than 8 MiB"):
        read_bounded(zstandard.ZstdDecompressor(), bomb, 8 << 20, "snapshots/X")
    assert read_bounded(zstandard.ZstdDecompressor(), bomb, 64 << 20, "snapshots/X") == b"\0" * (64 << 20)
    snapshot = next((DATA / "v2" / "snapshots").iterdir()).read_bytes()
    spec, payload = open_object(snapshot, SNAPSHOT, "snapshot")
    assert spec == snapshot[36] and len(payload) > len(snapshot) - HEADER


def test_a_manifest_larger_than_its_cache_is_parsed_once_for_its_lookups():
    """A manifest larger than the whole manifest cache was fetched and parsed again for every
    chunk looked up in it; the last such manifest is held beside the cache."""
    from refmount.io.origins import Origins
    from refmount.io.stats import Stats
    from refmount.sources.icechunk.repository import Repository

    stats = Stats()
    repo = Repository(str(DATA / "v2"), Origins(stats=stats), manifest_cache_bytes=1)
    manifests = sorted(p.name for p in (DATA / "v2" / "manifests").iterdir())
    before = stats.snapshot().get("source_requests", 0)
    first = [repo.manifest(manifests[0]) for _ in range(5)]
    assert all(m is first[0] for m in first)
    assert stats.snapshot()["source_requests"] - before == 1
    repo.manifest(manifests[1])  # another one takes its place
    assert repo.manifest(manifests[0]) is not first[0]

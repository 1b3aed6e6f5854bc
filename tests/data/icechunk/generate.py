"""Write the Icechunk fixture repositories and the answers the icechunk package gives for them.

Needs Python >= 3.12 with ``icechunk`` 2.x and ``zarr`` 3 (the suite itself does not)::

    python3.12 -m venv /tmp/ic && /tmp/ic/bin/pip install icechunk zarr numcodecs
    /tmp/ic/bin/python tests/data/icechunk/generate.py

Writes, next to this script:

* ``v2/``       spec v2: nested groups (one named ``c``), native, inline and missing chunks, a
                0-d array, virtual chunks into local files (last-modified checksums) and into an
                HTTP origin (ETag checksums), 1,200 virtual references in one manifest
                (dictionary-compressed locations), branches ``main`` and ``dev``, tag ``v1``,
                deleted tag ``gone``, four snapshots;
* ``v1/``       spec v1 written by the same package (branches, a tag, a tombstone);
* ``migrated/`` a copy of ``v1/`` upgraded to spec v2 in place;
* ``ext/``      the virtual originals (their modification time is fixed: ``EXT_MTIME``);
* ``expected.json`` for every repository, every branch, tag and snapshot: each key's size and
  SHA-256 (or the error the package raised), each directory's listing, the arrays' values,
  the virtual chunk containers and the prefixes the locations were written with.

Virtual locations point at ``file:///tmp/refmount-icechunk-fixture/ext/`` and at an HTTP
origin on 127.0.0.1 (this script serves ``ext/`` with refmount's own range server while it
records); tests relocate both prefixes to where they put the originals.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..", "..")))
os.environ.setdefault("ICECHUNK_LOG", "error")

import icechunk  # noqa: E402
import zarr  # noqa: E402
from icechunk.credentials import HttpAccess, LocalFileSystemAccess  # noqa: E402
from zarr.core.buffer import default_buffer_prototype  # noqa: E402

from refmount.rangeserver import RangeServer, etag_of  # noqa: E402

EXT_DIR = "/tmp/refmount-icechunk-fixture/ext"
FILE_PREFIX = f"file://{EXT_DIR}/"
EXT_MTIME = 1767225600  # 2026-01-01T00:00:00Z
MANY = 1200


def write_originals() -> None:
    """``ext/a.bin``, ``ext/b.bin`` and ``ext/many/f00..f29.bin``: deterministic bytes."""
    rng = np.random.default_rng(7)
    out = os.path.join(HERE, "ext")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "many"))
    # a.bin: a 16-byte header then 4 chunks of 4x4 float32 (64 bytes each)
    with open(os.path.join(out, "a.bin"), "wb") as f:
        f.write(b"HEADER-16-BYTES!")
        f.write(rng.standard_normal((4, 4, 4)).astype("<f4").tobytes())
    # b.bin: 6 chunks of 8 int16 (16 bytes), served over HTTP
    with open(os.path.join(out, "b.bin"), "wb") as f:
        f.write(np.arange(48, dtype="<i2").tobytes())
    for i in range(30):
        with open(os.path.join(out, "many", f"f{i:02d}.bin"), "wb") as f:
            f.write(np.arange(i * 40, i * 40 + 40, dtype="<i8").tobytes())  # 40 chunks of 1 int64
    for root, _, files in os.walk(out):
        for name in files:
            os.utime(os.path.join(root, name), (EXT_MTIME, EXT_MTIME))
    shutil.rmtree(EXT_DIR, ignore_errors=True)
    shutil.copytree(out, EXT_DIR)
    for root, _, files in os.walk(EXT_DIR):
        for name in files:
            os.utime(os.path.join(root, name), (EXT_MTIME, EXT_MTIME))


def config_for(http_prefix: str) -> icechunk.RepositoryConfig:
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(icechunk.VirtualChunkContainer(FILE_PREFIX, icechunk.local_filesystem_store(EXT_DIR)))
    config.set_virtual_chunk_container(icechunk.VirtualChunkContainer(http_prefix, icechunk.http_store()))
    return config


def authorize(http_prefix: str) -> dict:
    return {FILE_PREFIX: LocalFileSystemAccess, http_prefix: HttpAccess}


def populate(repo: icechunk.Repository, http_prefix: str, full: bool) -> dict:
    """Commits on ``main`` and ``dev``; returns the snapshot ids by name."""
    checksum = datetime.datetime.fromtimestamp(EXT_MTIME + 1, tz=datetime.timezone.utc)
    snaps = {}
    s = repo.writable_session("main")
    root = zarr.group(store=s.store, zarr_format=3, attributes={"title": "refmount icechunk fixture", "n": 1})
    native = root.create_array("native", shape=(20, 20), chunks=(10, 10), dtype="<f8", compressors=None, fill_value=np.nan,
                               dimension_names=["y", "x"], attributes={"units": "K"})
    native[:] = np.arange(400, dtype="<f8").reshape(20, 20) / 4
    small = root.create_array("small", shape=(6,), chunks=(2,), dtype="<i2", compressors=None, fill_value=-1)
    small[:4] = [1, 2, 3, 4]  # the last chunk stays missing
    grp = root.create_group("grp", attributes={"about": "nested"})
    sub = grp.create_group("sub")
    temp = sub.create_array("temp", shape=(3, 8, 8), chunks=(1, 4, 4), dtype="<f4", fill_value=0.0,
                            compressors=[zarr.codecs.ZstdCodec(level=3)], dimension_names=["t", "y", "x"])
    temp[0] = np.linspace(0, 1, 64, dtype="<f4").reshape(8, 8)
    temp[2, :4, :4] = 7.5  # chunks of t=1 and most of t=2 missing
    cgroup = grp.create_group("c")  # a group named like a chunk prefix
    cgroup.create_array("arr", shape=(4,), chunks=(4,), dtype="|u1", compressors=None)[:] = [9, 8, 7, 6]
    scalar = root.create_array("scalar", shape=(), dtype="<i4", compressors=None, fill_value=0)
    scalar[...] = 42
    snaps["first"] = s.commit("first: native, inline, nested")

    s = repo.writable_session("main")
    root = zarr.open_group(store=s.store, mode="r+")
    root.create_array("virt", shape=(8, 8), chunks=(4, 4), dtype="<f4", compressors=None, fill_value=0.0)
    specs = [icechunk.VirtualChunkSpec(index=[i // 2, i % 2], location=FILE_PREFIX + "a.bin", offset=16 + 64 * i, length=64,
                                       last_updated_at_checksum=checksum if i < 3 else None) for i in range(4)]
    s.store.set_virtual_refs("virt", specs)
    root.create_array("web", shape=(48,), chunks=(8,), dtype="<i2", compressors=None, fill_value=0)
    web_etag = etag_of(os.path.join(EXT_DIR, "b.bin"))  # quoted, as servers send it
    s.store.set_virtual_refs("web", [icechunk.VirtualChunkSpec(index=[i], location=http_prefix + "b.bin", offset=16 * i, length=16,
                                                               etag_checksum=web_etag if i % 2 == 0 else None) for i in range(6)])
    if full:
        root.create_array("many", shape=(MANY,), chunks=(1,), dtype="<i8", compressors=None, fill_value=0)
        s.store.set_virtual_refs("many", [
            icechunk.VirtualChunkSpec(index=[n], location=FILE_PREFIX + f"many/f{n // 40:02d}.bin", offset=8 * (n % 40), length=8)
            for n in range(MANY)
        ])
    snaps["virtual"] = s.commit("second: virtual chunks")
    repo.create_tag("v1", snapshot_id=snaps["first"])
    repo.create_tag("gone", snapshot_id=snaps["first"])
    repo.delete_tag("gone")
    repo.create_branch("dev", snapshot_id=snaps["virtual"])

    s = repo.writable_session("dev")
    root = zarr.open_group(store=s.store, mode="r+")
    root["native"][0, 0] = -1.0
    root.create_group("devonly").create_array("x", shape=(3,), chunks=(3,), dtype="<u4", compressors=None)[:] = [5, 6, 7]
    del root["small"]
    snaps["dev"] = s.commit("dev: change native, add devonly, drop small")

    s = repo.writable_session("main")
    root = zarr.open_group(store=s.store, mode="r+")
    root.attrs["n"] = 2
    root["grp/sub/temp"][1] = 3.25
    snaps["third"] = s.commit("third: fill temp t=1")
    return snaps


def run(coro):
    return asyncio.run(coro)


async def _walk(store) -> tuple[dict, dict]:
    keys, listings = {}, {}
    proto = default_buffer_prototype()
    all_keys = sorted([k async for k in store.list()])
    for key in all_keys:
        try:
            buf = await store.get(key, proto)
            data = buf.to_bytes()
            size = await store.getsize(key)
            assert size == len(data), key
            keys[key] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            if len(data) <= 64:
                keys[key]["hex"] = data.hex()
        except Exception as exc:  # what the package refuses (checksums, authorisation)
            keys[key] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    dirs = {""}
    for key in all_keys:
        parts = key.split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]))
    for d in sorted(dirs):
        listings[d] = sorted([k async for k in store.list_dir(d)])
    return keys, listings


def arrays_of(store) -> dict:
    out = {}
    try:
        root = zarr.open_group(store=store, mode="r", zarr_format=3)
    except zarr.errors.GroupNotFoundError:  # the initial, empty snapshot
        return out
    for path, arr in root.members(max_depth=None):
        if isinstance(arr, zarr.Array):
            try:
                values = arr[...]
                out[path] = {"dtype": str(values.dtype), "shape": list(values.shape),
                             "values": np.where(np.isnan(values), None, values).tolist() if values.dtype.kind == "f" else values.tolist()}
            except Exception as exc:
                out[path] = {"error": type(exc).__name__}
    return out


def record(repo_dir: str, http_prefix: str) -> dict:
    storage = icechunk.local_filesystem_storage(repo_dir)
    repo = icechunk.Repository.open(storage, config=config_for(http_prefix), authorize_virtual_chunk_access=authorize(http_prefix))
    answer = {"spec_version": int(repo.spec_version), "branches": {}, "tags": {}, "snapshots": {}, "deleted_tags": []}
    for name in sorted(repo.list_branches()):
        answer["branches"][name] = repo.lookup_branch(name)
    for name in sorted(repo.list_tags()):
        answer["tags"][name] = repo.lookup_tag(name)
    ancestry = {}
    for branch in answer["branches"]:
        for info in repo.ancestry(branch=branch):
            ancestry[info.id] = {"parent": info.parent_id, "message": info.message}
    answer["history"] = ancestry
    for snap in sorted(ancestry):
        session = repo.readonly_session(snapshot_id=snap)
        keys, listings = run(_walk(session.store))
        answer["snapshots"][snap] = {"keys": keys, "listings": listings, "arrays": arrays_of(session.store)}
    return answer


def create(path: str, http_prefix: str, spec_version: int, full: bool) -> dict:
    shutil.rmtree(path, ignore_errors=True)
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(path), config=config_for(http_prefix),
                                      authorize_virtual_chunk_access=authorize(http_prefix), spec_version=spec_version)
    repo.save_config()
    return populate(repo, http_prefix, full)


def main() -> None:
    write_originals()
    with RangeServer(EXT_DIR) as server:
        http_prefix = server.url + "/"
        out = {"file_prefix": FILE_PREFIX, "http_prefix": http_prefix, "ext_mtime": EXT_MTIME, "icechunk": icechunk.__version__,
               "zarr": zarr.__version__, "repos": {}}
        snaps = create(os.path.join(HERE, "v2"), http_prefix, 2, full=True)
        out["repos"]["v2"] = record(os.path.join(HERE, "v2"), http_prefix) | {"named": snaps}
        snaps = create(os.path.join(HERE, "v1"), http_prefix, 1, full=False)
        out["repos"]["v1"] = record(os.path.join(HERE, "v1"), http_prefix) | {"named": snaps}
        migrated = os.path.join(HERE, "migrated")
        shutil.rmtree(migrated, ignore_errors=True)
        shutil.copytree(os.path.join(HERE, "v1"), migrated)
        repo = icechunk.Repository.open(icechunk.local_filesystem_storage(migrated), config=config_for(http_prefix),
                                         authorize_virtual_chunk_access=authorize(http_prefix))
        icechunk.upgrade_icechunk_repository(repo, dry_run=False)
        out["repos"]["migrated"] = record(migrated, http_prefix) | {"named": snaps}
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()

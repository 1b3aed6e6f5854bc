"""Write ``written_by_1x/`` (with the icechunk 1.x package: spec v1, as the last series that
writes it natively does) or ``written_by_2x/`` (with 2.x: spec v2 and the operations it adds),
and the answers that package gives for them. The other fixtures are written by ``generate.py``.

Needs ``icechunk`` and ``zarr`` 3::

    python3.11 -m venv /tmp/ic1 && /tmp/ic1/bin/pip install 'icechunk<2' zarr numcodecs
    /tmp/ic1/bin/python tests/data/icechunk/generate_written.py
    python3.12 -m venv /tmp/ic && /tmp/ic/bin/pip install 'icechunk>=2,<3' zarr numcodecs
    /tmp/ic/bin/python tests/data/icechunk/generate_written.py

What each holds: chunks compressed (zstd, the default), uncompressed and inline; a chunk never
written; nested groups; fixed-length strings and booleans; virtual chunks in a local file
(``ext/a.bin``, declared under ``EXT_PREFIX``: tests relocate it); manifests split (two chunks
per manifest along every dimension); an array resized; a branch that deletes a group; a tag;
four commits. 2.x also: an amended commit, a group moved, an array shifted, a branch reset,
manifests rewritten. Then every snapshot but those of branch and tag tips expired (and, 2.x,
garbage collected). ``expected.json``: for ``main``, ``dev``, ``t1`` and one kept snapshot, each
key's SHA-256 (or the error the package raised), and the values of main's arrays.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import shutil

import numpy as np

os.environ.setdefault("ICECHUNK_LOG", "error")

import icechunk  # noqa: E402
import icechunk.credentials  # noqa: E402
import zarr  # noqa: E402
from zarr.core.buffer import default_buffer_prototype  # noqa: E402

MAJOR = int(icechunk.__version__.split(".")[0])
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"written_by_{MAJOR}x")
EXT_DIR = f"/tmp/refmount-icechunk-{MAJOR}x-fixture/ext"
EXT_PREFIX = f"file://{EXT_DIR}/"


def write() -> dict:
    shutil.rmtree(HERE, ignore_errors=True)
    shutil.rmtree(EXT_DIR, ignore_errors=True)
    os.makedirs(EXT_DIR)
    with open(os.path.join(EXT_DIR, "a.bin"), "wb") as f:
        f.write(b"HDR!" + np.arange(64, dtype="<f4").tobytes())
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(icechunk.VirtualChunkContainer(EXT_PREFIX, icechunk.local_filesystem_store(EXT_DIR)))
    config.inline_chunk_threshold_bytes = 64
    config.manifest = icechunk.ManifestConfig(splitting=icechunk.ManifestSplittingConfig.from_dict(
        {icechunk.ManifestSplitCondition.AnyArray(): {icechunk.ManifestSplitDimCondition.Any(): 2}}))
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(os.path.join(HERE, "repo")), config=config,
                                      authorize_virtual_chunk_access={EXT_PREFIX: getattr(icechunk.credentials, "LocalFileSystemAccess", None)})
    repo.save_config()

    s = repo.writable_session("main")
    root = zarr.group(store=s.store, zarr_format=3, attributes={"title": "written by icechunk 1.x"})
    a = root.create_array("a", shape=(10, 12), chunks=(3, 5), dtype="<i4", fill_value=-1, dimension_names=["y", "x"])
    a[:] = np.arange(120, dtype="<i4").reshape(10, 12)
    b = root.create_array("b", shape=(7,), chunks=(2,), dtype="<f8", compressors=None, fill_value=np.nan)
    b[:5] = np.arange(5.0)  # the last chunk never written
    c = root.create_group("g/h").create_array("c", shape=(2, 2), chunks=(1, 1), dtype="bool", fill_value=False)
    c[:] = [[True, False], [False, True]]
    root.create_array("s", shape=(3,), chunks=(3,), dtype="<U4", fill_value="")[:] = ["a", "bb", "ccc"]
    first = s.commit("one")

    s = repo.writable_session("main")
    root = zarr.open_group(store=s.store, mode="r+")
    root.create_array("v", shape=(64,), chunks=(16,), dtype="<f4", compressors=None, fill_value=0)
    s.store.set_virtual_refs("v", [icechunk.VirtualChunkSpec(index=[i], location=EXT_PREFIX + "a.bin", offset=4 + 64 * i,
                                                             length=64) for i in range(4)])
    root["a"].resize((12, 12))
    root["a"][10:] = 7
    root.attrs["n"] = 2
    second = s.commit("two")
    repo.create_tag("t1", snapshot_id=first)
    repo.create_branch("dev", snapshot_id=second)

    s = repo.writable_session("dev")
    root = zarr.open_group(store=s.store, mode="r+")
    del root["g"]
    root["b"][6] = 9.0
    s.commit("three")

    s = repo.writable_session("main")
    zarr.open_group(store=s.store, mode="r+")["b"][:] = 1.5
    s.commit("four")
    if MAJOR >= 2:  # what spec v2 adds: amend, move, shift, reset, manifests rewritten
        s = repo.writable_session("main")
        zarr.open_group(store=s.store, mode="r+")["b"][0] = 41.0
        s.commit("b[0]")
        s = repo.writable_session("main")
        zarr.open_group(store=s.store, mode="r+")["b"][0] = 42.0
        s.amend("b[0], amended")
        s = repo.rearrange_session("main")
        s.move("/g", "/moved")
        s.commit("g moved")
        s = repo.writable_session("main")
        s.shift_array("/a", (1, 0))
        s.commit("a shifted")
        repo.create_branch("reset", snapshot_id=repo.lookup_branch("main"))
        repo.reset_branch("reset", second)
        repo.rewrite_manifests("manifests rewritten", branch="main")
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    repo.expire_snapshots(later)
    if MAJOR >= 2:
        repo.garbage_collect(later)

    async def walk(store) -> dict:
        out = {}
        proto = default_buffer_prototype()
        async for key in store.list():
            try:
                out[key] = hashlib.sha256((await store.get(key, proto)).to_bytes()).hexdigest()
            except Exception as exc:
                out[key] = f"error: {type(exc).__name__}"
        return out

    answers = {}
    for name, kw in {"@branch.main": {"branch": "main"}, "@branch.dev": {"branch": "dev"}, "@tag.t1": {"tag": "t1"},
                     f"@{second}": {"snapshot_id": second},
                     **({"@branch.reset": {"branch": "reset"}} if MAJOR >= 2 else {})}.items():
        answers[name] = asyncio.run(walk(repo.readonly_session(**kw).store))
    main = zarr.open_group(store=repo.readonly_session(branch="main").store, mode="r")
    values = {path: np.asarray(arr[...]).tolist() for path, arr in main.members(max_depth=None) if isinstance(arr, zarr.Array)}
    shutil.copytree(EXT_DIR, os.path.join(HERE, "ext"))
    return {"icechunk": icechunk.__version__, "spec_version": MAJOR, "zarr": zarr.__version__, "ext_prefix": EXT_PREFIX, "answers": answers,
            "values": values}


if __name__ == "__main__":
    out = write()
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")

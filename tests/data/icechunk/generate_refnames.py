"""Write the ref-name fixture repositories: branches and tags whose names hold '/', spaces and
non-ASCII letters, in spec v1 and spec v2, each ref at its own commit with its own values (spec v1 allows no '/': those names are v2's).

Needs Python >= 3.12 with ``icechunk`` 2.x and ``zarr`` 3 (the suite itself does not)::

    python3.12 -m venv /tmp/ic && /tmp/ic/bin/pip install icechunk zarr numcodecs
    /tmp/ic/bin/python tests/data/icechunk/generate_refnames.py

Writes ``refnames/v1/``, ``refnames/v2/`` and ``refnames/expected.json``: for each spec version,
each branch and tag, the values of ``v`` the icechunk package reads at that ref.
"""

from __future__ import annotations

import json
import os
import shutil

import icechunk
import numpy as np
import zarr

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "refnames")
BRANCHES = ["feature/x", "v1/rc", "feature/deep/er", "ünïcode", "with space"]
TAGS = ["rel/1.0", "tag ü"]


def create(path: str, spec_version: int) -> dict:
    """Spec v1 allows no '/' in a ref name (the package refuses it): those are v2 only."""
    branches = [b for b in BRANCHES if spec_version >= 2 or "/" not in b]
    tags = [t for t in TAGS if spec_version >= 2 or "/" not in t]
    shutil.rmtree(path, ignore_errors=True)
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(path), spec_version=spec_version)
    session = repo.writable_session("main")
    zarr.create_array(session.store, name="v", shape=(4,), chunks=(2,), dtype="i4", fill_value=0)[:] = np.arange(4)
    base = session.commit("base")
    for n, name in enumerate(branches, start=1):
        repo.create_branch(name, base)
        session = repo.writable_session(name)
        zarr.open_array(session.store, path="v")[:] = np.arange(4) + 10 * n
        session.commit(f"on {name}")
    for n, name in enumerate(tags, start=1):
        repo.create_tag(name, repo.lookup_branch(branches[n - 1]))
    answer: dict = {"branches": {}, "tags": {}}
    for name in ["main", *branches]:
        answer["branches"][name] = zarr.open_array(repo.readonly_session(branch=name).store, path="v")[...].tolist()
    for name in tags:
        answer["tags"][name] = zarr.open_array(repo.readonly_session(tag=name).store, path="v")[...].tolist()
    return answer


def main() -> None:
    os.makedirs(HERE, exist_ok=True)
    expected = {f"v{spec}": create(os.path.join(HERE, f"v{spec}"), spec) for spec in (1, 2)}
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()

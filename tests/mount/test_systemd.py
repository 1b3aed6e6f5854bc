"""The shipped units pass ``systemd-analyze verify`` without a single warning."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

REFMOUNT = str(Path(sys.executable).parent / "refmount")
UNITS = [
    (ROOT / "systemd" / "refmount@.service", "/usr/local/bin/refmount", []),
    (ROOT / "systemd" / "user" / "refmount@.service", "%h/.local/bin/refmount", ["--user"]),
]


@pytest.mark.parametrize("unit, binary, scope", UNITS, ids=["system", "user"])
def test_unit_verifies_cleanly(tmp_path, unit, binary, scope):
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing (scripts/dev.sh installs it)"
    text = unit.read_text()
    assert binary in text and "Type=notify" in text and "ExecReload=" in text
    assert "fusermount3 -uz %f" in text.split("ExecStopPost=-", 1)[1].splitlines()[0]
    for option in ("PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateDevices", "PrivateMounts", "ReadOnlyPaths"):
        assert f"\n{option}=" not in text  # a mount namespace would hide the mount
    # the instance the docs show, with ExecStart pointing at this test's refmount
    instance = tmp_path / "refmount@mnt-data.service"
    instance.write_text(text.replace(binary, REFMOUNT))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        ["systemd-analyze", *scope, "verify", "--man=no", str(instance)],
        capture_output=True,
        text=True,
        env=dict(os.environ, XDG_RUNTIME_DIR=str(runtime)),
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr

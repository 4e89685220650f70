"""deploy/holdgate.service is a unit systemd accepts: `systemd-analyze verify` finds nothing to say about it.

verify exits 0 even for lines it ignores (an unknown key, a misspelt value), so its output must be empty too.
It also checks that ExecStart's program exists: the unit's install path (/opt/holdgate/venv) is replaced by
the environment running the tests, where `holdgate` is installed; every other line is verified as written.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.harness import ROOT

UNIT = ROOT / "deploy" / "holdgate.service"
INSTALLED_AT = "/opt/holdgate/venv/bin/holdgate"


def test_the_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not on PATH (no systemd here): the unit is not verified")
    holdgate = Path(sys.executable).parent / "holdgate"
    if not holdgate.exists():
        pytest.skip(f"no holdgate script beside {sys.executable} (pip install -e .) for the unit's ExecStart")
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={INSTALLED_AT} serve" in text
    unit = tmp_path / "holdgate.service"
    unit.write_text(text.replace(INSTALLED_AT, str(holdgate)), encoding="utf-8")
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr + done.stdout

"""Tests that need the real data find it through $EDGE_VOS_DATA as well as ../shared/data, and say which
folder they looked at (issue #13)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DAVIS

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/test_data_davis.py::test_reads_shared_davis2016"


def _pytest(env_data: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGE_VOS_DATA"}
    if env_data is not None:
        env["EDGE_VOS_DATA"] = str(env_data)
    return subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", TEST], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def test_an_empty_data_folder_is_named_in_the_skip_reason(tmp_path: Path) -> None:
    proc = _pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "1 skipped" in proc.stdout
    assert f"DAVIS-2016 not found at {tmp_path / 'davis2016'} ($EDGE_VOS_DATA)" in proc.stdout
    assert f"edge-vos test data: {tmp_path} ($EDGE_VOS_DATA)" in proc.stdout


def test_data_elsewhere_is_found_through_the_variable(tmp_path: Path) -> None:
    if not DAVIS.is_dir():
        pytest.skip(f"no DAVIS-2016 to point at ({DAVIS})")
    (tmp_path / "davis2016").symlink_to(DAVIS)
    proc = _pytest(tmp_path)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout
    assert f"edge-vos test data: {tmp_path} ($EDGE_VOS_DATA); DAVIS-2016 present" in proc.stdout

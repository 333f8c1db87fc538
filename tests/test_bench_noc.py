"""tools/bench_noc.py compare: win counts between two result files, whatever their click counts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tools.bench_noc import compare


def _result(path: Path, name: str, box: list[float], clicks: int) -> str:
    rows = [{"name": f"obj{i}", "index": i, "box": b, "box_jitter": b,
             "stateless": [b / 2] * clicks, "corrective": [b / 2 + 0.01 * k for k in range(clicks)]}
            for i, b in enumerate(box)]
    path.write_text(json.dumps({"set": "coco", "name": name, "max_clicks": clicks, "per_object": rows}))
    return str(path)


def test_compare_counts_wins_per_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _result(tmp_path / "a.json", "a", [0.5, 0.6, 0.7], 3)
    after = _result(tmp_path / "b.json", "b", [0.6, 0.6, 0.5], 3)
    compare(argparse.Namespace(files=[before, after]))
    out = capsys.readouterr().out
    assert "box: b wins 1, ties 1, loses 1 of 3 objects" in out
    assert "click3 corrective: b wins 1, ties 1, loses 1 of 3 objects" in out


def test_compare_a_one_click_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --max-clicks 1 file (box and first click only) compares on those alone, not with an IndexError."""
    before = _result(tmp_path / "a.json", "a", [0.5, 0.6], 1)
    after = _result(tmp_path / "b.json", "b", [0.7, 0.4], 3)
    compare(argparse.Namespace(files=[before, after]))
    out = capsys.readouterr().out
    assert "box: b wins 1, ties 0, loses 1 of 2 objects" in out
    assert "click1:" in out and "corrective" not in out

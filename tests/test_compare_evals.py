"""tools/compare_evals.py: per-sequence table and win counts from `edge-vos eval` outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.compare_evals import main, sequence_scores


def _metrics(folder: Path, scores: dict[str, float]) -> Path:
    folder.mkdir(parents=True)
    sequences = {name: {"J&F": value, "frames": 10} for name, value in scores.items()}
    sequences["unscored"] = {"frames": 3, "fps": None}
    (folder / "metrics.json").write_text(json.dumps({"J&F": 0, "sequences": sequences}))
    return folder


def test_wins_and_losses_are_counted_per_sequence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _metrics(tmp_path / "ref", {"a": 50.0, "b": 60.0, "c": 70.0})
    new = _metrics(tmp_path / "new", {"a": 55.0, "b": 60.05, "c": 40.0})
    assert sequence_scores(ref) == {"a": 50.0, "b": 60.0, "c": 70.0}
    assert main([str(ref), str(new), "--label", "old", "--label", "new"]) == 0
    out = capsys.readouterr().out
    assert "| a | 50.0 | 55.0 |" in out and "**60.00**" in out and "**51.68**" in out
    assert out.strip().endswith("| — | 1 / 1 |")  # a wins, b is a tie, c loses


def test_a_folder_without_metrics_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 2
    assert "metrics.json not found" in capsys.readouterr().err

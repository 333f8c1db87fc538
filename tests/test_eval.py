"""`edge-vos eval` end to end on a synthetic DAVIS-layout folder written in a tmp dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_vos.cli import main as cli_main
from edge_vos.data.davis import davis_sequences, read_mask, write_mask
from edge_vos.data.synthetic import write_synthetic_davis
from edge_vos.evaluation.runner import evaluate, track_sequence, write_report


class _Result:
    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels


class CopyTracker:
    """Repeats the last prompt: must score exactly like the first-frame-copy baseline."""

    def __init__(self) -> None:
        self.prompts: list[list[int] | None] = []
        self.labels: np.ndarray | None = None

    def reset(self) -> None:
        self.labels = None

    def step(
        self, image: np.ndarray, mask: np.ndarray | None = None, objects: list[int] | None = None
    ) -> _Result:
        self.prompts.append(objects)
        if mask is not None:
            self.labels = mask if self.labels is None else np.where(np.isin(mask, objects), mask, self.labels)
        assert self.labels is not None
        return _Result(self.labels.copy())


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_davis(root, 2, seed=1, num_frames=6, size=(64, 96), num_objects=2, num_distractors=1)
    return root


def test_tracker_loop_matches_the_baseline(synth_root: Path, tmp_path: Path) -> None:
    seqs = davis_sequences(synth_root, "val", res="64p")
    tracker = CopyTracker()
    by_tracker = evaluate(seqs, tmp_path / "t", tracker, progress=False)
    by_baseline = evaluate(seqs, tmp_path / "b", baseline="first-frame-copy", progress=False)
    assert by_tracker.summary()["J&F"] == pytest.approx(by_baseline.summary()["J&F"])
    assert by_tracker.seconds > 0 and by_baseline.seconds == 0
    # Only frame 0 is a prompt in the DAVIS protocol.
    assert tracker.prompts[:6] == [[1, 2], None, None, None, None, None]
    written = read_mask(tmp_path / "t" / "synth-001" / "00005.png")
    np.testing.assert_array_equal(written, seqs[1].mask(0))


def test_ground_truth_scores_100(synth_root: Path, tmp_path: Path) -> None:
    seqs = davis_sequences(synth_root, "val", res="64p")

    class Oracle(CopyTracker):
        def __init__(self) -> None:
            super().__init__()
            self.frames = iter(np.concatenate([s.all_masks() for s in seqs]))

        def step(self, image, mask=None, objects=None):  # type: ignore[no-untyped-def]
            return _Result(next(self.frames))

    report = evaluate(seqs, tmp_path, Oracle(), progress=False)
    data = write_report(report, tmp_path, {"method": "oracle"})
    assert data["J&F"] == 100.0 and data["J"] == 100.0 and data["F"] == 100.0
    assert set(data["sequences"]) == {"synth-000", "synth-001"}
    rows = (tmp_path / "per-sequence.csv").read_text().splitlines()
    assert rows[0].startswith("Sequence,J&F-Mean,J-Mean") and len(rows) == 1 + 2 * 2  # one row per object


def test_new_objects_prompted_where_they_appear(tmp_path: Path) -> None:
    from PIL import Image

    from edge_vos.data.davis import youtube_vos_sequences

    base = tmp_path / "valid"
    (base / "JPEGImages" / "v").mkdir(parents=True)
    for stem in ("00000", "00005", "00010"):
        Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(base / "JPEGImages" / "v" / f"{stem}.jpg")
    first = np.zeros((8, 10), np.uint8)
    first[:2, :2] = 1
    later = first.copy()
    later[5:, 5:] = 2
    write_mask(base / "Annotations" / "v" / "00000.png", first)
    write_mask(base / "Annotations" / "v" / "00005.png", later[:, :9])  # one pixel narrow, like real data
    (seq,) = youtube_vos_sequences(tmp_path, "valid")
    tracker = CopyTracker()
    labels, _ = track_sequence(tracker, seq, prompts="new-objects")
    assert tracker.prompts == [[1], [2], None]
    assert labels.shape == (3, 8, 10) and set(np.unique(labels[2])) == {0, 1, 2}


def test_cli_baseline_writes_masks_csv_and_json(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["eval", "--data", str(synth_root), "--split", "val", "--res", "64p", "--out", str(out)]
    assert cli_main([*argv, "--baseline", "first-frame-copy", "--no-progress", "--max-sequences", "1"]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["method"] == "first-frame-copy" and list(data["sequences"]) == ["synth-000"]
    assert 0 < data["J&F"] < 100
    assert sorted(p.name for p in (out / "synth-000").iterdir())[:2] == ["00000.png", "00001.png"]
    assert (out / "per-sequence.csv").is_file()
    assert cli_main(["eval", "--data", str(tmp_path), "--split", "val", "--out", str(out)]) == 2


def test_cli_config_composition(tmp_path: Path) -> None:
    import argparse

    from edge_vos.config import ConfigError
    from edge_vos.evaluation.cli import add_arguments, tracker_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    yaml_file = tmp_path / "t.yaml"
    yaml_file.write_text("resolution: 240\nmemory:\n  capacity: 6\n")
    base = ["--data", "x", "--split", "v", "--out", "o", "--config", str(yaml_file)]
    config = tracker_config(parser.parse_args([*base, "--readout", "stcn", "--weights", "w.safetensors"]))
    assert (config.resolution, config.memory.capacity, config.readout.kind) == (240, 6, "stcn")
    assert config.model.weights == "w.safetensors"
    yaml_file.write_text("readout: {kind: tmrn, tmrn: {agents: 32}}\n")
    assert tracker_config(parser.parse_args([*base, "--readout", "stcn"])).readout.tmrn is None  # replaced
    official = tracker_config(parser.parse_args([*base, "--official-stcn"]))
    assert official.readout.kind == "stcn" and official.readout.stcn is not None and official.readout.stcn.top_k == 20
    assert official.memory.unbounded and official.memory.mem_every == 5 and official.resolution == 360
    with pytest.raises(ConfigError):
        tracker_config(parser.parse_args([*base, "--official-stcn", "--readout", "tmrn"]))


@pytest.mark.parametrize("mode", [["--readout", "tmrn"], ["--official-stcn"]])
def test_cli_runs_the_real_tracker(synth_root: Path, tmp_path: Path, mode: list[str]) -> None:
    out = tmp_path / "out"
    argv = ["eval", "--data", str(synth_root), "--split", "val", "--res", "64p", "--out", str(out)]
    argv += ["--random-network", "--resolution", "64", "--device", "cpu", "--no-progress", *mode]
    assert cli_main(argv) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["random_network"] is True and data["fps"] > 0
    assert 0 <= data["J&F"] <= 100
    assert len(list((out / "synth-001").glob("*.png"))) == 6


# ---- rough edges a first user meets (issue #13) ----------------------------------------------------

def test_a_missing_data_folder_is_named_as_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    argv = ["eval", "--data", str(tmp_path / "no-such-folder"), "--split", "val-dev", "--out", str(tmp_path / "o"),
            "--baseline", "first-frame-copy"]
    assert cli_main(argv) == 2
    assert f"data folder {tmp_path / 'no-such-folder'} does not exist" in caplog.text
    assert "give the year" not in caplog.text
    (tmp_path / "empty").mkdir()
    assert cli_main([*argv[:2], str(tmp_path / "empty"), *argv[3:]]) == 2
    assert "is not a DAVIS dataset: it has no ImageSets folder" in caplog.text


def test_sequences_option_picks_named_sequences(synth_root: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    argv = ["eval", "--data", str(synth_root), "--split", "val", "--res", "64p", "--out", str(out),
            "--baseline", "first-frame-copy", "--no-progress"]
    assert cli_main([*argv, "--sequences", "synth-001"]) == 0
    assert list(json.loads((out / "metrics.json").read_text())["sequences"]) == ["synth-001"]
    assert cli_main([*argv, "--sequences", "synth-001,dog"]) == 2
    assert "['dog'] not in split val" in caplog.text and "synth-000" in caplog.text


def test_eval_defaults_to_the_shipped_cpu_config(tmp_path: Path) -> None:
    """Without --config, eval runs TrackerConfig's defaults, which are configs/cpu.yaml's tracker; no file is
    looked up next to the package."""
    import argparse

    from edge_vos.evaluation.cli import add_arguments, tracker_config
    from edge_vos.tracker.config import TrackerConfig

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--data", "x", "--split", "v", "--out", "o"]
    shipped = TrackerConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "cpu.yaml")
    assert tracker_config(parser.parse_args(base)) == shipped == TrackerConfig()
    assert tracker_config(parser.parse_args([*base, "--resolution", "320"])).resolution == 320
    assert tracker_config(parser.parse_args([*base, "--config", "none"])) == TrackerConfig()

"""`edge-vos bench`: stream loop, statistics, CSV and plot, with a stand-in tracker and the real one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_vos.evaluation.bench import StreamRecord, pingpong, plot, read_csv, run_stream, write_csv


class _Memory:
    def __init__(self) -> None:
        self.num_valid = 0

    def nbytes(self) -> int:
        return 1000 * self.num_valid


class _Result:
    def __init__(self, labels: np.ndarray, timings: dict[str, float]) -> None:
        self.labels = labels
        self.timings_ms = timings


class GrowingTracker:
    """Writes every 5th frame to a memory that never shrinks (like official STCN)."""

    def __init__(self) -> None:
        self.memory = _Memory()
        self.n = 0

    def reset(self) -> None:
        self.memory.num_valid = 0
        self.n = 0

    def step(self, image: np.ndarray, mask: np.ndarray | None = None, objects: list[int] | None = None) -> _Result:
        if self.n % 5 == 0:
            self.memory.num_valid += 1
        self.n += 1
        t = {"key_encode": 1.0, "readout": 0.1 * self.memory.num_valid, "total": 1.0 + 0.1 * self.memory.num_valid}
        return _Result(np.zeros(image.shape[:2], np.uint8), t)


def test_pingpong_loops_without_jumps() -> None:
    assert pingpong(4, 10).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert pingpong(1, 3).tolist() == [0, 0, 0]
    assert np.abs(np.diff(pingpong(7, 100))).max() == 1


def test_run_stream_records_and_summarises(tmp_path: Path) -> None:
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    record = run_stream(GrowingTracker(), frames, np.ones((8, 8), np.uint8), 60, "official-stcn", progress=False)
    assert len(record.wall_ms) == 60 and record.memory_slots[-1] == 12
    s = record.summary()
    assert s["frames"] == 60 and s["memory_last_mib"] > s["memory_first_mib"]
    assert s["stages_ms"]["readout"]["p99"] >= s["stages_ms"]["readout"]["p50"]
    assert s["stages_ms"]["decode"]["p50"] == 0.0  # stages a tracker does not report count as 0
    assert s["rss_peak_mib"] > 0 and s["fps"] > 0
    write_csv(record, tmp_path / "m.csv")
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert len(lines) == 61 and lines[0].startswith("frame,wall_ms,preprocess_ms")
    again = read_csv(tmp_path / "m.csv", "official-stcn")
    assert again.memory_slots == record.memory_slots and len(again.timings["readout"]) == 60
    flat = StreamRecord("ring", {"total": [1.0] * 60}, [1.0] * 60, [2**20] * 60, [2**20] * 60, [4] * 60)
    plot([flat, record], tmp_path / "p.png", "test")
    assert (tmp_path / "p.png").stat().st_size > 1000
    json.dumps(s)  # the summary is plain data


def test_bench_cli_on_a_synthetic_clip(tmp_path: Path) -> None:
    from edge_vos.cli import main as cli_main

    argv = [
        "bench",
        "--frames",
        "8",
        "--clip-frames",
        "4",
        "--resolution",
        "64",
        "--random-network",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
        "--plot",
        str(tmp_path / "l.png"),
        "--no-progress",
    ]
    assert cli_main(argv) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    ring, unbounded = data["modes"]
    assert ring["mode"] == "ring" and unbounded["mode"] == "unbounded"
    assert unbounded["memory_slots_last"] >= ring["memory_slots_last"]
    # The default compares one readout under two memory policies: nothing else differs.
    configs = data["setup"]["configs"]
    assert configs["ring"]["readout"] == configs["unbounded"]["readout"]
    differ = {k for k in configs["ring"] if configs["ring"][k] != configs["unbounded"][k]}
    assert differ == {"memory"}
    assert configs["unbounded"]["memory"]["unbounded"] and not configs["ring"]["memory"]["unbounded"]
    assert (tmp_path / "ring.csv").is_file() and (tmp_path / "l.png").is_file()

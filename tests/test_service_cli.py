"""`edge-vos run` options as a first user meets them (issue #13 item 5 and the rough edges)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_vos.run_cli import add_arguments, overrides_from_args

ROOT = Path(__file__).resolve().parents[1]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_file_or_folder_on_the_command_line_is_processed_once_every_frame(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # only its existence matters here
    folder = tmp_path / "frames"
    folder.mkdir()
    for source in (str(video), str(folder)):
        overrides = overrides_from_args(_args("--source", source))
        assert overrides["source.pace"] == "fastest" and overrides["source.loop"] is False
        asked = overrides_from_args(_args("--source", source, "--pace", "realtime", "--loop"))
        assert asked["source.pace"] == "realtime" and asked["source.loop"] is True
    for live in ("0", "/dev/video0", "rtsp://camera/stream", "synthetic:seed=2"):
        overrides = overrides_from_args(_args("--source", live))
        assert "source.pace" not in overrides and "source.loop" not in overrides, live
    assert overrides_from_args(_args("--no-loop"))["source.loop"] is False
    assert "source.loop" not in overrides_from_args(_args())


def test_the_documented_file_example_with_the_camera_config(tmp_path: Path) -> None:
    """`edge-vos run --config configs/cpu.yaml --source FOLDER`: the config says realtime and loop (a camera);
    the folder is still processed once, every frame, and the run ends by itself."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):
        image = np.full((96, 128, 3), 30 + 10 * i, np.uint8)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), image)
    mask = np.zeros((96, 128), np.uint8)
    mask[20:50, 30:70] = 1
    cv2.imwrite(str(tmp_path / "first.png"), mask)
    argv = ["run", "--config", "configs/cpu.yaml", "--source", str(folder),
            "--prompt-mask", str(tmp_path / "first.png"), "--weights", "random",
            "--set", "tracker.model.arch=stcn-r18-lite", "--resolution", "64",
            "--publish", "tcp://127.0.0.1:*", "--control", "none", "--set", "pipeline.torch_threads=1"]
    proc = subprocess.run([sys.executable, "-m", "edge_vos.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "pace fastest, no loop" in proc.stderr
    assert "source ended after 12 processed frames" in proc.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from edge_vos import __version__
    from edge_vos.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"edge-vos {__version__}"


def test_ctl_subcommand_drives_a_running_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from edge_vos.cli import main
    from edge_vos.data.davis import write_mask

    from .fakes import ArrayReader, FakeTracker
    from .service_support import H, W, first_mask, frames, running, service_config, wait_for

    config = service_config(source={"pace": "realtime", "fps": 50, "loop": True})
    with running(config, ArrayReader(frames(20), mask=first_mask()), FakeTracker()) as service:
        endpoint = ["ctl", "--endpoint", service.control.last_endpoint, "--timeout", "3"]

        def ctl(*argv: str) -> tuple[int, dict]:
            rc = main([*endpoint, *argv])
            out = capsys.readouterr().out
            return rc, json.loads(out) if out.strip() else {}

        wait_for(lambda: ctl("stats")[1]["stats"]["frames_processed"] > 0)
        assert ctl("ping") == (0, {"ok": True, "pong": True, "req": 1})
        rc, reply = ctl("add-box", "2", "60", "60", "100", "100", "--method", "grabcut")
        assert rc == 0 and reply["id"] == 2 and reply["area"] > 0
        rc, reply = ctl("add-points", "3", "20,90", "30,100,0", "--method", "grabcut")
        assert rc == 0 and reply["id"] == 3
        rc, reply = ctl("add-polygon", "4", "120,10", "150,10", "150,40")
        assert rc == 0 and reply["area"] > 300
        mask = np.zeros((H, W), np.uint8)
        mask[90:110, 120:150] = 1
        write_mask(tmp_path / "m.png", mask)
        rc, reply = ctl("add-mask", "5", str(tmp_path / "m.png"), "--encoding", "rle")
        assert rc == 0 and reply["area"] == 600
        rc, reply = ctl("remove", "9")
        assert rc == 1 and reply["ok"] is False and "unknown object id 9" in reply["error"]
        rc, reply = ctl("send", '{"cmd": "remove", "id": 2}')
        assert rc == 0 and 2 not in reply["objects"]
        assert ctl("stats")[1]["stats"]["objects"] == [1, 3, 4, 5]
        assert ctl("add-polygon", "6", "1,2,3")[0] == 2  # bad arguments
        assert ctl("add-mask", "6", str(tmp_path / "none.png"))[0] == 2
        assert ctl("send", "[1, 2]")[0] == 2
    rc = main(["ctl", "--endpoint", "tcp://127.0.0.1:9", "--timeout", "0.3", "ping"])
    assert rc == 1 and "did not answer" in capsys.readouterr().out

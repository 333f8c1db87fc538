"""ServiceConfig: the bundled configs validate, errors name dotted fields, command-line overrides apply."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from edge_vos.config import ConfigError, from_dict, load_yaml
from edge_vos.program import RunConfig
from edge_vos.run_cli import add_arguments, overrides_from_args
from edge_vos.service.config import ServiceConfig
from edge_vos.service.sources import FolderReader, OpenCVReader, SyntheticReader, open_reader
from edge_vos.tracker.config import TrackerConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("cpu.yaml", "jetson.yaml", "desktop-gpu.yaml")


@pytest.mark.parametrize("name", CONFIGS)
def test_bundled_configs_validate(name: str) -> None:
    config = load_yaml(RunConfig, ROOT / "configs" / name)  # a run config: the service's sections and `view:`
    assert isinstance(config.tracker, TrackerConfig)
    assert config.publish.endpoint.startswith("tcp://127.0.0.1:")  # loopback unless deliberately changed
    assert config.control.endpoint.startswith("tcp://127.0.0.1:")


def test_default_config_is_the_bundled_scene() -> None:
    config = load_yaml(RunConfig, ROOT / "configs" / "cpu.yaml")
    reader = open_reader(config.source)
    assert isinstance(reader, SyntheticReader)
    assert config.tracker.model.weights == ""  # the bundled weights


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"source": {"pace": "slow"}}, "source.pace"),
        ({"source": {"fps": 0}}, "source.fps"),
        ({"publish": {"encoding": "bmp"}}, "publish.encoding"),
        ({"publish": {"hwm": "many"}}, "publish.hwm"),
        ({"control": {"history": 0}}, "control.history"),
        ({"tracker": {"readout": {"kind": "magic"}}}, "tracker.readout.kind"),
        ({"tracker": {"max_objects": 300}}, "tracker.max_objects"),
        ({"security": {"curve": True}}, "security.server_secret_key"),
        ({"metrics": {"port": 70000}}, "metrics.port"),
        ({"pipeline": {"frame_queue": 0}}, "pipeline.frame_queue"),
        ({"publish": {"endpoint": "tcp://127.0.0.1:5"}, "control": {"endpoint": "tcp://127.0.0.1:5"}},
         "control.endpoint"),
        ({"sourse": {}}, ""),
    ],
)
def test_errors_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(ServiceConfig, data)
    assert info.value.field == field


def test_command_line_overrides(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([
        "--source", "clip.mp4", "--prompt-mask", "p.png", "--publish", "ipc:///tmp/m", "--control", "none",
        "--max-frames", "7", "--set", "publish.encoding=rle", "--set", "tracker.memory.capacity=12", "--loop",
    ])
    overrides = overrides_from_args(args)
    config = load_yaml(ServiceConfig, None, overrides)
    assert config.source.uri == "clip.mp4" and config.source.loop and config.prompt.mask == "p.png"
    assert config.publish.endpoint == "ipc:///tmp/m" and config.control.endpoint == ""
    assert config.pipeline.max_frames == 7 and config.publish.encoding == "rle"
    assert config.tracker.memory.capacity == 12
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        overrides_from_args(parser.parse_args(["--set", "nonsense"]))


def test_source_uris(tmp_path: Path) -> None:
    from edge_vos.service.config import SourceConfig

    assert isinstance(open_reader(SourceConfig(uri="0")), OpenCVReader)
    assert open_reader(SourceConfig(uri="/dev/video3")).live
    stream = open_reader(SourceConfig(uri="rtsp://user:secret@cam.local/stream"))
    assert stream.live and "secret" not in stream.description
    (tmp_path / "a.jpg").write_bytes(b"")
    assert isinstance(open_reader(SourceConfig(uri=str(tmp_path))), FolderReader)
    with pytest.raises(ConfigError, match="GStreamer"):
        open_reader(SourceConfig(uri="videotestsrc ! appsink"))
    with pytest.raises(ConfigError, match="not a file"):
        open_reader(SourceConfig(uri="/no/such/clip.mp4"))
    with pytest.raises(ConfigError, match="unknown synthetic parameter"):
        open_reader(SourceConfig(uri="synthetic:colour=red"))
    scene = open_reader(SourceConfig(uri="synthetic:seed=1&frames=4&size=64x96&objects=3"))
    scene.open()
    assert scene.read().shape == (64, 96, 3) and set(scene.initial_mask().ravel()) <= {0, 1, 2, 3}


def test_run_reports_config_errors_with_exit_status_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge_vos.cli", "run", "--set", "publish.encoding=bmp"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 2 and "publish.encoding" in result.stderr


def test_json_log_lines() -> None:
    import json
    import logging

    from edge_vos.run_cli import JsonFormatter

    record = logging.LogRecord("edge_vos.service.pipeline", logging.INFO, __file__, 1, "%d frames", (5,), None)
    record.fields = {"frames": 5, "source": "streaming"}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "5 frames" and entry["frames"] == 5 and entry["level"] == "INFO"

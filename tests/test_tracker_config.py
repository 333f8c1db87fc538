"""TrackerConfig: the defaults are the shipped tracker, device configs state only their differences, options
the chosen readout ignores are errors, one loader and one builder with one error handling."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_vos.config import ConfigError, from_dict, load_yaml, to_dict
from edge_vos.tracker.config import TrackerConfig

ROOT = Path(__file__).resolve().parents[1]


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        out.update(_leaves(value, f"{path}.") if isinstance(value, dict) else {path: value})
    return out


def _tracker_section(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "configs" / name).read_text())["tracker"]


def test_the_shipped_cpu_config_states_the_defaults() -> None:
    assert TrackerConfig.from_yaml(ROOT / "configs" / "cpu.yaml") == TrackerConfig()
    defaults = _leaves(to_dict(TrackerConfig()))
    stated = _leaves(_tracker_section("cpu.yaml"))
    assert {k: v for k, v in stated.items() if defaults.get(k) != v} == {}


@pytest.mark.parametrize("name", ["desktop-gpu.yaml", "jetson.yaml"])
def test_device_configs_state_only_their_differences(name: str) -> None:
    defaults = _leaves(to_dict(TrackerConfig()))
    stated = _leaves(_tracker_section(name))
    assert stated and {k: v for k, v in stated.items() if defaults.get(k) == v} == {}
    assert TrackerConfig.from_yaml(ROOT / "configs" / name) != TrackerConfig()


@pytest.mark.parametrize(
    ("readout", "field"),
    [
        ({"kind": "tmrn", "stcn": {"top_k": 20}}, "tracker.readout.stcn"),
        ({"kind": "stcn", "tmrn": {"agents": 64}}, "tracker.readout.tmrn"),
        ({"kind": "tmrn", "top_k": 20}, "tracker.readout"),  # the flat option of before: unknown
        ({"kind": "tmrn", "tmrn": {"svd": "exact"}}, "tracker.readout.tmrn"),  # a reference path, not an option
        ({"kind": "st"}, "tracker.readout.kind"),
    ],
)
def test_options_the_chosen_readout_ignores_are_errors(readout: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(TrackerConfig, {"readout": readout}, "tracker")
    assert info.value.field == field


def test_from_yaml_reads_tracker_and_service_files_with_overrides(tmp_path: Path) -> None:
    tracker_file = tmp_path / "t.yaml"
    tracker_file.write_text("resolution: 240\nreadout: {kind: stcn}\n")
    config = TrackerConfig.from_yaml(tracker_file, {"memory.capacity": 4})
    assert (config.resolution, config.readout.kind, config.memory.capacity) == (240, "stcn", 4)
    assert config.readout.stcn is not None and config.readout.stcn.top_k == 20
    service = TrackerConfig.from_yaml(ROOT / "configs" / "jetson.yaml", {"resolution": 480})
    assert service.backend == "tensorrt" and service.resolution == 480
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracker:\n  memory: {capacity: 1}\nsource: {uri: 5}\n")  # only the tracker section is read
    with pytest.raises(ConfigError) as info:
        TrackerConfig.from_yaml(bad)
    assert info.value.field == "tracker.memory.capacity"
    assert TrackerConfig.from_yaml(None) == TrackerConfig()


def test_official_stcn_replaces_readout_memory_and_prior() -> None:
    config = TrackerConfig(resolution=480).official_stcn()
    assert config.readout.kind == "stcn" and config.readout.stcn is not None and config.readout.stcn.top_k == 20
    assert config.memory.unbounded and config.memory.mem_every == 5 and not config.prior.enabled
    assert config.resolution == 480 and TrackerConfig().readout.kind == "tmrn"


def test_build_tracker_turns_what_cannot_run_into_config_errors(tmp_path: Path) -> None:
    import torch

    from edge_vos.service.config import ServiceConfig
    from edge_vos.service.pipeline import build_tracker as service_build
    from edge_vos.tracker import build_tracker

    missing = dataclasses.replace(TrackerConfig(), model=dataclasses.replace(TrackerConfig().model,
                                                                              weights=str(tmp_path / "no.pt")))
    with pytest.raises(ConfigError, match="no.pt") as info:
        build_tracker(missing)
    assert info.value.field == "model.weights" and "--weights random" in info.value.message
    with pytest.raises(ConfigError) as info:
        service_build(ServiceConfig(tracker=missing))
    assert info.value.field == "tracker.model.weights"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError) as info:
            build_tracker(TrackerConfig(device="cuda"))
        assert info.value.field == "device"


def test_loading_a_service_config_imports_no_torch() -> None:
    """Config modules hold their lists of names themselves (readout/config.py, backends/names.py,
    model/archs.py): reading a run YAML (service + view + ros2 sections) loads no tensor code."""
    code = (
        "import sys\n"
        "from edge_vos.config import load_yaml\n"
        "from edge_vos.run_config import RunConfig\n"
        "for name in ('cpu.yaml', 'desktop-gpu.yaml', 'jetson.yaml'):\n"
        f"    load_yaml(RunConfig, {str(ROOT / 'configs')!r} + '/' + name)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_load_yaml_and_from_yaml_agree_on_a_service_file() -> None:
    from edge_vos.run_config import RunConfig

    assert load_yaml(RunConfig, ROOT / "configs" / "desktop-gpu.yaml").tracker == TrackerConfig.from_yaml(
        ROOT / "configs" / "desktop-gpu.yaml")

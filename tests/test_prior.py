"""The motion prior: windows from previous boxes, and a look-alike far from the object left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_vos.config import ConfigError
from edge_vos.data.synthetic import generate_sequence
from edge_vos.tracker import Tracker, TrackerConfig
from edge_vos.tracker.config import MemoryConfig, PriorConfig, ReadoutConfig
from edge_vos.tracker.prior import MotionPrior


def _probs(h: int, w: int, boxes: list[tuple[int, int, int, int] | None]) -> torch.Tensor:
    out = torch.zeros(len(boxes), 1, h, w)
    for i, box in enumerate(boxes):
        if box is not None:
            y0, y1, x0, x1 = box
            out[i, 0, y0:y1 + 1, x0:x1 + 1] = 0.9
    return out


def test_no_previous_box_means_no_window() -> None:
    prior = MotionPrior(margin=0.5, min_margin_px=4)
    assert torch.equal(prior.windows([1, 2], (20, 30), torch.device("cpu")), torch.ones(2, 1, 20, 30))


def test_window_is_one_on_the_box_and_falls_off_with_distance() -> None:
    prior = MotionPrior(margin=0.5, min_margin_px=1)
    prior.update([7], _probs(40, 60, [(10, 19, 20, 29)]))  # a 10x10 box: width 5 px
    window = prior.windows([7], (40, 60), torch.device("cpu"))[0, 0]
    assert torch.all(window[10:20, 20:30] == 1)
    row = window[15]
    assert row[30] < 1 and row[35] < row[30] and row[59] < 1e-6  # 30 px away = 6 widths
    assert row[19] == row[30]  # symmetric
    assert torch.isclose(row[34], torch.exp(torch.tensor(-0.5 * (5 / 5) ** 2)))


def test_a_lost_object_loses_its_window_and_forget_and_clear_drop_boxes() -> None:
    prior = MotionPrior(margin=0.5, min_margin_px=4)
    prior.update([1, 2], _probs(20, 30, [(2, 5, 2, 5), (10, 15, 10, 20)]))
    prior.update([1, 2], _probs(20, 30, [None, (10, 15, 10, 20)]))
    windows = prior.windows([1, 2], (20, 30), torch.device("cpu"))
    assert torch.all(windows[0] == 1) and windows[1].min() < 1
    prior.forget(2)
    assert torch.all(prior.windows([2], (20, 30), torch.device("cpu")) == 1)
    prior.update([3], _probs(20, 30, [(0, 3, 0, 3)]))
    prior.clear()
    assert torch.all(prior.windows([3], (20, 30), torch.device("cpu")) == 1)


@pytest.mark.parametrize("field", ["margin", "min_margin_px"])
def test_config_rejects_non_positive_widths(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        PriorConfig(**{field: 0})


def _scene_with_a_late_look_alike(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """A synthetic one-object clip; from frame 3 on, an exact copy of the object's first look stands in
    the other half of the frame (a look-alike the prompt frame never showed as background)."""
    frames, labels = generate_sequence(seed=0, num_frames=10, size=(240, 432), num_objects=1, num_distractors=0)
    ys, xs = np.nonzero(labels[0] == 1)
    shape = labels[0, ys.min():ys.max() + 1, xs.min():xs.max() + 1] == 1
    patch = frames[0, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    cy = 120 - shape.shape[0] // 2
    cx = 432 - 10 - shape.shape[1] if xs.mean() < 216 else 10
    frames = frames.copy()
    for frame in frames[3:]:
        frame[cy:cy + shape.shape[0], cx:cx + shape.shape[1]][shape] = patch[shape]
    return frames, labels, shape, (cy, cx)


def test_with_the_prior_the_trained_model_leaves_a_distant_look_alike_alone() -> None:
    """The bundled model matches appearance, so a copy of the object appearing far away scores as the
    object (it takes the whole copy without the prior); the prior keeps the object where it can have moved."""
    frames, labels, shape, (cy, cx) = _scene_with_a_late_look_alike(10)
    config = TrackerConfig(
        resolution=240, device="cpu", readout=ReadoutConfig(kind="stcn"),
        memory=MemoryConfig(capacity=4, mem_every=2, max_pinned=1), prior=PriorConfig(enabled=True),
    )
    tracker = Tracker(config)
    tracker.step(frames[0], labels[0])
    for frame in frames[1:]:
        predicted = tracker.step(frame).labels == 1
    on_copy = predicted[cy:cy + shape.shape[0], cx:cx + shape.shape[1]][shape].mean()
    truth = labels[-1] == 1
    iou = (predicted & truth).sum() / (predicted | truth).sum()
    assert on_copy < 0.05 and iou > 0.9, (on_copy, iou)

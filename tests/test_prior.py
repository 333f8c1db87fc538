"""The motion prior: windows from previous boxes, a look-alike far away left alone, mask pieces that do not fit
the track dropped (`split: track`), a fading object held (`hold`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_vos.config import ConfigError
from edge_vos.data.synthetic import generate_sequence
from edge_vos.tracker import Tracker, TrackerConfig
from edge_vos.tracker.aggregate import soft_aggregate
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
    prior = MotionPrior(PriorConfig(enabled=True, margin=0.5, min_margin_px=4))
    assert torch.equal(prior.windows([1, 2], (20, 30), torch.device("cpu")), torch.ones(2, 1, 20, 30))


def test_window_is_one_on_the_box_and_falls_off_with_distance() -> None:
    prior = MotionPrior(PriorConfig(enabled=True, margin=0.5, min_margin_px=1))
    prior.update([7], _probs(40, 60, [(10, 19, 20, 29)]))  # a 10x10 box: width 5 px
    window = prior.windows([7], (40, 60), torch.device("cpu"))[0, 0]
    assert torch.all(window[10:20, 20:30] == 1)
    row = window[15]
    assert row[30] < 1 and row[35] < row[30] and row[59] < 1e-6  # 30 px away = 6 widths
    assert row[19] == row[30]  # symmetric
    assert torch.isclose(row[34], torch.exp(torch.tensor(-0.5 * (5 / 5) ** 2)))


def test_a_lost_object_loses_its_window_and_forget_and_clear_drop_boxes() -> None:
    prior = MotionPrior(PriorConfig(enabled=True, margin=0.5, min_margin_px=4))
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
        resolution=240, device="cpu", backend="torch", precision="fp32", readout=ReadoutConfig(kind="stcn"),
        memory=MemoryConfig(capacity=4, mem_every=2, max_pinned=1),
        prior=PriorConfig(enabled=True, split="keep", hold=0.0),  # the window alone
    )
    tracker = Tracker(config)
    tracker.step(frames[0], labels[0])
    for frame in frames[1:]:
        predicted = tracker.step(frame).labels == 1
    on_copy = predicted[cy:cy + shape.shape[0], cx:cx + shape.shape[1]][shape].mean()
    truth = labels[-1] == 1
    iou = (predicted & truth).sum() / (predicted | truth).sum()
    assert on_copy < 0.05 and iou > 0.9, (on_copy, iou)


# ---- velocity, split: track, hold ----------------------------------------------------------------------


def _disk(h: int, w: int, cy: float, cx: float, r: float, value: float = 0.9) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).float() * value


def _run_look_alike_pass(split: str) -> list[torch.Tensor]:
    """An object stands still at the left; a look-alike slides in from the right, overlaps it, and leaves
    on the other side. The matcher (scripted) paints both wherever the window lets it. Returns the
    object's mask after each frame."""
    h, w, r = 60, 200, 10
    prior = MotionPrior(PriorConfig(enabled=True, margin=0.5, min_margin_px=4, split=split))
    masks = []
    for t in range(30):
        look_alike_x = 150 - 4 * t  # 150 -> 34: overlaps the object (x = 60) around t = 20-26, then past
        matcher = torch.maximum(_disk(h, w, 30, 60, r), _disk(h, w, 30, look_alike_x, r))[None, None]
        if t == 0:  # the prompt
            probs = _disk(h, w, 30, 60, r)[None, None]
        else:
            probs = prior.select([1], matcher * prior.windows([1], (h, w), torch.device("cpu")))
        full = soft_aggregate(probs)
        prior.update([1], full[1:])
        masks.append(full[1, 0] > 0.5)
    return masks


def test_split_track_drops_a_look_alike_that_overlapped_and_left() -> None:
    """The window alone follows the merged mask, so the look-alike leaves with part of it; `split: track`
    keeps the piece where the object was before the merge."""
    truth = _disk(60, 200, 30, 60, 10) > 0
    kept = _run_look_alike_pass("keep")[-1]
    assert (kept & ~truth).sum() > 0.5 * truth.sum()  # the look-alike is still painted as the object
    tracked = _run_look_alike_pass("track")[-1]
    assert (tracked & ~truth).sum() == 0 and (tracked & truth).sum() == truth.sum()


def _run_leak_left_behind() -> tuple[list[torch.Tensor], torch.Tensor]:
    """An object drives right through a stationary patch (smoke, spray) that the matcher (scripted) starts to
    paint as the object, first as a small leak at its back, then as a blob it leaves behind. Returns the
    object's mask after each frame, and the object's last disk."""
    h, w, r = 60, 240, 10
    prior = MotionPrior(PriorConfig(enabled=True, margin=0.5, min_margin_px=4, split="track"))
    masks = []
    for t in range(20):
        car = _disk(h, w, 30, 50 + 4 * t, r)
        smoke = _disk(h, w, 30, 44, 5 if t == 2 else 12) if t >= 2 else torch.zeros(h, w)
        matcher = torch.maximum(car, smoke)[None, None]
        windowed = matcher * prior.windows([1], (h, w), torch.device("cpu"))
        probs = car[None, None] if t == 0 else prior.select([1], windowed)
        full = soft_aggregate(probs)
        prior.update([1], full[1:])
        masks.append(full[1, 0] > 0.5)
    return masks, car > 0


def test_split_track_follows_an_object_that_leaves_a_leak_behind() -> None:
    """The leak grows the box backwards while the object moves on: the box's size changed, not the object's
    motion, so the track keeps its velocity and, when the two part, keeps the moving piece, not the patch
    where the object was when the leak began."""
    masks, car = _run_leak_left_behind()
    last = masks[-1]
    assert (last & car).sum() == car.sum() and (last & ~car).sum() == 0


def test_split_track_keeps_pieces_inside_the_expected_box() -> None:
    """An occluder across the object cuts its mask in two: both halves are the object."""
    prior = MotionPrior(PriorConfig(enabled=True, margin=0.5, min_margin_px=4, split="track"))
    whole = _disk(60, 100, 30, 50, 15)
    prior.update([1], whole[None, None])
    cut = whole.clone()
    cut[:, 48:53] = 0
    out = prior.select([1], cut[None, None].clone())
    assert torch.equal(out[0, 0], cut)


def test_split_track_drops_a_speck_outside_the_box() -> None:
    prior = MotionPrior(PriorConfig(enabled=True, margin=0.5, min_margin_px=2, split="track"))
    prior.update([1], _disk(60, 100, 30, 30, 10)[None, None])
    frame = _disk(60, 100, 30, 30, 10) + _disk(60, 100, 30, 80, 3)
    out = prior.select([1], frame[None, None].clone())[0, 0]
    assert out[30, 80] == 0 and out[30, 30] > 0.5


def test_hold_brings_back_a_fading_object_and_leaves_a_steady_one_alone() -> None:
    prior = MotionPrior(PriorConfig(enabled=True, margin=0.5, min_margin_px=4, hold=0.5))
    disk = _disk(60, 100, 30, 50, 12)
    prior.update([1], disk[None, None])
    faded = disk * 0.4 / 0.9  # the matcher is unsure for a frame: nothing passes 0.5
    held = prior.select([1], faded[None, None].clone())[0, 0]
    assert (held > 0.5).sum() >= 0.5 * (disk > 0).sum()
    assert torch.all(held[disk == 0] == 0)  # nothing is added where the object has no probability
    steady = prior.select([1], disk[None, None].clone())[0, 0]
    assert torch.equal(steady, disk)
    gone = disk * 0.1  # too unlike the object: the gain is bounded, it is let go
    assert (prior.select([1], gone[None, None].clone())[0, 0] > 0.5).sum() == 0


def test_velocity_moves_the_window_ahead() -> None:
    prior = MotionPrior(PriorConfig(enabled=True, margin=0.5, min_margin_px=1, velocity=1.0))
    prior.update([1], _probs(40, 100, [(10, 19, 20, 29)]))
    prior.update([1], _probs(40, 100, [(10, 19, 30, 39)]))  # moved 10 px right
    window = prior.windows([1], (40, 100), torch.device("cpu"))[0, 0]
    assert torch.all(window[10:20, 40:50] == 1) and window[15, 30] < 1
    still = MotionPrior(PriorConfig(enabled=True, margin=0.5, min_margin_px=1))
    still.update([1], _probs(40, 100, [(10, 19, 20, 29)]))
    still.update([1], _probs(40, 100, [(10, 19, 30, 39)]))
    assert torch.all(still.windows([1], (40, 100), torch.device("cpu"))[0, 0, 10:20, 30:40] == 1)


def test_the_prior_defaults_are_the_shipped_ones() -> None:
    """TrackerConfig's defaults are the shipped tracker: the window, `split: track` and `hold: 0.7`, no velocity
    (configs/cpu.yaml; tests/test_tracker_config.py keeps the two equal)."""
    prior = TrackerConfig().prior
    assert (prior.enabled, prior.velocity, prior.split, prior.hold) == (True, 0.0, "track", 0.7)


@pytest.mark.parametrize(("field", "value"), [
    ("velocity", -0.1), ("velocity", 3.0), ("split", "largest"), ("growth", 1.0), ("keep_inside", 0.0),
    ("keep_inside", 1.5), ("hold", 1.0), ("hold", -0.5),
])
def test_config_rejects_bad_new_prior_options(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        PriorConfig(**{field: value})


def test_tracker_runs_with_every_prior_option_on(lite_network: torch.nn.Module) -> None:
    frames, labels = generate_sequence(seed=1, num_frames=4, size=(120, 216), num_objects=2, num_distractors=1)
    config = TrackerConfig(
        resolution=120, device="cpu", backend="torch", precision="fp32", readout=ReadoutConfig(kind="stcn"),
        prior=PriorConfig(enabled=True, velocity=1.0, split="track", hold=0.5),
    )
    tracker = Tracker(config, network=lite_network)
    tracker.step(frames[0], labels[0])
    for frame in frames[1:]:
        result = tracker.step(frame)
    assert result.labels.shape == labels[0].shape and result.object_ids == [1, 2]


def _scene_with_a_passing_copy(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, list[int]]:
    """A still one-object frame; an exact copy of the object slides in from one side, across the object
    and out on the other side, 2 widths away at both ends. Returns frames, labels, the object's shape,
    the copy's top row and its left column per frame (frames 1..n-1)."""
    frames, labels = generate_sequence(seed=0, num_frames=1, size=(240, 432), num_objects=1, num_distractors=0)
    ys, xs = np.nonzero(labels[0] == 1)
    shape = labels[0, ys.min():ys.max() + 1, xs.min():xs.max() + 1] == 1
    patch = frames[0, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    frames, labels = np.repeat(frames, n, axis=0), np.repeat(labels, n, axis=0)
    width = shape.shape[1]
    start = xs.min() + 2 * width if xs.min() + 3 * width < 432 else xs.min() - 2 * width
    end = int(np.clip(xs.min() - 2 * width if start > xs.min() else xs.min() + 2 * width, 0, 432 - width))
    lefts = []
    for t in range(1, n):
        left = int(round(start + (end - start) * t / (n - 1)))
        frames[t, ys.min():ys.max() + 1, left:left + width][shape] = patch[shape]
        lefts.append(left)
    return frames, labels, shape, int(ys.min()), lefts


@pytest.mark.parametrize("split", ["keep", "track"])
def test_the_trained_model_lets_a_passing_copy_go_with_split_track(split: str) -> None:
    """The bundled model paints the copy as the object while they overlap (it cannot tell them apart),
    and the window follows the merged mask, so the copy leaves with it; `split: track` keeps the piece
    where the object was when they part."""
    n = 24
    frames, labels, shape, top, lefts = _scene_with_a_passing_copy(n)
    config = TrackerConfig(
        resolution=240, device="cpu", backend="torch", precision="fp32", readout=ReadoutConfig(kind="stcn"),
        memory=MemoryConfig(capacity=4, mem_every=2, max_pinned=1),
        prior=PriorConfig(enabled=True, split=split, hold=0.0),
    )
    tracker = Tracker(config)
    tracker.step(frames[0], labels[0])
    for frame in frames[1:]:
        predicted = tracker.step(frame).labels == 1
    on_copy = predicted[top:top + shape.shape[0], lefts[-1]:lefts[-1] + shape.shape[1]][shape].mean()
    truth = labels[-1] == 1
    iou = (predicted & truth).sum() / (predicted | truth).sum()
    if split == "keep":  # the failure `split: track` is for
        assert on_copy > 0.5 and iou < 0.7, (on_copy, iou)
    else:
        assert on_copy < 0.05 and iou > 0.85, (on_copy, iou)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_the_prior_on_each_objects_region_gives_what_it_gives_on_the_whole_canvas(data) -> None:
    """Objects decoded on a crop are 0 outside it: weighing, `split`/`hold` and the boxes found on the crop
    alone equal those on the whole canvas (the hold's k-th largest may fall among the zeros outside)."""
    h, w = 48, 64
    n = data.draw(st.integers(1, 3))
    seed = data.draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    regions, probs = [], torch.zeros(n, 1, h, w)
    for row in range(n):
        if data.draw(st.booleans()):
            regions.append(None)
            r0, r1, c0, c1 = 0, h, 0, w
        else:
            r0 = data.draw(st.integers(0, h - 1))
            r1 = data.draw(st.integers(r0 + 1, h))
            c0 = data.draw(st.integers(0, w - 1))
            c1 = data.draw(st.integers(c0 + 1, w))
            regions.append((slice(r0, r1), slice(c0, c1)))
        probs[row, 0, r0:r1, c0:c1] = torch.from_numpy(rng.random((r1 - r0, c1 - c0)).astype(np.float32))
    previous = torch.zeros(n, 1, h, w)
    for row in range(n):  # last frame's masks: boxes somewhere, of areas that may make `hold` act
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        previous[row, 0, y:y + rng.integers(2, h - y), x:x + rng.integers(2, w - x)] = 0.9
    config = PriorConfig(enabled=True, margin=0.5, split="track", hold=0.7)
    results = []
    for given_regions in (None, regions):
        prior = MotionPrior(config)
        prior.update(list(range(1, n + 1)), previous)
        out = prior.select(list(range(1, n + 1)), prior.weigh(list(range(1, n + 1)), probs.clone(), given_regions),
                           given_regions)
        prior.update(list(range(1, n + 1)), out, given_regions)
        results.append((out, [prior._tracks.get(i) for i in range(1, n + 1)]))
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]

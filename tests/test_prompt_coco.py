"""COCO stills for the prompt network: the hold-out is never trained on, nor is val-dev; the NoC protocol."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_vos.data.coco import coco128_images, coco_objects, holdout_image_ids
from edge_vos.data.davis import write_mask
from edge_vos.prompt.evaluation import EvalFrame, click_series, clicks_to_reach
from edge_vos.prompt.spec import Prompt

STATIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "static"


def _write_static(root: Path, shared_id: int) -> None:
    """A tiny static-data folder: 4 categories x 4 single objects, and coco128 images, one of which has
    COCO image id `shared_id`."""
    mval = root / "coco-mval-train"
    (mval / "images").mkdir(parents=True)
    objects = []
    for c, category in enumerate(("cat", "dog", "cup", "kite")):
        for k in range(4):
            image_id = 1000 + 10 * c + k
            name = f"{category}{k:02d}_{image_id:012d}"
            image = np.full((48, 64, 3), 40 * k, np.uint8)
            labels = np.zeros((48, 64), np.uint8)
            labels[10:30, 12 + k:40] = 1
            cv2.imwrite(str(mval / "images" / f"{name}.jpg"), image)
            write_mask(mval / "masks" / f"{name}.png", labels)
            objects.append({"name": name, "category": category, "coco_image_id": image_id})
    (mval / "objects.json").write_text(json.dumps(objects))
    c128 = root / "coco128"
    (c128 / "images").mkdir(parents=True)
    entries = []
    for image_id in (7, shared_id):
        labels = np.zeros((48, 64), np.uint8)
        labels[5:45, 5:40] = 1
        labels[10:40, 42:62] = 2
        cv2.imwrite(str(c128 / "images" / f"{image_id:012d}.jpg"), np.full((48, 64, 3), 99, np.uint8))
        write_mask(c128 / "masks" / f"{image_id:012d}.png", labels)
        entries.append({"name": f"{image_id:012d}", "instances": [{"id": 1, "coco_class": 0},
                                                                   {"id": 2, "coco_class": 1}]})
    (c128 / "instances.json").write_text(json.dumps(entries))


def test_holdout_is_per_category_and_never_a_training_target(tmp_path: Path) -> None:
    from edge_vos.train.prompt.coco import CocoTargets

    _write_static(tmp_path / "probe", shared_id=0)
    held = holdout_image_ids(coco_objects(tmp_path / "probe", "all"))
    _write_static(tmp_path / "static", shared_id=min(held))  # a coco128 image that shares a held-out id
    all_objects = coco_objects(tmp_path / "static", "all")
    holdout = coco_objects(tmp_path / "static", "holdout")
    train = coco_objects(tmp_path / "static", "train")
    assert {o.category for o in holdout} == {o.category for o in all_objects}  # every category on both sides
    assert len(holdout) == 4 and len(train) == 12  # a quarter of each category's images
    assert {o.image_id for o in holdout} == held and not held & {o.image_id for o in train}
    assert [i.image_id for i in coco128_images(tmp_path / "static")] == [7]  # the shared id is dropped
    # the tracker's trainer takes every image (data/static_images.py): the prompt hold-out does not concern it
    assert sorted(i.image_id for i in coco128_images(tmp_path / "static", part="all")) == sorted([7, min(held)])
    with pytest.raises(ValueError, match="part must be train or all"):
        coco128_images(tmp_path / "static", part="holdout")
    targets = CocoTargets(tmp_path / "static", min_area=50)
    assert not targets.image_ids & held
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, mask = targets.draw(rng)
        assert image.shape == (48, 64, 3) and mask.dtype == bool and mask.sum() >= 50
    with pytest.raises(ValueError, match="part"):
        coco_objects(tmp_path / "static", "test")


@pytest.mark.skipif(not (STATIC / "coco-mval-train").is_dir(), reason=f"no COCO stills at {STATIC}")
def test_real_holdout_is_large_and_not_trained_on() -> None:
    from edge_vos.train.prompt.coco import CocoTargets

    holdout = coco_objects(STATIC, "holdout")
    held = {o.image_id for o in holdout}
    assert len(holdout) >= 100 and len({o.category for o in holdout}) == 80
    assert not CocoTargets(STATIC).image_ids & held


def test_val_dev_is_refused_as_training_data(tmp_path: Path) -> None:
    from edge_vos.train.prompt.data import PromptData

    with pytest.raises(ValueError, match="val-dev"):
        PromptData(tmp_path, split="val-dev", synthetic_sequences=0)


def test_training_takes_coco_stills(tmp_path: Path) -> None:
    from edge_vos.train.prompt.train import main

    _write_static(tmp_path / "static", shared_id=3)
    out = tmp_path / "run"
    assert main(["--data", "", "--synthetic", "0", "--static", str(tmp_path / "static"), "--coco-share", "1",
                 "--size", "64", "--batch", "2", "--out", str(out), "--steps", "2", "--snapshot-every", "2"]) == 0
    assert (out / "step_00002.safetensors").is_file()


def test_coco_draws_take_only_the_prompt_kinds_they_are_given(tmp_path: Path) -> None:
    from edge_vos.train.prompt.coco import CocoTargets
    from edge_vos.train.prompt.data import PromptData

    _write_static(tmp_path / "static", shared_id=3)
    coco = CocoTargets(tmp_path / "static", min_area=50)
    data = PromptData(None, synthetic_sequences=1, synthetic_frames=2, size=64, coco=coco, coco_share=0.5,
                      coco_kinds=("box",))
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(80):
        photo = rng.bit_generator.state
        _, _, is_photo = data._draw(rng)
        rng.bit_generator.state = photo  # the sample below draws the same source
        draws.append((is_photo, data.sample(rng).kind))
    assert {kind for photo, kind in draws if photo} == {"box"}
    assert {kind for photo, kind in draws if not photo} > {"box"}  # the synthetic frames take every kind
    with pytest.raises(ValueError, match="coco_kinds"):
        PromptData(None, synthetic_sequences=1, synthetic_frames=2, coco=coco, coco_kinds=("scribble",))


def _frame() -> EvalFrame:
    truth = np.zeros((40, 60), bool)
    truth[10:30, 10:50] = True
    return EvalFrame("box", 0, np.zeros((40, 60, 3), np.uint8), truth)


def test_click_series_counts_clicks_and_stops_at_a_fixed_point() -> None:
    frame = _frame()
    calls: list[Prompt] = []

    def stuck(image: np.ndarray, prompt: Prompt) -> np.ndarray:  # always the left half: clicks change nothing
        calls.append(prompt)
        mask = np.zeros(frame.truth.shape, bool)
        mask[10:30, 10:30] = True
        return mask

    scores = click_series(stuck, frame, max_clicks=20)
    assert scores == [0.5] * 20 and len(calls) == 2  # click 3 repeats click 2: the rest is filled in
    assert clicks_to_reach(scores, 0.85) == 20
    calls.clear()
    corrective = click_series(stuck, frame, max_clicks=20, corrective=True)
    # Click 2 carries click 1's mask; click 3 would repeat click 2 with the same mask: filled in.
    assert corrective == [0.5] * 20 and len(calls) == 2
    assert calls[0].mask is None and calls[1].mask is not None

    def grows(image: np.ndarray, prompt: Prompt) -> np.ndarray:  # one more column band per click
        mask = np.zeros(frame.truth.shape, bool)
        mask[10:30, 10:10 + 10 * min(4, len(prompt.points))] = True
        return mask

    scores = click_series(grows, frame, max_clicks=20, stop_iou=0.9, min_clicks=3)
    assert scores == [0.25, 0.5, 0.75, 1.0] and clicks_to_reach(scores, 0.9) == 4


def test_click_series_after_a_box_clicks_on_the_boxs_mask_and_keeps_the_box() -> None:
    frame = _frame()
    calls: list[Prompt] = []

    def grows(image: np.ndarray, prompt: Prompt) -> np.ndarray:  # one more column band per click
        calls.append(prompt)
        mask = np.zeros(frame.truth.shape, bool)
        mask[10:30, 10:20 + 10 * len(prompt.points)] = True
        return mask

    start = np.zeros(frame.truth.shape, bool)
    start[10:30, 10:20] = True  # the box's answer: the left quarter
    scores = click_series(grows, frame, max_clicks=3, box=(10, 10, 50, 30), start=start)
    assert scores == [0.5, 0.75, 1.0]
    assert all(p.box == (10, 10, 50, 30) for p in calls)
    x, _ = calls[0].points[0]
    # Deepest in the part the box's mask missed (x 20..50), not deepest in the object (x 19.5).
    assert x == 29.5 and calls[0].labels[0] == 1

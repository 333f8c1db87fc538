"""Prompts: validation rules (edge_vos.prompt.spec) and the model-free GrabCut method."""

from __future__ import annotations

import numpy as np
import pytest

from edge_vos.prompt import PromptError, grabcut_segment, make_prompt

HW = (120, 160)


def _scene() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (*HW, 3), dtype=np.uint8)
    image[40:80, 50:110] = (230, 40, 40)
    return image


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({}, "", "give a box, points"),
        ({"box": (10, 10, 10, 50)}, "box", "empty"),
        ({"box": (10, 10, 50, 10)}, "box", "empty"),
        ({"box": (0, 0, 3, 50)}, "box", "4x4"),
        ({"box": (-50, -50, -10, -10)}, "box", "inside the 160x120 frame"),
        ({"box": (0, 0, 10)}, "box", "(x0, y0, x1, y1)"),
        ({"box": (0, 0, float("nan"), 10)}, "box", "finite"),
        ({"box": np.array(["a", "b", "c", "d"])}, "box", "numbers"),
        ({"points": [(10, 10)]}, "labels", "required with points"),
        ({"labels": [1]}, "labels", "without points"),
        ({"points": [(10, 10), (20, 20)], "labels": [1]}, "labels", "1 labels for 2 points"),
        ({"points": [(10, 10)], "labels": [1, 0]}, "labels", "2 labels for 1 points"),
        ({"points": [(10, 10)], "labels": [3]}, "labels[0]", "1 (object) or 0"),
        ({"points": [(10, 10)], "labels": [0]}, "labels", "at least one point must be labelled 1"),
        ({"points": [(160, 10)], "labels": [1]}, "points[0]", "outside the 160x120 frame"),
        ({"points": [(10, 10), (10, 120)], "labels": [1, 1]}, "points[1]", "outside"),
        ({"points": [(10, -0.5)], "labels": [1]}, "points[0]", "outside"),
        ({"points": np.zeros((2, 3)), "labels": [1, 1]}, "points", "[x, y] pairs"),
        ({"mask": np.zeros(HW, bool)}, "mask", "empty"),
        ({"mask": np.ones((60, 80), bool)}, "mask", "80x60 but the frame is 160x120"),
        ({"mask": np.ones((*HW, 3), bool)}, "mask", "2-D"),
    ],
)
def test_bad_prompts_are_refused_naming_the_field(kwargs: dict, field: str, message: str) -> None:
    with pytest.raises(PromptError) as info:
        make_prompt(HW, **kwargs)
    assert info.value.field == field
    assert message in str(info.value)


def test_valid_prompts() -> None:
    prompt = make_prompt(HW, box=(150.4, 100, -20, 5.5))  # corners in any order, clipped to the frame
    assert prompt.box == (0, 5, 151, 100)
    clicks = make_prompt(HW, points=np.array([[159.9, 119.9], [0, 0]]), labels=np.array([1, 0]))
    assert clicks.pixel(0) == (159, 119) and clicks.positives.shape == (1, 2) and clicks.negatives.shape == (1, 2)
    negatives_only = make_prompt(HW, box=(0, 0, 50, 50), points=[(5, 5)], labels=[0])
    assert len(negatives_only.positives) == 0
    coarse = np.zeros(HW, np.uint8)
    coarse[10:20, 10:20] = 255
    assert make_prompt(HW, mask=coarse).mask.sum() == 100


def test_grabcut_finds_the_object_in_the_box() -> None:
    image = _scene()
    mask = grabcut_segment(image, make_prompt(HW, box=(40, 30, 120, 90)))
    inside = mask[40:80, 50:110].mean()
    outside = mask.sum() - mask[40:80, 50:110].sum()
    assert inside > 0.9 and outside < 0.2 * 40 * 60
    flat = np.zeros((*HW, 3), np.uint8)  # nothing to separate: falls back to the ellipse
    assert grabcut_segment(flat, make_prompt(HW, box=(0, 0, 160, 120))).any()


def test_grabcut_from_clicks() -> None:
    image = _scene()
    mask = grabcut_segment(image, make_prompt(HW, points=[(80, 60)], labels=[1]))
    assert mask[40:80, 50:110].mean() > 0.9
    assert mask.sum() - mask[40:80, 50:110].sum() < 0.2 * 40 * 60
    # A negative click inside the object removes the part around it.
    cut = grabcut_segment(image, make_prompt(HW, points=[(60, 60), (100, 60)], labels=[1, 0]))
    assert cut[60, 60] and not cut[60, 100]


def test_grabcut_refines_a_coarse_mask() -> None:
    coarse = np.zeros(HW, bool)
    coarse[35:85, 45:100] = True  # too large on three sides, short on the right
    mask = grabcut_segment(_scene(), make_prompt(HW, mask=coarse))
    truth = np.zeros(HW, bool)
    truth[40:80, 50:110] = True
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > (coarse & truth).sum() / (coarse | truth).sum()

"""What a prompt is, and the one place its rules are checked.

A prompt says where an object is on one frame: a box, clicks (points with labels 1 = object,
0 = background), a coarse mask to refine, or any combination. `make_prompt` turns loosely typed input
(numpy arrays, lists, tuples) into a validated `Prompt` or raises `PromptError(field, message)` naming the
field at fault. The Python API (`edge_vos.prompt.segment`) and the control protocol's `add` both go
through it, so a prompt is refused for the same reasons, with the same words, wherever it comes from.
Pure numpy: no torch, no OpenCV.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# How a prompt becomes a mask: the bundled learned model, or OpenCV GrabCut (no model).
METHODS = ("learned", "grabcut")
DEFAULT_METHOD = "learned"
# Most clicks one prompt may carry (an operator clicks a handful; more is a client bug).
MAX_POINTS = 64
# A box must cover at least this many pixels per side inside the frame.
MIN_BOX_SIDE = 4


class PromptError(ValueError):
    """An invalid prompt; `field` names the argument at fault (box, points, labels, mask, image)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


@dataclass(frozen=True, eq=False)
class Prompt:
    """A validated prompt for one frame of size `frame_hw`.

    `box` is (x0, y0, x1, y1) in pixels, clipped to the frame, x1/y1 exclusive. `points` is float32 [N, 2]
    of (x, y) in pixel coordinates (pixel (i, j) spans [i, i+1) x [j, j+1)); `labels` is int8 [N] of 1/0.
    `mask` is a bool [H, W] coarse mask to refine, or None.
    """

    frame_hw: tuple[int, int]
    box: tuple[int, int, int, int] | None
    points: np.ndarray
    labels: np.ndarray
    mask: np.ndarray | None

    @property
    def positives(self) -> np.ndarray:
        return self.points[self.labels == 1]

    @property
    def negatives(self) -> np.ndarray:
        return self.points[self.labels == 0]

    def pixel(self, i: int) -> tuple[int, int]:
        """The (x, y) pixel that point i falls in."""
        h, w = self.frame_hw
        x, y = self.points[i]
        return min(int(x), w - 1), min(int(y), h - 1)


def make_prompt(
    frame_hw: tuple[int, int],
    *,
    box: Sequence[float] | np.ndarray | None = None,
    points: Sequence[Sequence[float]] | np.ndarray | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    mask: np.ndarray | None = None,
    mask_follows: bool = False,
) -> Prompt:
    """Validates a prompt for a frame of `frame_hw` = (height, width); raises PromptError naming the field.

    Rules: at least one of box, points, mask; labels exactly when points, one per point, each 1 or 0;
    points inside the frame; without a box or a mask at least one point must be positive (negatives alone
    say where the object is not, not where it is); a box may stick out of the frame (a detector's box
    often does) but must cover at least 4x4 pixels of it; a mask has the frame's size and is not empty.
    `mask_follows`: the coarse mask comes later (a correction starts from the tracked object's mask on its
    frame, `with_coarse_mask`), so negative clicks alone are valid here.
    """
    h, w = frame_hw
    if labels is not None and points is None:
        raise PromptError("labels", "labels were given without points")
    if box is None and points is None and mask is None:
        raise PromptError("", "give a box, points (with labels) or a mask; got none")
    parsed_box = None if box is None else _box(box, h, w)
    pts, lbl = _points(points, labels, h, w)
    coarse = None if mask is None else _mask(mask, h, w)
    if parsed_box is None and coarse is None and not mask_follows and not (lbl == 1).any():
        raise PromptError("labels", "without a box or a mask at least one point must be labelled 1 (object)")
    return Prompt((h, w), parsed_box, pts, lbl, coarse)


def with_coarse_mask(prompt: Prompt, mask: np.ndarray) -> Prompt:
    """`prompt`'s box and clicks on the coarse mask `mask` (a correction: the object's current mask). An empty
    mask (the object was lost on that frame) leaves the clicks alone, which then need a positive one."""
    h, w = prompt.frame_hw
    coarse = _mask(mask, h, w) if np.any(mask) else None
    if prompt.box is None and coarse is None and not (prompt.labels == 1).any():
        raise PromptError("labels", "the object has no mask on this frame to correct: click on it (label 1)")
    return dataclasses.replace(prompt, mask=coarse)


def _numbers(value: Any, field: str) -> Any:
    """`value` (nested lists/tuples of numbers, or a numeric numpy array) as nested Python floats.

    Strings and booleans are refused rather than coerced: "10" or true is a client bug, not a coordinate.
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise PromptError(field, f"must be numbers, got an array of {value.dtype}")
        array = value.astype(np.float64)
    else:
        pending = [value]  # iterative: a hostile client's nesting must not exhaust the stack
        while pending:
            v = pending.pop()
            if isinstance(v, (list, tuple)):
                if len(pending) + len(v) > 100_000:
                    raise PromptError(field, "holds too many numbers")
                pending.extend(v)
            elif isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise PromptError(field, f"must be numbers, got {type(v).__name__} {str(v)[:20]!r}")
        try:
            array = np.asarray(value, dtype=np.float64)
        except OverflowError:  # a JSON integer beyond float range
            raise PromptError(field, "must be finite numbers") from None
        except ValueError:
            raise PromptError(field, "must be a rectangular list of numbers") from None
    if not np.isfinite(array).all():
        raise PromptError(field, "must be finite numbers")
    return array.tolist()


def _box(value: Any, h: int, w: int) -> tuple[int, int, int, int]:
    nums = _numbers(value, "box")
    if not (isinstance(nums, list) and len(nums) == 4 and all(isinstance(v, float) for v in nums)):
        raise PromptError("box", "must be (x0, y0, x1, y1) in pixels")
    x0, y0, x1, y1 = nums
    if x1 <= x0 or y1 <= y0:
        if x1 == x0 or y1 == y0:
            raise PromptError("box", f"is empty: {_fmt(nums)} has zero width or height")
        x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)  # corners in any order
    cx0, cy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    cx1, cy1 = min(w, math.ceil(x1)), min(h, math.ceil(y1))
    if cx1 - cx0 < MIN_BOX_SIDE or cy1 - cy0 < MIN_BOX_SIDE:
        raise PromptError("box", f"{_fmt(nums)} must cover at least {MIN_BOX_SIDE}x{MIN_BOX_SIDE} pixels inside "
                                 f"the {w}x{h} frame")
    return cx0, cy0, cx1, cy1


def _points(points: Any, labels: Any, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    if points is None:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int8)
    nums = _numbers(points, "points")
    if not isinstance(nums, list) or (nums and not all(isinstance(p, list) and len(p) == 2 for p in nums)):
        raise PromptError("points", "must be a list of [x, y] pairs")
    if not 1 <= len(nums) <= MAX_POINTS:
        raise PromptError("points", f"must hold 1..{MAX_POINTS} points, got {len(nums)}")
    for i, (x, y) in enumerate(nums):
        if not (0 <= x < w and 0 <= y < h):
            raise PromptError(f"points[{i}]", f"({_fmt([x, y])}) is outside the {w}x{h} frame "
                                              f"(x in [0, {w}), y in [0, {h}))")
    if labels is None:
        raise PromptError("labels", f"required with points: one label (1 object, 0 background) per point, "
                                    f"{len(nums)} expected")
    raw = np.asarray(labels, dtype=object).ravel().tolist() if not isinstance(labels, (list, tuple)) else list(labels)
    if len(raw) != len(nums):
        raise PromptError("labels", f"{len(raw)} labels for {len(nums)} points; give one label per point")
    for i, label in enumerate(raw):
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)) or label not in (0, 1):
            raise PromptError(f"labels[{i}]", f"must be 1 (object) or 0 (background), got {label!r}")
    return np.asarray(nums, np.float32).reshape(-1, 2), np.asarray(raw, np.int8)


def _mask(mask: Any, h: int, w: int) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise PromptError("mask", f"must be a 2-D array [H, W], got shape {array.shape}")
    if array.shape != (h, w):
        raise PromptError("mask", f"is {array.shape[1]}x{array.shape[0]} but the frame is {w}x{h}")
    coarse = array != 0
    if not coarse.any():
        raise PromptError("mask", "is empty")
    return coarse


def check_image(image: Any) -> np.ndarray:
    """The image as RGB uint8 [H, W, 3], or PromptError naming what is wrong with it."""
    if not isinstance(image, np.ndarray):
        raise PromptError("image", f"must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise PromptError("image", f"must be RGB [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise PromptError("image", f"must be uint8, got {image.dtype}")
    if image.shape[0] < MIN_BOX_SIDE or image.shape[1] < MIN_BOX_SIDE:
        raise PromptError("image", f"is {image.shape[1]}x{image.shape[0]}, smaller than {MIN_BOX_SIDE}x{MIN_BOX_SIDE}")
    return image


def _fmt(nums: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in nums)

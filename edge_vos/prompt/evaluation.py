"""Measuring prompt -> mask methods against ground truth, with prompts simulated from it.

The protocol (issue #10, docs/benchmarks.md "Prompts"):
- frames: the first frame of every sequence and every 10th after it (`every`), or COCO hold-out objects
  (`coco_eval_frames`);
- box: the ground truth's tight box; jittered box: each side moved by up to 10 % of the box's width
  (x) or height (y), uniformly, seeded per frame so every method sees the same boxes;
- clicks, as interactive-segmentation benchmarks place them (RITM's NoC protocol): the first click at
  the object pixel farthest from its boundary (max of the distance transform); each further click at the
  pixel farthest from the boundary of the larger error region of the method's *own* previous mask
  (missed object -> label 1, false object -> label 0). Click k therefore depends on the method: the rule
  is the same, the points are not.
The module is pure numpy/OpenCV; a method is any callable (image, Prompt) -> bool mask, optionally
taking the previous mask for iterative clicking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_vos.prompt.spec import Prompt, make_prompt

# A method: (image, prompt) -> bool mask [H,W]. Iterative clicking passes the previous mask as
# `prompt.mask` when the method wants it (`uses_previous_mask`).
Method = Callable[[np.ndarray, Prompt], np.ndarray]
BOX_JITTER = 0.10
PROMPT_TYPES = ("box", "box_jitter", "click1", "click2", "click3")
# Clicks 2 and 3 with the method's own previous mask sent back as `mask` (an interactive client's way).
MASK_FED_TYPES = ("click2_mask", "click3_mask")


@dataclass(frozen=True)
class EvalFrame:
    sequence: str
    index: int
    image: np.ndarray  # RGB uint8 [H,W,3]
    truth: np.ndarray  # bool [H,W]


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def tight_box(truth: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(truth)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def jittered_box(truth: np.ndarray, rng: np.random.Generator, share: float = BOX_JITTER) -> tuple[float, ...]:
    x0, y0, x1, y1 = tight_box(truth)
    bw, bh = x1 - x0, y1 - y0
    dx = rng.uniform(-share, share, 2) * bw
    dy = rng.uniform(-share, share, 2) * bh
    h, w = truth.shape
    nx0, nx1 = np.clip([x0 + dx[0], x1 + dx[1]], 0, w)
    ny0, ny1 = np.clip([y0 + dy[0], y1 + dy[1]], 0, h)
    return float(nx0), float(ny0), float(nx1), float(ny1)


def _farthest_inside(region: np.ndarray) -> tuple[tuple[int, int], float]:
    """(x, y) of the pixel of `region` farthest from its boundary (the frame's edge counts as boundary)."""
    padded = np.pad(region.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return (int(x), int(y)), float(dist[y, x])


def next_click(truth: np.ndarray, pred: np.ndarray | None) -> tuple[tuple[float, float], int]:
    """The next simulated click ((x, y) at the pixel centre, label) for the previous prediction `pred`."""
    if pred is None:
        (x, y), _ = _farthest_inside(truth)
        return (x + 0.5, y + 0.5), 1
    missed = truth & ~pred
    false = pred & ~truth
    (mx, my), md = _farthest_inside(missed) if missed.any() else ((0, 0), -1.0)
    (fx, fy), fd = _farthest_inside(false) if false.any() else ((0, 0), -1.0)
    if md < 0 and fd < 0:  # perfect already: click the object again
        (x, y), _ = _farthest_inside(truth)
        return (x + 0.5, y + 0.5), 1
    return ((mx + 0.5, my + 0.5), 1) if md >= fd else ((fx + 0.5, fy + 0.5), 0)


def evaluate_frame(
    method: Method, frame: EvalFrame, seed: int, clicks: int = 3, uses_previous_mask: bool = False
) -> dict[str, float]:
    """IoU of `method` on one frame for every prompt type (PROMPT_TYPES)."""
    hw = frame.truth.shape
    scores = {"box": iou(method(frame.image, make_prompt(hw, box=tight_box(frame.truth))), frame.truth)}
    rng = np.random.default_rng(seed)
    jitter = make_prompt(hw, box=jittered_box(frame.truth, rng))
    scores["box_jitter"] = iou(method(frame.image, jitter), frame.truth)
    scores.update(evaluate_clicks(method, frame, clicks, uses_previous_mask))
    return scores


def evaluate_clicks(method: Method, frame: EvalFrame, clicks: int = 3, uses_previous_mask: bool = False
                    ) -> dict[str, float]:
    """IoU after each of `clicks` simulated clicks (click1, click2, ...), each placed on the method's own
    errors (`click_series`); with `uses_previous_mask` the previous prediction goes along as the prompt's mask."""
    scores = click_series(method, frame, clicks, corrective=uses_previous_mask)
    return {f"click{k + 1}": score for k, score in enumerate(scores)}


def davis_eval_frames(root: str | Path, split: str = "val-dev", res: str = "480p", every: int = 10,
                      min_area: int = 64) -> Iterator[EvalFrame]:
    """First frame and every `every`-th frame of each sequence whose object covers >= `min_area` pixels."""
    from edge_vos.data.davis import davis_sequences

    for seq in davis_sequences(root, split, res):
        for t in range(0, len(seq), every):
            labels = seq.mask(t)
            if labels is None:
                continue
            truth = labels > 0
            if truth.sum() < min_area:
                continue
            yield EvalFrame(seq.name, t, seq.image(t), truth)


def click_series(method: Method, frame: EvalFrame, max_clicks: int = 20, stop_iou: float | None = None,
                 min_clicks: int = 1, corrective: bool = False, box: tuple[float, float, float, float] | None = None,
                 start: np.ndarray | None = None) -> list[float]:
    """IoU after each simulated click (NoC protocol: `next_click` on the method's own last mask), at most
    `max_clicks`, stopping once `min_clicks` are done and the IoU reached `stop_iou`.

    Stateless (the control socket's `add`): every prompt carries all clicks so far and nothing else.
    Corrective: from the second click on, the prompt also carries the method's previous mask, which the
    new click corrects (as an operator's correction of a tracked object's mask).
    `box`: every prompt also carries this box; `start`: the answer the first click corrects (the box's mask,
    as an operator clicks on what a box got wrong), instead of the first click going deepest inside.

    When a prompt would hold exactly what the previous one held (the next click repeats a click already
    given and, corrective, the mask did not change), a deterministic method answers the same again and
    every later click repeats too: the rest of the series is its last IoU, filled in without running."""
    hw = frame.truth.shape
    points: list[tuple[float, float]] = []
    labels: list[int] = []
    pred: np.ndarray | None = start
    previous: np.ndarray | None = None
    scores: list[float] = []
    for k in range(max_clicks):
        point, label = next_click(frame.truth, pred)
        repeated = (point, label) in zip(points, labels, strict=True)
        points.append(point)
        labels.append(label)
        mask = pred if corrective and pred is not None and pred.any() else None
        if repeated and (mask is None) == (previous is None) and (mask is None or np.array_equal(mask, previous)):
            scores += [scores[-1]] * (max_clicks - k)  # a fixed point: the same prompt, the same answer
            break
        previous = mask
        pred = method(frame.image, make_prompt(hw, box=box, points=points, labels=labels, mask=mask))
        scores.append(iou(pred, frame.truth))
        if stop_iou is not None and k + 1 >= min_clicks and scores[-1] >= stop_iou:
            break
    return scores


def clicks_to_reach(scores: list[float], target: float, max_clicks: int = 20) -> int:
    """NoC: the first click count whose IoU reaches `target`; `max_clicks` when none does (RITM's rule)."""
    return next((k + 1 for k, s in enumerate(scores) if s >= target), max_clicks)


def coco_eval_frames(static_root: str | Path, part: str = "holdout") -> Iterator[EvalFrame]:
    """coco-mval-train's objects of `part` (edge_vos.data.coco: the hold-out by default), one frame each."""
    from edge_vos.data.coco import coco_objects

    for obj in coco_objects(static_root, part):
        image, truth = obj.load()
        yield EvalFrame(obj.name, obj.image_id, image, truth)

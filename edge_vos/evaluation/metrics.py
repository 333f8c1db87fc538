"""DAVIS J (region IoU) and F (boundary F-measure), computed as the official toolkit does.

Follows davisvideochallenge/davis2017-evaluation (davis2017/metrics.py, utils.db_statistics,
evaluation.py) so numbers agree with published ones:
- J = |A∩B| / |A∪B|, and 1 when both masks are empty.
- F: one-pixel boundary maps by `seg2bmap` (no thinning: the toolkit's Python code does none), each
  dilated with a disk of radius ceil(0.008 * image diagonal) (skimage `disk`, cv2.dilate); precision =
  predicted boundary pixels within reach of a true one / predicted boundary pixels, recall likewise.
  No predicted boundary: precision 1, recall 0 (both 1 when neither has one); no true boundary but a
  predicted one: precision 0, recall 1; F = 0 when precision + recall = 0.
- Per object: mean, recall (fraction of frames > 0.5) and decay (mean of the first minus the last of
  four overlapping quantile bins), over frames 1..T-2: semi-supervised evaluation drops the first
  (given) and the last frame. Overall J (F) = mean over objects; J&F = (J + F) / 2.
- Ground-truth 255 ("void") counts as background, as in the toolkit's semi-supervised path.
Deliberate difference: `db_statistics` indexes with int64 where the toolkit casts bin edges to uint8,
which only matters for sequences longer than 255 frames (the toolkit's result is wrong there).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

BOUND_TH = 0.008


def db_eval_iou(
    annotation: np.ndarray, segmentation: np.ndarray, void: np.ndarray | None = None
) -> np.ndarray:
    """Jaccard index over the last two axes; 1 where both masks are empty."""
    if annotation.shape != segmentation.shape:
        raise ValueError(f"annotation {annotation.shape} and segmentation {segmentation.shape} differ")
    gt = annotation.astype(bool)
    seg = segmentation.astype(bool)
    keep = np.ones_like(gt) if void is None else ~void.astype(bool)
    inters = np.sum(gt & seg & keep, axis=(-2, -1))
    union = np.sum((gt | seg) & keep, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inters / union
    return np.where(union == 0, 1.0, j)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel boundary map: pixels whose right, lower or lower-right neighbour differs (toolkit's rule)."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


@lru_cache(maxsize=8)
def _disk(radius: float) -> np.ndarray:
    from skimage.morphology import disk

    return disk(radius).astype(np.uint8)


def bound_pixels(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> float:
    """Tolerance in pixels: bound_th itself when >= 1, else ceil(bound_th * image diagonal)."""
    return bound_th if bound_th >= 1 else math.ceil(bound_th * float(np.linalg.norm(shape[-2:])))


def f_measure(
    foreground: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH
) -> float:
    """Boundary F-measure of one predicted mask against one true mask."""
    if foreground.shape != gt.shape or foreground.ndim != 2:
        raise ValueError(f"expected two masks [H,W] of one shape, got {foreground.shape} and {gt.shape}")
    keep = np.ones(gt.shape, bool) if void is None else ~void.astype(bool)
    fg_boundary = seg2bmap(foreground.astype(bool) & keep)
    gt_boundary = seg2bmap(gt.astype(bool) & keep)
    kernel = _disk(bound_pixels(gt.shape, bound_th))
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel).astype(bool)
    n_fg = int(fg_boundary.sum())
    n_gt = int(gt_boundary.sum())
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = float(np.sum(fg_boundary & gt_dil)) / n_fg
        recall = float(np.sum(gt_boundary & fg_dil)) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def db_eval_boundary(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> np.ndarray:
    """F-measure per frame of [T,H,W] stacks (or a scalar array for one [H,W] pair)."""
    if annotation.shape != segmentation.shape:
        raise ValueError(f"annotation {annotation.shape} and segmentation {segmentation.shape} differ")
    if annotation.ndim == 2:
        return np.asarray(f_measure(segmentation, annotation, void, bound_th))
    return np.array(
        [
            f_measure(segmentation[t], annotation[t], None if void is None else void[t], bound_th)
            for t in range(annotation.shape[0])
        ]
    )


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall (fraction > 0.5) and decay (first minus last of 4 quantile bins), NaN-tolerant."""
    values = np.asarray(per_frame, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        recall = float(np.nanmean(values > 0.5))
        n_bins = 4
        ids = (np.round(np.linspace(1, len(values), n_bins + 1) + 1e-10) - 1).astype(np.int64)
        bins = [values[ids[i] : ids[i + 1] + 1] for i in range(n_bins)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


@dataclass
class ObjectScore:
    """Per-frame J and F of one object over the evaluated frames, with the toolkit's statistics."""

    sequence: str
    object_id: int
    j: np.ndarray
    f: np.ndarray
    stats: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        jm, jr, jd = db_statistics(self.j)
        fm, fr, fd = db_statistics(self.f)
        self.stats = {
            "J-Mean": jm,
            "J-Recall": jr,
            "J-Decay": jd,
            "F-Mean": fm,
            "F-Recall": fr,
            "F-Decay": fd,
        }

    @property
    def name(self) -> str:
        return f"{self.sequence}_{self.object_id}"


def evaluate_sequence(
    name: str,
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    separate_objects: bool = True,
    drop_first_last: bool = True,
    bound_th: float = BOUND_TH,
) -> list[ObjectScore]:
    """Scores predicted label maps [T,H,W] against true ones, one ObjectScore per true object.

    separate_objects=True (DAVIS-2017): objects are ids 1..max(gt[0]); predicted ids above that are an
    error (the toolkit rejects them), missing ones count as empty. False (DAVIS-2016): any non-zero
    value is the one object, in both maps.
    """
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(f"{name}: ground truth {gt.shape} and prediction {pred.shape} must both be [T,H,W]")
    gt = np.where(gt == 255, 0, gt)
    if separate_objects:
        num_objects = int(gt[0].max())
        ids = list(range(1, num_objects + 1))
    else:
        num_objects, ids = 1, [1]
    if drop_first_last:
        if len(gt) < 3:
            raise ValueError(f"{name}: needs at least 3 frames to drop the first and the last, has {len(gt)}")
        gt, pred = gt[1:-1], pred[1:-1]
    if separate_objects:
        extra = int(pred.max()) if pred.size else 0
        if extra > num_objects:
            raise ValueError(
                f"{name}: prediction has object id {extra} but the first frame has {num_objects}"
            )
    scores = []
    for obj in ids:
        gt_obj = gt == obj if separate_objects else gt > 0
        pred_obj = pred == obj if separate_objects else pred > 0
        j = db_eval_iou(gt_obj, pred_obj)
        f = db_eval_boundary(gt_obj, pred_obj, bound_th=bound_th)
        scores.append(ObjectScore(name, obj, np.asarray(j, dtype=np.float64), f))
    return scores


def summarize(scores: list[ObjectScore]) -> dict[str, float]:
    """Overall toolkit table in percent: J&F-Mean and J/F Mean, Recall, Decay averaged over objects."""
    if not scores:
        raise ValueError("no objects were evaluated")
    keys = list(scores[0].stats)
    out = {k: 100.0 * float(np.mean([s.stats[k] for s in scores])) for k in keys}
    return {"J&F-Mean": (out["J-Mean"] + out["F-Mean"]) / 2, **out}

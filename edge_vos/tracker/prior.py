"""Where each object can be now: a soft window around where it was on the previous frame.

An appearance matcher (STCN's readout, TMRN's) scores every pixel that looks like the object, so a
look-alike elsewhere in the frame (a second dog, a retinted copy) is painted as the object. Objects move
a bounded distance between frames, so each object's probability is multiplied by a window that is 1 on
its previous bounding box and falls off as a Gaussian outside it, with a width proportional to the box's
size (large objects move more pixels per frame). Objects with no previous mask (just lost, fully
occluded) get no window, so they can be found again anywhere. Cost: one [H] and one [W] vector per object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# A pixel counts as the object's when its aggregated probability is above this (argmax of two classes).
_PRESENT = 0.5


@dataclass(frozen=True)
class Box:
    """Inclusive pixel box on the working canvas."""

    y0: int
    y1: int
    x0: int
    x1: int


class MotionPrior:
    """Previous boxes per object id, and the windows they imply for the next frame."""

    def __init__(self, margin: float, min_margin_px: float) -> None:
        self.margin = margin
        self.min_margin_px = min_margin_px
        self._boxes: dict[int, Box] = {}

    def clear(self) -> None:
        self._boxes.clear()

    def forget(self, obj_id: int) -> None:
        self._boxes.pop(obj_id, None)

    def windows(self, ids: list[int], hw: tuple[int, int], device: torch.device) -> torch.Tensor:
        """[len(ids),1,H,W] multipliers in (0, 1]; all ones for objects without a previous box."""
        h, w = hw
        out = torch.ones(len(ids), 1, h, w, device=device)
        ys = torch.arange(h, device=device, dtype=torch.float32)
        xs = torch.arange(w, device=device, dtype=torch.float32)
        for row, obj_id in enumerate(ids):
            box = self._boxes.get(obj_id)
            if box is None:
                continue
            wy = _falloff(ys, box.y0, box.y1, self._width(box.y1 - box.y0 + 1))
            wx = _falloff(xs, box.x0, box.x1, self._width(box.x1 - box.x0 + 1))
            torch.outer(wy, wx, out=out[row, 0])
        return out

    def update(self, ids: list[int], probs: torch.Tensor) -> None:
        """Remembers each object's box from this frame's aggregated probabilities [O,1,H,W] (ids order)."""
        present = probs[:, 0] > _PRESENT
        rows = present.any(dim=2)  # [O,H]
        cols = present.any(dim=1)  # [O,W]
        for i, obj_id in enumerate(ids):
            r = torch.nonzero(rows[i]).flatten()
            if r.numel() == 0:
                self._boxes.pop(obj_id, None)
                continue
            c = torch.nonzero(cols[i]).flatten()
            self._boxes[obj_id] = Box(int(r[0]), int(r[-1]), int(c[0]), int(c[-1]))

    def _width(self, extent: int) -> float:
        return max(self.margin * extent, self.min_margin_px)


def _falloff(coords: torch.Tensor, lo: int, hi: int, width: float) -> torch.Tensor:
    """1 inside [lo, hi], exp(-d^2 / (2 width^2)) at distance d outside."""
    d = torch.clamp(lo - coords, min=0) + torch.clamp(coords - hi, min=0)
    return torch.exp(-0.5 * (d / width) ** 2)

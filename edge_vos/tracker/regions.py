"""Decoding each object only where it can be: inside the reach of its motion-prior window.

The decoder's per-object work (its /16, /8 and /4 blocks) is most of what an extra object costs, and it
runs over the whole frame although an object's windowed probability can only make it the object near its
previous box (`MotionPrior.reach`). So each object with a previous box is decoded on a crop of the frame's
features around that reach, in whole cells of the /16 grid, and its probability is 0 outside the crop;
objects without one (just lost, or the runner decodes whole frames only) are decoded together over the
whole frame, as before. Inside the crop the convolutions see the crop's border as the frame's, which only
touches pixels where the window is already low.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from edge_vos.backends.base import NetworkRunner
from edge_vos.tracker.pieces import Box

# The decoder's coarsest stride: crops are whole cells of its /16 grid, so f8 and f4 crop exactly with them.
CELL = 16


@dataclass(frozen=True)
class CellCrop:
    """A crop of the /16 cell grid: rows [r0, r1), columns [c0, c1)."""

    r0: int
    r1: int
    c0: int
    c1: int

    @classmethod
    def around(cls, box: Box, cells_hw: tuple[int, int]) -> CellCrop:
        """The smallest crop of whole cells that holds `box` (canvas pixels, inclusive bounds) inside the grid;
        at least one cell, the nearest, for a box off the canvas (a window moved ahead by a velocity)."""
        rows, cols = cells_hw
        r0 = min(max(0, math.floor(box.y0 / CELL)), rows - 1)
        c0 = min(max(0, math.floor(box.x0 / CELL)), cols - 1)
        r1 = min(rows, max(r0 + 1, math.floor(box.y1 / CELL) + 1))
        c1 = min(cols, max(c0 + 1, math.floor(box.x1 / CELL) + 1))
        return cls(r0, r1, c0, c1)

    def covers(self, cells_hw: tuple[int, int]) -> bool:
        return (self.r0, self.c0) == (0, 0) and (self.r1, self.c1) == cells_hw

    def cut(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """This crop of a feature map whose cells are `scale` x `scale` pixels of x's grid."""
        return x[..., self.r0 * scale:self.r1 * scale, self.c0 * scale:self.c1 * scale]


def decode_objects(
    runner: NetworkRunner, readout: torch.Tensor, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor,
    reach: list[Box | None] | None,
) -> torch.Tensor:
    """Probabilities [N,1,H,W] of the N objects of `readout` [N,C,h,w]: those with a box in `reach` decoded
    on the cells around it (0 outside), the rest in one call over the whole frame. reach None: all whole.
    The result is the caller's to change in place."""
    cells_hw = (readout.shape[-2], readout.shape[-1])
    crops: dict[int, CellCrop] = {}
    if reach is not None and runner.decodes_regions:
        for row, box in enumerate(reach):
            crop = CellCrop.around(box, cells_hw) if box is not None else None
            if crop is not None and not crop.covers(cells_hw):
                crops[row] = crop
    if not crops:
        return runner.decode(readout, query_value, f8, f4).float().sigmoid_()
    n = readout.shape[0]
    probs = torch.zeros(n, 1, cells_hw[0] * CELL, cells_hw[1] * CELL, device=readout.device)
    whole = [row for row in range(n) if row not in crops]
    if whole:
        probs[whole] = runner.decode(readout[whole], query_value, f8, f4).float().sigmoid_()
    for row, crop in crops.items():
        logits = runner.decode_region(
            crop.cut(readout[row:row + 1], 1), crop.cut(query_value, 1), crop.cut(f8, 2), crop.cut(f4, 4)
        )
        crop.cut(probs[row:row + 1], CELL).copy_(logits.float().sigmoid_())
    return probs

"""Decoding each object only where it can be: inside the reach of its motion-prior window.

The decoder's per-object work (its /16, /8 and /4 blocks) is most of what an extra object costs, and it
runs over the whole frame although an object's windowed probability can only make it the object near its
previous box (`MotionPrior.reach`). So each object with a previous box is decoded on a crop of the frame's
features around that reach, in whole cells of the /16 grid, and its probability is 0 outside the crop;
objects without one (just lost, or the runner decodes whole frames only) are decoded together over the
whole frame, as before. The decoder's convolutions of the frame's own inputs (query value, f8, f4) run once
per frame over a region holding every crop, and each crop takes its cells of them; the objects' own
convolutions see the crop's border as the frame's, which only touches pixels where the window is already low.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from edge_vos.backends.base import NetworkRunner
from edge_vos.backends.parts import FRAME_TERMS, OUTPUT_NAMES, SPATIAL_SCALES
from edge_vos.model.preprocess import Rect
from edge_vos.tracker.pieces import Box

# The decoder's coarsest stride: crops are whole cells of its /16 grid, so f8 and f4 crop exactly with them.
CELL = 16
# Encoding values on crops (`encode_values`): a pixel whose probability is at most SUPPORT_FLOOR counts as
# outside the object's mask (a decoded plane stays a little above 0 over much of its decode crop, and so
# faint a mask barely moves the encoder's output, while a crop around it would cost most of a frame:
# docs/benchmarks.md, "objects-notes"); the cells within INNER_CELLS of the mask take the crop's values, the
# rest the shared pass's (the mask's influence on the encoder's output reaches further, fading: what is lost
# there is that tail); the crop holds CONTEXT_CELLS more cells of the frame on each cut side, so that its
# zero padding stays away from the cells it gives.
SUPPORT_FLOOR = 0.2
INNER_CELLS = 2
CONTEXT_CELLS = 4
# A decoder call's fixed cost on a runner that batches crops (`NetworkRunner.batches_regions`: eager PyTorch,
# whose every layer has a cost per call), in cells of one object's work: a crop joins a batch of equal windows
# when the cells that padding every window to its size adds are fewer than this (docs/benchmarks.md,
# "objects-notes").
BATCH_CALL_CELLS = 256
# The steps, in cells, in which a batched window's height and width grow (`_rounded`).
WINDOW_STEP = 4
# Pixels per cell side of each of the decoder's frame terms, in the order the runner returns them.
TERM_SCALES = tuple(SPATIAL_SCALES[FRAME_TERMS][name] for name in OUTPUT_NAMES[FRAME_TERMS])


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

    @classmethod
    def of_mask(cls, mask: torch.Tensor) -> CellCrop | None:
        """The cells holding every True pixel of `mask` [H,W]; None when there is none."""
        rows = torch.nonzero(mask.any(dim=1)).flatten()
        if rows.numel() == 0:
            return None
        cols = torch.nonzero(mask.any(dim=0)).flatten()
        return cls(int(rows[0]) // CELL, int(rows[-1]) // CELL + 1, int(cols[0]) // CELL, int(cols[-1]) // CELL + 1)

    def grown(self, cells: int, cells_hw: tuple[int, int]) -> CellCrop:
        """This crop with `cells` more on each side, inside the grid."""
        return CellCrop(max(0, self.r0 - cells), min(cells_hw[0], self.r1 + cells),
                        max(0, self.c0 - cells), min(cells_hw[1], self.c1 + cells))

    @property
    def area(self) -> int:
        return (self.r1 - self.r0) * (self.c1 - self.c0)

    def within(self, outer: CellCrop) -> CellCrop:
        """This crop in the cells of `outer`, which holds it."""
        return CellCrop(self.r0 - outer.r0, self.r1 - outer.r0, self.c0 - outer.c0, self.c1 - outer.c0)

    def pixels(self, scale: int = CELL) -> tuple[slice, slice]:
        """Rows and columns of this crop on a grid of `scale` x `scale` pixels per cell."""
        return slice(self.r0 * scale, self.r1 * scale), slice(self.c0 * scale, self.c1 * scale)

    def cut(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """This crop of a feature map whose cells are `scale` x `scale` pixels of x's grid."""
        rows, cols = self.pixels(scale)
        return x[..., rows, cols]

    @property
    def shape(self) -> tuple[int, int]:
        return self.r1 - self.r0, self.c1 - self.c0

    def window(self, shape: tuple[int, int], cells_hw: tuple[int, int]) -> CellCrop:
        """A crop of `shape` (no smaller than this one's, at most the grid's) that holds this one, centred on it
        and moved inside the grid."""
        (rows, cols), (h, w) = shape, self.shape
        r0 = min(max(0, self.r0 - (rows - h) // 2), cells_hw[0] - rows)
        c0 = min(max(0, self.c0 - (cols - w) // 2), cells_hw[1] - cols)
        return CellCrop(r0, r0 + rows, c0, c0 + cols)


# Where an object's plane may be nonzero: rows and columns of the canvas; None for the whole canvas.
PixelRegion = Rect


def decode_objects(
    runner: NetworkRunner, readout: torch.Tensor, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor,
    reach: list[Box | None] | None,
) -> tuple[torch.Tensor, list[PixelRegion | None]]:
    """Probabilities [N,1,H,W] of the N objects of `readout` [N,C,h,w]: those with a box in `reach` decoded
    on the cells around it (0 outside), the rest in one call over the whole frame. reach None: all whole.
    The result is the caller's to change in place; with it, each object's crop in canvas pixels (None:
    decoded whole), so that per-pixel work on a plane can skip what is 0."""
    cells_hw = (readout.shape[-2], readout.shape[-1])
    crops: dict[int, CellCrop] = {}
    if reach is not None and runner.decodes_regions:
        for row, box in enumerate(reach):
            crop = CellCrop.around(box, cells_hw) if box is not None else None
            if crop is not None and not crop.covers(cells_hw):
                crops[row] = crop
    n = readout.shape[0]
    if not crops:
        return runner.decode(readout, query_value, f8, f4).float().sigmoid_(), [None] * n
    probs = torch.zeros(n, 1, cells_hw[0] * CELL, cells_hw[1] * CELL, device=readout.device)
    whole = [row for row in range(n) if row not in crops]
    # Each crop is decoded on a window that holds it: itself, or a window of its batch's size on a runner
    # that batches crops. The plane is kept on the crop only, so a window changes nothing but the context
    # that the crop's edge cells see (the frame's own cells instead of zero padding where the window reaches).
    batches = _batches(crops, cells_hw) if runner.batches_regions else [{row: crop} for row, crop in crops.items()]
    # The objects decoded whole need the frame terms over the whole grid, which then serve every crop too.
    windows = [window for batch in batches for window in batch.values()]
    regions = [*windows, *([CellCrop(0, cells_hw[0], 0, cells_hw[1])] if whole else [])]
    cut_terms = iter(_frame_terms(runner, regions, query_value, f8, f4, cells_hw))
    for batch in batches:
        terms = [next(cut_terms)[1] for _ in batch]
        batch_terms = terms[0] if len(terms) == 1 else tuple(torch.cat(t) for t in zip(*terms, strict=True))
        logits = runner.decode_region(
            torch.cat([window.cut(readout[row:row + 1], 1) for row, window in batch.items()]), *batch_terms)
        for i, (row, window) in enumerate(batch.items()):
            crop = crops[row]
            crop.cut(probs[row:row + 1], CELL).copy_(crop.within(window).cut(logits[i:i + 1], CELL).float().sigmoid_())
    if whole:
        probs[whole] = runner.decode_region(readout[whole], *next(cut_terms)[1]).float().sigmoid_()
    return probs, [crops[row].pixels() if row in crops else None for row in range(n)]


def _batches(crops: dict[int, CellCrop], cells_hw: tuple[int, int]) -> list[dict[int, CellCrop]]:
    """The crops in batches of equal windows, each crop's row with its window: the largest first, and each
    next crop into the first batch whose windows grow by fewer than BATCH_CALL_CELLS cells in all to hold it
    (its own call would cost that much more), else into a batch of its own."""
    shapes: list[tuple[int, int]] = []
    members: list[list[int]] = []
    for row in sorted(crops, key=lambda r: -crops[r].area):
        h, w = crops[row].shape
        for i, (rows, cols) in enumerate(shapes):
            grown = (max(rows, h), max(cols, w))
            padding = (len(members[i]) + 1) * grown[0] * grown[1] - len(members[i]) * rows * cols - h * w
            if padding < BATCH_CALL_CELLS:
                shapes[i] = grown
                members[i].append(row)
                break
        else:
            shapes.append((h, w))
            members.append([row])
    return [{row: crops[row].window(_rounded(shape, cells_hw), cells_hw) for row in batch}
            for shape, batch in zip(shapes, members, strict=True)]


def _rounded(shape: tuple[int, int], cells_hw: tuple[int, int]) -> tuple[int, int]:
    """A window's shape rounded up to whole WINDOW_STEP cells (at most the grid): an eager runner compiles and
    caches kernels per input shape, so every new shape costs time once and memory for good."""
    return (min(-(-shape[0] // WINDOW_STEP) * WINDOW_STEP, cells_hw[0]),
            min(-(-shape[1] // WINDOW_STEP) * WINDOW_STEP, cells_hw[1]))


def _frame_terms(
    runner: NetworkRunner, crops: list[CellCrop], query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor,
    cells_hw: tuple[int, int],
) -> list[tuple[CellCrop, tuple[torch.Tensor, ...]]]:
    """Each crop with the decoder's frame terms on its cells: computed once over the smallest crop that holds
    them all and cut per crop, or per crop where that crop is larger than the crops together (a few objects
    far apart). Over the union, the terms near a crop's edge are the frame's own, not the crop's padding. On
    a runner that batches crops the union is rounded as its windows are (`_rounded`)."""
    union = CellCrop(min(c.r0 for c in crops), max(c.r1 for c in crops),
                     min(c.c0 for c in crops), max(c.c1 for c in crops))
    if runner.batches_regions:
        union = union.window(_rounded(union.shape, cells_hw), cells_hw)
    if union.area > sum(c.area for c in crops):
        return [(c, _terms_on(runner, c, query_value, f8, f4)) for c in crops]
    shared = _terms_on(runner, union, query_value, f8, f4)
    return [(c, tuple(c.within(union).cut(t, scale) for t, scale in zip(shared, TERM_SCALES, strict=True)))
            for c in crops]


def _terms_on(
    runner: NetworkRunner, crop: CellCrop, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    return runner.decode_frame_terms(crop.cut(query_value, 1), crop.cut(f8, 2), crop.cut(f4, 4))


def encode_values(
    runner: NetworkRunner, image: torch.Tensor, key_f16: torch.Tensor, probs: torch.Tensor, others: torch.Tensor,
) -> torch.Tensor:
    """Memory values [N,C,h,w] of N objects (probs, others [N,1,H,W]; image and key_f16 of the frame).

    Away from an object's mask its value encoder's input is the same for every object (own mask 0, others =
    all objects' masks), so one shared pass over the frame with that input stands for all of them there, and
    each object's convolutions (`encode_value_local`) run only on a crop around its mask; the attention and
    last block (`encode_value_global`), which gate each channel by its average over the whole map, then run
    on each object's whole map: the shared pass's cells with its crop's pasted in. An absent object (no mask)
    is the shared pass alone. Chosen only where the crops together cost less than whole frames would;
    otherwise, and on runners without crops, the whole frame for every object, in one call.
    """
    n = probs.shape[0]
    cells_hw = (key_f16.shape[-2], key_f16.shape[-1])
    crops = _value_crops(probs, cells_hw) if runner.encodes_regions and n > 1 else None
    if crops is None:
        return runner.encode_value(image, key_f16, probs, others)
    everyone = probs.sum(dim=0, keepdim=True)
    shared = runner.encode_value_local(image, key_f16, torch.zeros_like(everyone), everyone)
    whole = [row for row in range(n) if row not in crops]
    local = shared.expand(n, -1, -1, -1).clone()
    if whole:
        local[whole] = runner.encode_value_local(image, key_f16, probs[whole], others[whole])
    for row, inner in crops.items():
        if inner is None:
            continue
        outer = inner.grown(CONTEXT_CELLS, cells_hw)
        crop_local = runner.encode_value_local(
            outer.cut(image, CELL), outer.cut(key_f16, 1), outer.cut(probs[row:row + 1], CELL),
            outer.cut(others[row:row + 1], CELL),
        )
        inner.cut(local[row:row + 1], 1).copy_(inner.within(outer).cut(crop_local, 1))
    return runner.encode_value_global(local)


def _value_crops(probs: torch.Tensor, cells_hw: tuple[int, int]) -> dict[int, CellCrop | None] | None:
    """The objects to encode on crops, each with the cells it takes from its crop (None: absent, the shared
    pass alone), or None when whole frames cost less. Cost in cells of the local part: a whole frame per
    object, against one shared frame plus each chosen object's crop with its context; the smallest crops are
    chosen first, as many as lower the total."""
    frame = cells_hw[0] * cells_hw[1]
    inner: dict[int, CellCrop | None] = {}
    cost: dict[int, int] = {}
    for row in range(probs.shape[0]):
        mask = CellCrop.of_mask(probs[row, 0] > SUPPORT_FLOOR)
        if mask is None:
            inner[row], cost[row] = None, 0
        else:
            inner[row] = grown = mask.grown(INNER_CELLS, cells_hw)
            cost[row] = grown.grown(CONTEXT_CELLS, cells_hw).area
    best, best_saving, saving = 0, 0, -frame  # the shared pass is paid once
    order = sorted(cost, key=cost.__getitem__)
    for count, row in enumerate(order, start=1):
        saving += frame - cost[row]
        if saving > best_saving:
            best, best_saving = count, saving
    if best == 0:
        return None
    return {row: inner[row] for row in order[:best]}

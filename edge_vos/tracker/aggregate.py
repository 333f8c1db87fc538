"""Multi-object soft aggregation as official STCN, and the label map it decides."""

from __future__ import annotations

import torch

from edge_vos.model.preprocess import Rect

# The stack's clamp: logits of at most +-16, so the odds below stay far inside float32's range.
_CLAMP = 1e-7
# Pixels per slice of `soft_aggregate`: its steps each pass over every plane, so the whole frame's planes
# (several MB at many objects) went through memory once per step; a slice's planes stay in the CPU's cache.
_SLICE_PIXELS = 1 << 14


def soft_aggregate(probs: torch.Tensor) -> torch.Tensor:
    """Per-object probabilities [O,...] -> [O+1,...] with background first, summing to 1.

    Background is prod(1 - p_i); the stack is clamped, turned into logits and re-normalised with a
    softmax, so overlapping objects compete instead of both claiming a pixel (official STCN). The softmax
    of logits log(p / (1 - p)) is the odds p / (1 - p) divided by their sum, which is what is computed:
    the same values up to float rounding without a log and an exp per element and object, and without
    torch's softmax across the outermost axis (a strided loop).

    Each pixel's result depends on that pixel alone, so on a CPU it is computed in slices of pixels, with the
    same operations per slice: the same values, bit for bit.
    """
    if (probs.device.type != "cpu" or probs[0].numel() <= _SLICE_PIXELS or not probs.is_contiguous()
            or (probs.requires_grad and torch.is_grad_enabled())):
        return _aggregate(probs)
    flat = probs.view(probs.shape[0], -1)
    out = torch.empty((probs.shape[0] + 1, flat.shape[1]), dtype=probs.dtype)
    for start in range(0, flat.shape[1], _SLICE_PIXELS):
        out[:, start:start + _SLICE_PIXELS] = _aggregate(flat[:, start:start + _SLICE_PIXELS])
    return out.view(probs.shape[0] + 1, *probs.shape[1:])


def _aggregate(probs: torch.Tensor) -> torch.Tensor:
    stacked = torch.cat([torch.prod(1 - probs, dim=0, keepdim=True), probs], dim=0).clamp_(_CLAMP, 1 - _CLAMP)
    odds = stacked.div_(1 - stacked)
    return odds.mul_(odds.sum(dim=0, keepdim=True).reciprocal_())


def label_map(full: torch.Tensor, ids: list[int], regions: list[Rect | None] | None = None) -> torch.Tensor:
    """Aggregated probabilities [O+1,H,W] (background first) -> uint8 label map [H,W] of `ids` (0 = background).

    The same answer as `argmax` over dim 0 followed by a lookup of the ids (ties go to the lower row), as a
    running maximum: O element-wise passes over contiguous planes instead of a reduction across the
    outermost axis, which torch runs as a slow strided loop, and no int64 index map.

    regions: per id, the rows and columns outside which its plane is at most the background's (an object
    decoded on a crop: its probability there was 0, the aggregation's floor, which background never falls
    below), or None. Such a plane cannot win outside, so its pass covers the region only.
    """
    if full.shape[0] != len(ids) + 1:
        raise ValueError(f"label_map: {full.shape[0]} rows for {len(ids)} ids (+ background)")
    labels = torch.zeros(full.shape[1:], dtype=torch.uint8, device=full.device)
    if not ids:
        return labels
    if regions is not None and len(regions) != len(ids):
        raise ValueError(f"label_map: {len(regions)} regions for {len(ids)} ids")
    best, owned = full[0], False  # owned: best is a copy of ours, to raise in place
    for row, obj_id in enumerate(ids, start=1):
        region = regions[row - 1] if regions is not None else None
        if region is None:
            plane = full[row]
            labels.masked_fill_(plane > best, obj_id)
            if row < len(ids):
                best, owned = torch.maximum(best, plane), True
            continue
        if not owned and row < len(ids):
            best, owned = best.clone(), True  # raised in place below, on the region only
        plane, top = full[row, region[0], region[1]], best[region[0], region[1]]
        labels[region[0], region[1]].masked_fill_(plane > top, obj_id)
        if row < len(ids):
            torch.maximum(top, plane, out=top)
    return labels

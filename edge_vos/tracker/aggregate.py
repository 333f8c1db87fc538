"""Multi-object soft aggregation as official STCN, and the label map it decides."""

from __future__ import annotations

import torch

# The stack's clamp: logits of at most +-16, so the odds below stay far inside float32's range.
_CLAMP = 1e-7


def soft_aggregate(probs: torch.Tensor) -> torch.Tensor:
    """Per-object probabilities [O,...] -> [O+1,...] with background first, summing to 1.

    Background is prod(1 - p_i); the stack is clamped, turned into logits and re-normalised with a
    softmax, so overlapping objects compete instead of both claiming a pixel (official STCN). The softmax
    of logits log(p / (1 - p)) is the odds p / (1 - p) divided by their sum, which is what is computed:
    the same values up to float rounding without a log and an exp per element and object, and without
    torch's softmax across the outermost axis (a strided loop).
    """
    stacked = torch.cat([torch.prod(1 - probs, dim=0, keepdim=True), probs], dim=0).clamp_(_CLAMP, 1 - _CLAMP)
    odds = stacked.div_(1 - stacked)
    return odds.mul_(odds.sum(dim=0, keepdim=True).reciprocal_())


def label_map(full: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """Aggregated probabilities [O+1,H,W] (background first) -> uint8 label map [H,W] of `ids` (0 = background).

    The same answer as `argmax` over dim 0 followed by a lookup of the ids (ties go to the lower row), as a
    running maximum: O element-wise passes over contiguous planes instead of a reduction across the
    outermost axis, which torch runs as a slow strided loop, and no int64 index map.
    """
    if full.shape[0] != len(ids) + 1:
        raise ValueError(f"label_map: {full.shape[0]} rows for {len(ids)} ids (+ background)")
    labels = torch.zeros(full.shape[1:], dtype=torch.uint8, device=full.device)
    if not ids:
        return labels
    best = full[0]
    for row, obj_id in enumerate(ids, start=1):
        plane = full[row]
        labels.masked_fill_(plane > best, obj_id)
        best = torch.maximum(best, plane) if row < len(ids) else best
    return labels

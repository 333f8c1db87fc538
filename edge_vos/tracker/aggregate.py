"""Multi-object soft aggregation as official STCN, and the label map it decides."""

from __future__ import annotations

import torch


def soft_aggregate(probs: torch.Tensor) -> torch.Tensor:
    """Per-object probabilities [O,...] -> [O+1,...] with background first, summing to 1.

    Background is prod(1 - p_i); the stack is clamped, turned into logits and re-normalised with a
    softmax, so overlapping objects compete instead of both claiming a pixel.
    """
    background = torch.prod(1 - probs, dim=0, keepdim=True)
    stacked = torch.cat([background, probs], dim=0).clamp(1e-7, 1 - 1e-7)
    return torch.softmax(torch.log(stacked / (1 - stacked)), dim=0)


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

"""Multi-object soft aggregation as official STCN."""

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

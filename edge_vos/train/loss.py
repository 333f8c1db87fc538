"""The training loss: STCN's soft aggregation of per-object probabilities and its bootstrapped cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_aggregate_logits(probs: torch.Tensor) -> torch.Tensor:
    """Per-object probabilities [B,O,H,W] -> log-probabilities [B,O+1,H,W] (STCN's soft aggregation)."""
    background = torch.prod(1 - probs, dim=1, keepdim=True)
    stacked = torch.cat([background, probs], dim=1).clamp(1e-7, 1 - 1e-7)
    return torch.log_softmax(torch.log(stacked / (1 - stacked)), dim=1)


def bootstrapped_ce(log_probs: torch.Tensor, labels: torch.Tensor, p: float) -> torch.Tensor:
    """Mean cross-entropy over the hardest share `p` of all pixels in the batch (STCN's BootstrappedCE)."""
    raw = F.nll_loss(log_probs, labels, reduction="none").flatten()
    if p >= 1.0:
        return raw.mean()
    k = max(1, int(raw.numel() * p))
    return raw.topk(k, sorted=False).values.mean()


def labels_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Object masks [B,O,H,W] (0/1) -> class map [B,H,W] (0 = background, k = object k)."""
    background = (masks.sum(dim=1, keepdim=True) < 0.5).float()
    return torch.cat([background, masks], dim=1).argmax(dim=1)

"""Soft aggregation: the odds form computes official STCN's softmax of clamped logits."""

from __future__ import annotations

import pytest
import torch

from edge_vos.tracker.aggregate import soft_aggregate

from .concat_reference import softmax_of_logits


@pytest.mark.parametrize("objects", [1, 2, 4, 8])
def test_odds_form_equals_thesoftmax_of_logits(objects) -> None:
    generator = torch.Generator().manual_seed(objects)
    probs = torch.rand(objects, 1, 45, 61, generator=generator)
    probs[:, :, :3] = 0.0  # certain background, certain objects and overlaps: the clamp's corners
    probs[0, :, 3:6] = 1.0
    probs[:, :, 6:9] = 1.0
    probs[:, :, 9:12] = torch.rand(objects, 1, 3, 61, generator=generator) ** 12  # tiny values
    full = soft_aggregate(probs)
    expected = softmax_of_logits(probs)
    assert full.shape == (objects + 1, 1, 45, 61)
    torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full.sum(dim=0), torch.ones(1, 45, 61), rtol=0, atol=1e-6)
    assert torch.equal(full.argmax(dim=0)[:, 12:], expected.argmax(dim=0)[:, 12:])

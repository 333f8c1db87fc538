"""Many objects: the tracker's per-object path computes what it computed before its per-frame share was
split off (network convolutions, soft aggregation, the prior's windows in place), at 1 to 8 objects."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from edge_vos.data.synthetic import generate_sequence
from edge_vos.model import build_network
from edge_vos.tracker import Tracker, TrackerConfig

from .concat_reference import decode_by_concatenation, softmax_of_logits, value_by_concatenation

FRAMES, SIZE = 8, (96, 160)


@pytest.fixture(scope="module")
def effl0():
    """The bundled arch with random weights of trained-like magnitudes (the initialisation's near-zero heads
    would hide a wrong split)."""
    torch.manual_seed(5)
    net = build_network("stcn-effl0").eval()
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    return net


@pytest.fixture(scope="module")
def scene():
    frames, labels = generate_sequence(11, FRAMES, SIZE, num_objects=8, num_distractors=1)
    assert all((labels[0] == i).any() for i in range(1, 9)), "every object must be on the first frame"
    return frames, labels[0]


def _stream(network, frames, mask) -> list:
    # The shipped tracker (prior on, TMRN sparse) run eagerly in fp32 at the input size: the backends' parity
    # with eager is tests/test_export.py's and tests/test_backends.py's.
    config = TrackerConfig(resolution=0, device="cpu", backend="torch", precision="fp32")
    config.memory.mem_every = 2  # more memory writes in a short stream
    tracker = Tracker(config, network=network)
    return [tracker.step(frame, mask if t == 0 else None) for t, frame in enumerate(frames)]


@pytest.mark.parametrize("objects", [1, 2, 4, 8])
def test_many_objects_stream_equals_the_per_object_concatenation(effl0, scene, objects, monkeypatch) -> None:
    frames, first = scene
    mask = np.where(first <= objects, first, 0).astype(np.uint8)
    reference = copy.deepcopy(effl0)
    reference.encode_value = lambda *a: value_by_concatenation(reference, *a)
    reference.decode = lambda *a: decode_by_concatenation(reference, *a)
    with monkeypatch.context() as patch:
        patch.setattr("edge_vos.tracker.tracker.soft_aggregate", softmax_of_logits)
        expected = _stream(reference, frames, mask)
    got = _stream(effl0, frames, mask)
    assert sum(r.memory_written for r in got) >= 3
    for a, b in zip(got, expected, strict=True):
        assert a.object_ids == b.object_ids == list(range(1, objects + 1))
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-4)
        # labels may differ only where two classes tie within float rounding (random weights saturate many
        # pixels of several objects at the same clamped probability)
        classes = np.concatenate([1 - b.probabilities.sum(axis=0, keepdims=True), b.probabilities])
        top2 = np.sort(classes, axis=0)[-2:]
        differ = a.labels != b.labels
        assert np.all(top2[1][differ] - top2[0][differ] < 1e-4), (top2[1] - top2[0])[differ].max()
    assert any(len(np.unique(r.labels)) > 1 for r in got[1:])  # something is tracked, not all background

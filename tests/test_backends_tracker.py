"""Whole-tracker parity: `onnxruntime` and `torch` give the same label maps on a DAVIS clip.

With the trained default weights when they exist; otherwise a seeded random network, whose label maps are
close to noise, so the probabilities (the decoder's logits after soft aggregation) are compared too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edge_vos.model.weights import DEFAULT_WEIGHTS
from edge_vos.readout import StcnOptions
from edge_vos.tracker import Tracker, TrackerConfig
from edge_vos.tracker.config import MemoryConfig, PriorConfig, ReadoutConfig

from .conftest import require_davis

FRAMES = 8


@pytest.fixture(scope="session")
def engines_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "edge-vos-engines"
    path.mkdir(exist_ok=True)
    return path


def _network(r18_network):
    if DEFAULT_WEIGHTS.is_file():
        from edge_vos.model.checkpoint import load_network

        return load_network(DEFAULT_WEIGHTS).eval()
    return r18_network


def _run(network, backend: str, frames: list[np.ndarray], first_mask: np.ndarray) -> list:
    config = TrackerConfig(
        resolution=240, device="cpu", backend=backend,
        # The readout is the same PyTorch code for both backends; STCN's is used because TMRN's SVD agents are
        # ill-conditioned on trained keys (hundreds of singular values equal 1, docs/readout.md), so 1e-6
        # differences in the keys may pick another subspace: that would test the SVD, not the backend.
        readout=ReadoutConfig(kind="stcn", stcn=StcnOptions(top_k=0)),
        memory=MemoryConfig(capacity=4, mem_every=3, max_pinned=1),
        precision="fp32", prior=PriorConfig(enabled=False),  # both backends in fp32, the network's output alone
    )
    torch.manual_seed(0)
    tracker = Tracker(config, network=network)
    results = [tracker.step(frames[0], first_mask)]
    results += [tracker.step(f) for f in frames[1:]]
    return results


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_onnxruntime_and_torch_trackers_agree_on_a_davis_clip(r18_network, engines_dir, monkeypatch) -> None:
    from edge_vos.data.davis import read_image, read_mask

    root = require_davis()
    monkeypatch.setenv("EDGE_VOS_ENGINES", str(engines_dir))  # the tracker creates runners with the default cache
    seq = "blackswan"
    frames = [read_image(p) for p in sorted((root / "JPEGImages" / "480p" / seq).glob("*.jpg"))[:FRAMES]]
    first_mask = (read_mask(root / "Annotations" / "480p" / seq / "00000.png") > 0).astype(np.uint8)
    network = _network(r18_network)
    ort = _run(network, "onnxruntime", frames, first_mask)
    eager = _run(network, "torch", frames, first_mask)
    ious = []
    for a, b in zip(ort[1:], eager[1:], strict=True):
        assert a.object_ids == b.object_ids == [1]
        ious.append(_iou(a.labels == 1, b.labels == 1))
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-3)
    assert np.mean(ious) >= 0.99, ious

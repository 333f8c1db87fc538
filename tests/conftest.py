"""Shared fixtures: tiny networks and frames that keep the suite fast on a 2-core CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# One intra-op thread: with several processes on the 2-core machines (a service subprocess, a benchmark,
# another engineer's job) OpenMP's spinning threads oversubscribe the cores and a 37 ms step turns into
# 700 ms. Speed is measured by the benchmarks in tools/, never by the tests.
torch.set_num_threads(int(os.environ.get("EDGE_VOS_TEST_THREADS", "1")))

SHARED = Path(__file__).resolve().parents[2] / "shared"
DAVIS = SHARED / "data" / "davis2016"
CUTIE = SHARED / "data" / "cutie-examples"


@pytest.fixture(scope="session")
def r18_network():
    from edge_vos.model import random_network

    return random_network("stcn-r18").eval()


@pytest.fixture(scope="session")
def lite_network():
    """A compact network (value_dim 128): the same code paths as stcn-r18 at a fraction of the CPU time."""
    from edge_vos.model import random_network

    return random_network("stcn-r18-lite").eval()


def moving_square_frames(n: int, h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    """Frames with a textured square moving right over a noisy background (uint8 RGB [n,h,w,3])."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 80, size=(n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        x = 8 + (t % (w - 40))
        frames[t, 16:40, x : x + 24] = (220, 40, 40)
    return frames


def require_davis() -> Path:
    if not DAVIS.is_dir():
        pytest.skip(f"DAVIS-2016 data not found at {DAVIS}")
    return DAVIS

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

# The real data (never committed): $EDGE_VOS_DATA when set, else the shared folder next to the checkout
# (../shared/data). Tests that need it skip, naming the path they looked at and where it came from.
DATA_ENV = "EDGE_VOS_DATA"
if os.environ.get(DATA_ENV):
    DATA = Path(os.environ[DATA_ENV]).expanduser().resolve()
    DATA_ORIGIN = f"${DATA_ENV}"
else:
    DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
    DATA_ORIGIN = f"the default ../shared/data; set ${DATA_ENV} to use another folder"
SHARED = DATA.parent  # also holds reference/ (official STCN's state-dict key list)
DAVIS = DATA / "davis2016"
CUTIE = DATA / "cutie-examples"


def require_data(path: Path, what: str = "data") -> Path:
    """`path` when it exists, else skip the test saying where it looked."""
    if not path.exists():
        pytest.skip(f"{what} not found at {path} ({DATA_ORIGIN})")
    return path


def pytest_report_header() -> str:
    state = "present" if DAVIS.is_dir() else "absent: tests that need it skip"
    return f"edge-vos test data: {DATA} ({DATA_ORIGIN}); DAVIS-2016 {state}"


@pytest.fixture(scope="session")
def r18_network():
    from edge_vos.model import random_network

    return random_network("stcn-r18").eval()


@pytest.fixture(scope="session")
def lite_network():
    """A compact network (value_dim 128): the same code paths as stcn-r18 at a fraction of the CPU time."""
    from edge_vos.model import random_network

    return random_network("stcn-r18-lite").eval()


def track_labels(config, frames: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
    """The label maps [T,H,W] a fresh tracker with `config` paints, prompted with `first_mask` on frame 0."""
    from edge_vos.tracker import Tracker

    tracker = Tracker(config)
    maps = [tracker.step(frames[0], first_mask).labels]
    maps += [tracker.step(frame).labels for frame in frames[1:]]
    return np.stack(maps)


def moving_square_frames(n: int, h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    """Frames with a textured square moving right over a noisy background (uint8 RGB [n,h,w,3])."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 80, size=(n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        x = 8 + (t % (w - 40))
        frames[t, 16:40, x : x + 24] = (220, 40, 40)
    return frames


def require_davis() -> Path:
    return require_data(DAVIS, "DAVIS-2016")

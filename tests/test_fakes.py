"""The service tests' FakeTracker refuses exactly what the real Tracker refuses (TrackerInputError, nothing
changed), and accepts what it accepts: the service's handling of tracker input errors is tested against
the same contract the real tracker keeps (issue #14 item 6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from edge_vos.tracker import Tracker, TrackerConfig, TrackerInputError

from .fakes import FakeTracker

H, W = 64, 80


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _mask(*ids: int, h: int = H, w: int = W, dtype: Any = np.uint8) -> np.ndarray:
    mask = np.zeros((h, w), dtype)
    for i, obj_id in enumerate(ids):
        mask[4 + 6 * i: 8 + 6 * i, 4:20] = obj_id
    return mask


# Each case: a call on a tracker that already tracks objects 1 and 2 (max_objects 3).
CASES: dict[str, Callable[[Any], Any]] = {
    "plain step": lambda t: t.step(_image()),
    "prompt a new object": lambda t: t.step(_image(), _mask(3)),
    "re-prompt a tracked object": lambda t: t.step(_image(), _mask(1)),
    "name a subset of the mask": lambda t: t.step(_image(), _mask(1, 3), [3]),
    "objects without a mask": lambda t: t.step(_image(), None, [1]),
    "grey image": lambda t: t.step(np.zeros((H, W), np.uint8)),
    "float image": lambda t: t.step(np.zeros((H, W, 3), np.float32)),
    "list image": lambda t: t.step([[0, 0, 0]]),
    "mask of another size": lambda t: t.step(_image(), _mask(3, h=H - 1)),
    "float mask": lambda t: t.step(_image(), _mask(3).astype(np.float32)),
    "3-D mask": lambda t: t.step(_image(), _mask(3)[None]),
    "id 0 named": lambda t: t.step(_image(), _mask(3), [0]),
    "id 255 in a wide mask": lambda t: t.step(_image(), _mask(255, dtype=np.int32)),
    "named id not in the mask": lambda t: t.step(_image(), _mask(3), [4]),
    "one object too many": lambda t: t.step(_image(), _mask(3, 4)),
    "add_prompt a new object": lambda t: t.add_prompt(_image(), _mask(3), [3]),
    "add_prompt an empty mask": lambda t: t.add_prompt(_image(), _mask()),
    "add_prompt beyond the limit": lambda t: t.add_prompt(_image(), _mask(3, 4)),
    "add_prompt of another size": lambda t: t.add_prompt(_image(), _mask(3, w=W + 2)),
}


def _outcome(tracker: Any, call: Callable[[Any], Any]) -> tuple[str, list[int]]:
    """'ok' or the error type, and the objects tracked afterwards (unchanged after an error)."""
    try:
        call(tracker)
    except TrackerInputError:
        return "TrackerInputError", sorted(tracker.object_ids)
    return "ok", sorted(tracker.object_ids)


@pytest.fixture(scope="module")
def network() -> Any:
    from edge_vos.model.weights import random_network

    return random_network("stcn-r18-lite").eval()


@pytest.mark.parametrize("case", list(CASES))
def test_fake_and_real_tracker_agree(case: str, network: Any) -> None:
    config = TrackerConfig(resolution=64, device="cpu", max_objects=3)
    real = Tracker(config, network=network)
    fake = FakeTracker(max_objects=3)
    for tracker in (real, fake):
        tracker.step(_image(), _mask(1, 2))
    assert _outcome(fake, CASES[case]) == _outcome(real, CASES[case])


def test_removing_an_unknown_object_is_a_key_error_for_both(network: Any) -> None:
    real = Tracker(TrackerConfig(resolution=64, device="cpu"), network=network)
    for tracker in (real, FakeTracker()):
        with pytest.raises(KeyError):
            tracker.remove_object(9)

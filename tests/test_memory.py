"""Ring memory: fixed allocation, pinned prompts, ring rotation, per-object validity."""

import pytest
import torch

from edge_vos.tracker.aggregate import soft_aggregate
from edge_vos.tracker.memory import RingMemory
from edge_vos.tracker.objects import ObjectManager


def _memory(capacity: int = 4, max_pinned: int = 2, unbounded: bool = False) -> RingMemory:
    return RingMemory(capacity, 3, key_dim=2, value_dim=3, feature_hw=(2, 2), max_pinned=max_pinned,
                      unbounded=unbounded)


def _write(mem: RingMemory, frame: int, pin: bool = False, objects: tuple[int, ...] = (0,)) -> int:
    key = torch.full((1, 2, 2, 2), float(frame))
    values = torch.full((len(objects), 3, 2, 2), float(frame))
    return mem.write(key, values, list(objects), pin=pin, frame_index=frame)


def test_ring_keeps_pinned_and_rotates_oldest_without_reallocating() -> None:
    mem = _memory()
    keys_ptr = mem.keys.data_ptr()
    _write(mem, 0, pin=True)
    for frame in range(1, 200):
        _write(mem, frame)
    assert mem.allocations == 1 and mem.keys.data_ptr() == keys_ptr
    frames = sorted(mem.frame_of)
    assert frames == [0, 197, 198, 199]  # the prompt stays, the ring holds the newest three
    assert mem.pinned.sum() == 1


def test_too_many_prompts_unpin_the_oldest() -> None:
    mem = _memory(capacity=4, max_pinned=2)
    for frame in range(3):
        _write(mem, frame, pin=True)
    assert int(mem.pinned.sum()) == 2
    pinned_frames = sorted(mem.frame_of[i] for i in range(4) if mem.pinned[i])
    assert pinned_frames == [1, 2]
    for frame in range(3, 10):
        _write(mem, frame)
    assert sorted(mem.frame_of) == [1, 2, 8, 9]


def test_late_object_is_invalid_in_older_slots() -> None:
    mem = _memory()
    _write(mem, 0, pin=True, objects=(0,))
    _write(mem, 1, objects=(0,))
    _write(mem, 2, pin=True, objects=(0, 1))
    view = mem.view([0, 1])
    assert view.valid.tolist() == [[[True, True, True], [False, False, True]]]
    assert view.values.shape == (1, 2, 3, 3, 2, 2)


def test_forget_object_and_non_contiguous_view() -> None:
    mem = _memory()
    _write(mem, 0, pin=True, objects=(0, 1, 2))
    mem.forget_object(1)
    assert not mem.has_memory_for(1) and mem.has_memory_for(2)
    view = mem.view([0, 2])
    assert view.values.shape[1] == 2 and view.valid.all()


def test_unbounded_mode_grows_like_official_stcn() -> None:
    mem = _memory(capacity=2, unbounded=True)
    for frame in range(9):
        _write(mem, frame, pin=frame == 0)
    assert mem.num_valid == 9 and mem.allocations > 1
    assert sorted(f for f in mem.frame_of if f >= 0) == list(range(9))


def test_empty_memory_view_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="empty"):
        _memory().view([0])


def test_object_manager_reuses_lowest_free_index_and_limits() -> None:
    objects = ObjectManager(2)
    assert objects.add(7) == 0 and objects.add(3) == 1
    with pytest.raises(ValueError, match="more than 2 objects"):
        objects.add(9)
    objects.remove(7)
    assert objects.add(9) == 0 and objects.ids == [9, 3]
    with pytest.raises(ValueError, match="1..254"):
        objects.add(0)
    with pytest.raises(KeyError, match="unknown object id 42"):
        objects.remove(42)


def test_soft_aggregate_in_slices_is_bit_identical_to_one_pass() -> None:
    """A frame larger than one slice is aggregated slice by slice with the same operations per pixel."""
    from edge_vos.tracker.aggregate import _SLICE_PIXELS, _aggregate

    torch.manual_seed(0)
    probs = torch.rand(5, 1, 97, (3 * _SLICE_PIXELS) // 97 + 5) ** 3
    probs[:, :, :20] = 0
    probs[1, :, -3:] = 1
    assert torch.equal(soft_aggregate(probs), _aggregate(probs))


def test_soft_aggregate_sums_to_one_and_prefers_confident_object() -> None:
    probs = torch.tensor([[0.9, 0.2], [0.6, 0.1]])
    full = soft_aggregate(probs)
    assert torch.allclose(full.sum(0), torch.ones(2))
    assert full[:, 0].argmax() == 1 and full[:, 1].argmax() == 0

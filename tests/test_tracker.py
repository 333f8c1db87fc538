"""Tracker.step: streaming, objects joining and leaving, fixed memory, input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_vos.readout import TmrnOptions
from edge_vos.tracker import Tracker, TrackerConfig
from edge_vos.tracker.config import MemoryConfig, PriorConfig, ReadoutConfig

from .conftest import moving_square_frames

# Eager fp32 without the prior: the tests here are about streaming, not about a backend or the prior.
EAGER = {"device": "cpu", "backend": "torch", "precision": "fp32", "prior": PriorConfig(enabled=False)}


def _tracker(network, **memory) -> Tracker:
    config = TrackerConfig(
        resolution=0, profile=True, **EAGER,  # type: ignore[arg-type]
        readout=ReadoutConfig(tmrn=TmrnOptions(agents=8, agents_every=1)),
        memory=MemoryConfig(**{"capacity": 4, "mem_every": 2, "max_pinned": 2, **memory}),
    )
    return Tracker(config, network=network)


def _box_mask(h: int, w: int, boxes: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    for obj_id, (y0, y1, x0, x1) in boxes.items():
        mask[y0:y1, x0:x1] = obj_id
    return mask


def test_no_objects_gives_an_empty_label_map(lite_network) -> None:
    tracker = _tracker(lite_network)
    result = tracker.step(moving_square_frames(1)[0])
    assert result.labels.shape == (64, 96) and not result.labels.any() and result.object_ids == []
    # The runner (an exported engine, on some backends) is ready before the first prompt arrives.
    assert tracker.engines.sizes == [(64, 96)]


def test_prompt_frame_returns_the_prompt_and_outputs_have_input_size(lite_network) -> None:
    tracker = _tracker(lite_network)
    frames = moving_square_frames(3, h=70, w=90)  # not multiples of 16: padding must be undone
    mask = _box_mask(70, 90, {3: (16, 40, 8, 32), 5: (50, 60, 50, 80)})
    first = tracker.step(frames[0], mask)
    assert np.array_equal(first.labels, mask) and first.object_ids == [3, 5] and first.memory_written
    nxt = tracker.step(frames[1])
    assert nxt.labels.shape == (70, 90) and nxt.probabilities.shape == (2, 70, 90)
    assert set(np.unique(nxt.labels)) <= {0, 3, 5}
    assert {"key_encode", "readout", "decode", "total"} <= set(nxt.timings_ms)


def test_long_stream_with_objects_joining_and_leaving_allocates_memory_once(lite_network) -> None:
    tracker = _tracker(lite_network)
    frames = moving_square_frames(20, h=48, w=64)
    tracker.step(frames[0], _box_mask(48, 64, {1: (16, 40, 8, 32)}))
    memory = tracker.memory
    assert memory is not None
    keys_ptr, values_ptr = memory.keys.data_ptr(), memory.values.data_ptr()
    steps = 1
    for t in range(1, 500):
        frame = frames[t % len(frames)]
        if t % 97 == 0:  # a new object joins
            new_id = 1 + t // 97
            tracker.step(frame, _box_mask(48, 64, {new_id: (0, 10, 0, 10 + new_id)}), objects=[new_id])
            steps += 1
        elif t % 131 == 0 and len(tracker.object_ids) > 1:
            tracker.remove_object(tracker.object_ids[0])
        else:
            result = tracker.step(frame)
            steps += 1
            assert result.object_ids == tracker.object_ids
    assert tracker.memory is memory and memory.allocations == 1
    assert memory.keys.data_ptr() == keys_ptr and memory.values.data_ptr() == values_ptr
    assert memory.num_valid == memory.capacity
    assert tracker.frame_index == steps - 1 == 496  # three of the 500 iterations removed an object


def _tracker_with_late_object(network) -> tuple[Tracker, np.ndarray, list[int], int]:
    tracker = _tracker(network, capacity=6, max_pinned=2)
    frames = moving_square_frames(12, h=48, w=64)
    tracker.step(frames[0], _box_mask(48, 64, {1: (16, 40, 8, 32)}))
    for t in range(1, 6):
        tracker.step(frames[t])
    tracker.step(frames[6], _box_mask(48, 64, {2: (0, 12, 40, 60)}), objects=[2])
    memory = tracker.memory
    index = tracker.objects.index(2)
    before = [s for s in range(memory.capacity) if memory.valid[s] and memory.frame_of[s] < 6]
    return tracker, frames, before, index


def test_late_object_ignores_memory_written_before_it_joined(lite_network) -> None:
    tracker, frames, before, index = _tracker_with_late_object(lite_network)
    assert before and not tracker.memory.object_valid[index, before].any()
    reference = tracker.step(frames[7]).probabilities
    # Garbage in object 2's values of the slots written before it joined changes nothing...
    tracker, frames, before, index = _tracker_with_late_object(lite_network)
    tracker.memory.values[0, index, before] = 1e3
    assert np.allclose(tracker.step(frames[7]).probabilities, reference, atol=1e-5)
    # ...whereas reading those slots for it (no per-object validity) would change its output.
    tracker, frames, before, index = _tracker_with_late_object(lite_network)
    tracker.memory.values[0, index, before] = 1e3
    tracker.memory.object_valid[index, before] = True
    assert not np.allclose(tracker.step(frames[7]).probabilities, reference, atol=1e-3)


def test_removed_object_disappears_and_its_id_can_return(lite_network) -> None:
    tracker = _tracker(lite_network)
    frames = moving_square_frames(6, h=48, w=64)
    tracker.step(frames[0], _box_mask(48, 64, {1: (16, 40, 8, 32), 2: (0, 10, 40, 60)}))
    tracker.step(frames[1])
    tracker.remove_object(1)
    result = tracker.step(frames[2])
    assert result.object_ids == [2] and 1 not in np.unique(result.labels)
    again = tracker.step(frames[3], _box_mask(48, 64, {1: (16, 40, 8, 32)}), objects=[1])
    assert again.object_ids == [1, 2] and (again.labels == 1).sum() == 24 * 24
    tracker.remove_object(2)
    tracker.remove_object(1)
    assert tracker.step(frames[4]).object_ids == []


def test_add_prompt_on_a_past_frame(lite_network) -> None:
    tracker = _tracker(lite_network)
    frames = moving_square_frames(5, h=48, w=64)
    tracker.step(frames[0], _box_mask(48, 64, {1: (16, 40, 8, 32)}))
    tracker.step(frames[1])
    tracker.add_prompt(frames[1], _box_mask(48, 64, {4: (0, 10, 40, 60)}))
    assert tracker.frame_index == 1
    result = tracker.step(frames[2])
    assert result.object_ids == [1, 4]


def test_bad_input_is_rejected_and_loses_nothing(lite_network) -> None:
    tracker = _tracker(lite_network, capacity=3, max_pinned=1)
    frames = moving_square_frames(3, h=48, w=64)
    tracker.step(frames[0], _box_mask(48, 64, {1: (16, 40, 8, 32)}))
    with pytest.raises(ValueError, match="mask is 63x48 but the frame is 64x48"):
        tracker.step(frames[1], np.zeros((48, 63), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        tracker.step(frames[1].astype(np.float32))
    with pytest.raises(ValueError, match=r"objects \[7\] are not in the mask"):
        tracker.step(frames[1], _box_mask(48, 64, {2: (0, 5, 0, 5)}), objects=[7])
    with pytest.raises(ValueError, match="1..254"):
        tracker.step(frames[1], np.full((48, 64), 300, np.int32))
    many = _box_mask(48, 64, {i: (0, 4, 4 * i, 4 * i + 4) for i in range(2, 11)})
    with pytest.raises(ValueError, match="more than 8 objects"):
        tracker.step(frames[1], many)
    assert tracker.frame_index == 0 and tracker.object_ids == [1]
    assert tracker.step(frames[1]).frame_index == 1


def test_a_rejected_frame_of_a_new_size_loses_nothing(lite_network) -> None:
    """A new frame size starts a new stream, but only once the frame and its prompt are known to be valid."""
    tracker = _tracker(lite_network)
    frames = moving_square_frames(3, h=48, w=64)
    tracker.step(frames[0], _box_mask(48, 64, {1: (16, 40, 8, 32), 2: (0, 8, 0, 8)}))
    memory = tracker.memory
    bigger = moving_square_frames(1, h=64, w=96)[0]
    for bad_mask, match in (
        (np.zeros((48, 64), np.uint8), "mask is 64x48 but the frame is 96x64"),
        (np.full((64, 96), 300, np.int32), "1..254"),
        (_box_mask(64, 96, {i: (0, 4, 4 * i, 4 * i + 4) for i in range(1, 10)}), "more than 8 objects"),
    ):
        with pytest.raises(ValueError, match=match):
            tracker.step(bigger, bad_mask.astype(np.int32))
    with pytest.raises(ValueError, match="none of the requested objects"):
        tracker.add_prompt(bigger, np.zeros((64, 96), np.uint8))
    assert tracker.object_ids == [1, 2] and tracker.memory is memory and tracker.frame_index == 0
    assert tracker.step(frames[1]).object_ids == [1, 2]
    # A valid frame of the new size does start a new stream (8 new objects fit: the old two are gone).
    result = tracker.step(bigger, _box_mask(64, 96, {i: (0, 4, 4 * i, 4 * i + 4) for i in range(3, 11)}))
    assert result.object_ids == list(range(3, 11)) and tracker.memory is not memory


def test_runners_of_least_recently_used_sizes_are_dropped(lite_network, monkeypatch) -> None:
    import edge_vos.tracker.engines as tracker_module

    built: list[tuple[int, int]] = []
    real = tracker_module.create_runner

    def counting(network, backend, device, precision, padded_hw, **kwargs):
        built.append(padded_hw)
        return real(network, backend, device, precision, padded_hw, **kwargs)

    monkeypatch.setattr(tracker_module, "create_runner", counting)
    tracker = _tracker(lite_network)
    sizes = [(32, 48), (48, 64), (64, 80), (80, 96)]
    assert tracker_module.RUNNER_SIZES_KEPT == 3
    for h, w in [*sizes, sizes[3], sizes[1], sizes[0]]:
        tracker.step(moving_square_frames(1, h=h, w=w)[0], _box_mask(h, w, {1: (4, 20, 4, 20)}))
    # The 4th size evicts the 1st; the 4th and 2nd are still there; the 1st is built again.
    assert built == [*sizes, sizes[0]]


def test_official_stcn_mode_grows_memory(lite_network) -> None:
    config = TrackerConfig(resolution=0, **EAGER).official_stcn()  # type: ignore[arg-type]
    config.memory.capacity = 2
    tracker = Tracker(config, network=lite_network)
    frames = moving_square_frames(12, h=32, w=48)
    tracker.step(frames[0], _box_mask(32, 48, {1: (8, 20, 8, 20)}))
    for t in range(1, 12):
        tracker.step(frames[t])
    assert tracker.memory.num_valid == 3 and tracker.memory.allocations == 2  # frames 0, 5, 10


def test_missing_default_weights_is_a_clear_error(tmp_path) -> None:
    config = TrackerConfig(device="cpu")
    config.model.weights = str(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        Tracker(config)


def test_weights_round_trip_through_the_config(tmp_path, lite_network) -> None:
    from edge_vos.model import save_network

    path = tmp_path / "w.safetensors"
    save_network(lite_network, path)
    config = TrackerConfig(device="cpu", resolution=0)
    config.model.weights = str(path)
    tracker = Tracker(config)
    for name, tensor in lite_network.state_dict().items():
        assert torch.equal(tracker.network.state_dict()[name], tensor)


def test_working_size_scales_down_but_never_up(lite_network) -> None:
    config = TrackerConfig(resolution=240, device="cpu", readout=ReadoutConfig(kind="stcn"))
    assert config.working_short_side(480, 854) == 240 and config.working_short_side(240, 432) is None
    assert config.working_short_side(200, 432) is None
    assert TrackerConfig(resolution=0).working_short_side(480, 854) is None
    tracker = Tracker(TrackerConfig(resolution=480, readout=ReadoutConfig(kind="stcn"), **EAGER),  # type: ignore[arg-type]
                      network=lite_network)
    frame = moving_square_frames(1, h=64, w=96)[0]
    result = tracker.step(frame, _box_mask(64, 96, {1: (16, 40, 8, 32)}))
    assert tracker.memory is not None and result.labels.shape == (64, 96)
    assert tracker.memory.keys.shape[-2:] == (4, 6)  # 64x96 at stride 16: the input size, not 480 high


def test_label_map_matches_argmax_and_lookup() -> None:
    from edge_vos.tracker.aggregate import label_map, soft_aggregate

    generator = torch.Generator().manual_seed(0)
    for objects in (1, 3):
        full = soft_aggregate(torch.rand(objects, 37, 53, generator=generator))
        full[:, :2, :2] = 1.0 / (objects + 1)  # exact ties go to the lower row, as argmax
        ids = [7, 2, 200][:objects]
        expected = torch.tensor([0, *ids], dtype=torch.uint8)[torch.argmax(full, dim=0)]
        assert torch.equal(label_map(full, ids), expected)
    with pytest.raises(ValueError, match="rows"):
        label_map(torch.zeros(2, 4, 4), [1, 2])


@settings(max_examples=40, deadline=None)
@given(
    objects=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    size=st.sampled_from([(240, 432, None), (480, 854, 360), (300, 500, 240), (64, 96, 80)]),
)
def test_labels_on_the_footprints_of_cropped_objects_match_the_whole_frame(objects, seed, size) -> None:
    """Objects decoded on crops (0 outside before aggregation) are labelled on the input footprint of their
    crop only (Tracker._outputs): the same label map as a pass over the whole frame, resized or not, ties,
    probabilities of 1 and empty crops included."""
    from edge_vos.model.preprocess import frame_geometry, input_footprint, to_input_size
    from edge_vos.tracker.aggregate import label_map, soft_aggregate

    in_h, in_w, short = size
    geometry = frame_geometry(in_h, in_w, short)
    rng = np.random.default_rng(seed)
    h, w = geometry.padded_hw
    probs = torch.zeros(objects, 1, h, w)
    regions: list[tuple[slice, slice] | None] = []
    for row in range(objects):
        if rng.random() < 0.25:
            regions.append(None)
            probs[row] = torch.from_numpy(rng.random((1, h, w), dtype=np.float32))
            continue
        r0, c0 = int(rng.integers(0, h // 16)) * 16, int(rng.integers(0, w // 16)) * 16
        r1, c1 = int(rng.integers(r0 // 16, h // 16 + 1)) * 16, int(rng.integers(c0 // 16, w // 16 + 1)) * 16
        values = rng.choice(np.array([0.0, 0.3, 0.5, 1.0], np.float32), (r1 - r0, c1 - c0))
        probs[row, 0, r0:r1, c0:c1] = torch.from_numpy(np.where(rng.random(values.shape) < 0.5, values,
                                                                rng.random(values.shape, dtype=np.float32)))
        regions.append((slice(r0, r1), slice(c0, c1)))
    full = to_input_size(soft_aggregate(probs)[:, 0][None], geometry)[0]
    ids = list(range(1, objects + 1))
    inside = [None if region is None else input_footprint(region, geometry) for region in regions]
    assert torch.equal(label_map(full, ids, inside), label_map(full, ids))


def test_input_footprint_holds_every_pixel_a_region_reaches() -> None:
    """Resized, a map that is nonzero only on a canvas region is zero outside the region's input footprint."""
    from edge_vos.model.preprocess import frame_geometry, input_footprint, to_input_size

    for in_h, in_w, short in ((480, 854, 360), (240, 432, None), (301, 517, 240), (100, 60, 240)):
        geometry = frame_geometry(in_h, in_w, short)
        h, w = geometry.padded_hw
        for r0, r1, c0, c1 in ((0, 16, 0, 16), (16, 48, 32, 64), (h - 16, h, w - 32, w), (0, h, 0, w)):
            plane = torch.zeros(1, 1, h, w)
            plane[..., r0:r1, c0:c1] = 1.0
            resized = to_input_size(plane, geometry)[0, 0]
            rows, cols = input_footprint((slice(r0, r1), slice(c0, c1)), geometry)
            outside = resized.clone()
            outside[rows, cols] = 0.0
            assert not outside.any(), (in_h, in_w, short, r0, r1, c0, c1)


def test_deferred_memory_write_gives_the_same_stream(lite_network) -> None:
    """A memory frame's mask is returned before its value encoding; the stream is the same as writing at once,
    whether the caller writes after each step, lets the next step do it, or removes an object in between."""
    frames = moving_square_frames(12, h=48, w=64)
    mask = _box_mask(48, 64, {1: (16, 40, 8, 32), 2: (2, 10, 40, 60)})
    immediate, deferred, lazy = _tracker(lite_network), _tracker(lite_network), _tracker(lite_network)
    previous_written = False
    for t, frame in enumerate(frames):
        prompt = mask if t == 0 else None
        a = immediate.step(frame, prompt)
        b = deferred.step(frame, prompt, defer_memory_write=True)
        c = lazy.step(frame, prompt, defer_memory_write=True)
        assert a.memory_written == b.memory_written == c.memory_written
        assert "value_encode" in a.timings_ms if a.memory_written else "value_encode" not in a.timings_ms
        assert "value_encode" not in b.timings_ms
        wrote = deferred.write_deferred_memory()
        assert (wrote > 0) == b.memory_written and deferred.write_deferred_memory() == 0.0
        assert ("deferred_write" in c.timings_ms) == previous_written  # the previous frame's write, done first
        previous_written = c.memory_written
        for r in (b, c):
            np.testing.assert_array_equal(r.labels, a.labels)
            np.testing.assert_allclose(r.probabilities, a.probabilities, atol=1e-5)
        if t == 6:
            for tracker in (immediate, deferred, lazy):
                tracker.remove_object(2)  # writes the pending frame first (it holds object 2's value)
            previous_written = False
    assert immediate.memory is not None and deferred.memory is not None and lazy.memory is not None
    lazy.write_deferred_memory()
    assert torch.equal(immediate.memory.keys, lazy.memory.keys)
    assert torch.allclose(immediate.memory.values, deferred.memory.values, atol=1e-5)


def test_a_pending_write_is_dropped_by_reset_and_by_a_new_frame_size(lite_network) -> None:
    tracker = _tracker(lite_network)
    frames = moving_square_frames(2, h=48, w=64)
    tracker.step(frames[0], _box_mask(48, 64, {1: (16, 40, 8, 32)}), defer_memory_write=True)
    tracker.reset()
    assert tracker.write_deferred_memory() == 0.0
    tracker.step(frames[0], _box_mask(48, 64, {1: (16, 40, 8, 32)}), defer_memory_write=True)
    small = moving_square_frames(1, h=32, w=48)[0]
    tracker.step(small, _box_mask(32, 48, {4: (4, 20, 4, 20)}))  # a new stream: the old frame is not written
    assert tracker.memory is not None and tracker.memory.keys.shape[-2:] == (2, 3)
    assert tracker.object_ids == [4]


def test_stage_timings_only_when_profiling(lite_network, monkeypatch) -> None:
    """Without `profile` a step reports its total only and never synchronises CUDA around a stage."""
    from edge_vos.tracker import tracker as tracker_module

    frames = moving_square_frames(3, h=48, w=64)
    mask = _box_mask(48, 64, {1: (16, 40, 8, 32)})
    quiet = Tracker(TrackerConfig(resolution=0, **EAGER), network=lite_network)  # type: ignore[arg-type]
    quiet.step(frames[0], mask)
    assert set(quiet.step(frames[1]).timings_ms) == {"total"}
    syncs: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    cuda = torch.device("cuda")
    with tracker_module._Timer(None, "readout", cuda):
        pass
    assert syncs == []
    timings: dict[str, float] = {}
    with tracker_module._Timer(timings, "readout", cuda):
        pass
    assert syncs == [cuda, cuda] and set(timings) == {"readout"}

"""Encoding memory values on crops (`memory.encode_inside`): when crops are chosen, what an absent object and
a distant one get, the runners' region parts, and the tracker's masks with and without it."""

from __future__ import annotations

import pytest
import torch

from edge_vos.backends.torch_backend import TorchRunner
from edge_vos.data.synthetic import generate_sequence
from edge_vos.model.preprocess import frame_geometry, image_to_tensor
from edge_vos.model.weights import load_configured_network
from edge_vos.tracker import Tracker, TrackerConfig
from edge_vos.tracker.config import MemoryConfig
from edge_vos.tracker.regions import CELL, CONTEXT_CELLS, INNER_CELLS, SUPPORT_FLOOR, CellCrop, encode_values
from tests.conftest import track_labels

CPU = torch.device("cpu")
HW = (320, 512)  # 20 x 32 cells


@pytest.fixture(scope="module")
def bundled() -> torch.nn.Module:
    return load_configured_network(TrackerConfig().model).eval()


def _frame(network: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic scene's first frame, as the tracker feeds it to the encoders."""
    frames, _ = generate_sequence(seed=3, num_frames=1, size=HW, num_objects=2, num_distractors=1)
    image = image_to_tensor(frames[0], frame_geometry(*HW, None))
    with torch.no_grad():
        _, _, f16, _, _ = network.encode_key(image)
    return image, f16


def _masks(*boxes: tuple[int, int, int, int] | None) -> torch.Tensor:
    probs = torch.zeros(len(boxes), 1, *HW)
    for row, box in enumerate(boxes):
        if box is not None:
            y0, y1, x0, x1 = box
            probs[row, 0, y0:y1, x0:x1] = 0.95
    return probs


def _others(probs: torch.Tensor) -> torch.Tensor:
    return probs.sum(dim=0, keepdim=True) - probs


def _record_calls(runner: TorchRunner) -> list[tuple[str, tuple[int, ...]]]:
    """Each part the runner runs from now on, with its first input's shape, in call order."""
    calls: list[tuple[str, tuple[int, ...]]] = []
    original = runner.run_part

    def counting(part: str, objects: int, *inputs: torch.Tensor):
        calls.append((part, tuple(inputs[0].shape)))
        return original(part, objects, *inputs)

    runner.run_part = counting  # type: ignore[method-assign]
    return calls


def test_one_object_or_a_runner_without_crops_encodes_whole_frames(lite_network) -> None:
    image, f16 = _frame(lite_network)
    runner = TorchRunner(lite_network, CPU)
    one = _masks((10, 40, 10, 40))
    expected = runner.encode_value(image, f16, one, _others(one))
    assert torch.equal(encode_values(runner, image, f16, one, _others(one)), expected)
    runner.encodes_regions = False
    two = _masks((10, 40, 10, 40), (200, 260, 400, 480))
    expected = runner.encode_value(image, f16, two, _others(two))
    assert torch.equal(encode_values(runner, image, f16, two, _others(two)), expected)


def test_masks_that_cover_the_frame_are_encoded_whole(lite_network) -> None:
    image, f16 = _frame(lite_network)
    runner = TorchRunner(lite_network, CPU)
    probs = _masks((0, 300, 0, 500), (20, 320, 10, 512), (5, 310, 0, 480))
    calls = _record_calls(runner)
    values = encode_values(runner, image, f16, probs, _others(probs))
    assert [c[0] for c in calls] == ["value_encoder"]
    assert values.shape == (3, lite_network.value_dim, HW[0] // CELL, HW[1] // CELL)


def test_a_faint_halo_around_a_mask_does_not_widen_its_crop(lite_network) -> None:
    """A decoded plane is faintly above 0 over much of its decode crop (a few per cent); only pixels above
    SUPPORT_FLOOR count as the mask, so each object's crop stays around its mask, not around its halo."""
    image, f16 = _frame(lite_network)
    runner = TorchRunner(lite_network, CPU)
    probs = _masks((32, 96, 48, 112), (220, 300, 380, 480))
    halo = torch.zeros(HW)
    halo[:, :256] = 0.05  # the left half of the frame
    probs[0, 0] = torch.maximum(probs[0, 0], halo)
    calls = _record_calls(runner)
    encode_values(runner, image, f16, probs, _others(probs))
    cells = (HW[0] // CELL, HW[1] // CELL)
    crop = CellCrop.of_mask(probs[0, 0] > SUPPORT_FLOOR).grown(INNER_CELLS, cells).grown(CONTEXT_CELLS, cells)
    assert crop == CellCrop(0, 12, 0, 13)  # the mask's cells (2-6, 3-7) grown by 2 + 4, not the left half
    local_shapes = [shape for part, shape in calls if part == "value_local"]
    assert (1, 3, (crop.r1 - crop.r0) * CELL, (crop.c1 - crop.c0) * CELL) in local_shapes


def test_an_absent_object_gets_exactly_its_whole_frame_value_and_small_distant_ones_nearly(bundled) -> None:
    """An object without a mask has, everywhere, the input of the shared pass: the same value bit for bit as
    the whole-frame encoder's. Small objects far apart get crops; their values lose the fading tail of the
    mask's influence beyond INNER_CELLS (largest for hard-edged masks like these; the tracker's soft
    probabilities lose less) and the crops' padding."""
    image, f16 = _frame(bundled)
    runner = TorchRunner(bundled, CPU)
    probs = _masks((32, 96, 48, 112), None, (220, 300, 380, 480))
    expected = runner.encode_value(image, f16, probs, _others(probs))
    values = encode_values(runner, image, f16, probs, _others(probs))
    torch.testing.assert_close(values[1], expected[1], rtol=1e-4, atol=1e-5)
    for row in (0, 2):
        err = float((values[row] - expected[row]).norm() / expected[row].norm())
        assert 0 < err < 0.15, (row, err)


def test_each_crop_gives_the_cells_around_its_mask_and_the_shared_pass_the_rest(bundled) -> None:
    """Before the attention, an object's map is its crop's output on the cells within INNER_CELLS of its mask
    and the shared pass (own mask 0, others = every mask) elsewhere."""
    image, f16 = _frame(bundled)
    runner = TorchRunner(bundled, CPU)
    probs = _masks((32, 96, 48, 112), (220, 300, 380, 480), None)
    seen: list[torch.Tensor] = []
    original = runner.encode_value_global

    def keep(local: torch.Tensor) -> torch.Tensor:
        seen.append(local.clone())
        return original(local)

    runner.encode_value_global = keep  # type: ignore[method-assign]
    encode_values(runner, image, f16, probs, _others(probs))
    local = seen[0]
    everyone = probs.sum(dim=0, keepdim=True)
    shared = runner.encode_value_local(image, f16, torch.zeros_like(everyone), everyone)
    cells = (HW[0] // CELL, HW[1] // CELL)
    inner = CellCrop.of_mask(probs[0, 0] > SUPPORT_FLOOR).grown(INNER_CELLS, cells)
    assert inner == CellCrop(0, 8, 1, 9)
    outside = torch.ones(cells, dtype=torch.bool)
    outside[inner.r0:inner.r1, inner.c0:inner.c1] = False
    assert torch.equal(local[0][:, outside], shared[0][:, outside])
    outer = inner.grown(CONTEXT_CELLS, cells)
    crop = runner.encode_value_local(outer.cut(image, CELL), outer.cut(f16, 1), outer.cut(probs[:1], CELL),
                                     outer.cut(_others(probs)[:1], CELL))
    torch.testing.assert_close(inner.cut(local[:1], 1), inner.within(outer).cut(crop, 1))
    assert torch.equal(local[2], shared[0])


def test_the_bundled_tracker_paints_nearly_the_same_masks_with_values_encoded_on_crops() -> None:
    frames, labels = generate_sequence(seed=3, num_frames=16, size=(240, 432), num_objects=3, num_distractors=1)
    results = {inside: track_labels(TrackerConfig(backend="torch", precision="fp32",
                                                  memory=MemoryConfig(encode_inside=inside)), frames, labels[0])
               for inside in (True, False)}
    agree = float((results[True] == results[False]).mean())
    assert agree > 0.99, agree
    assert (results[True][1:] > 0).any()


def test_a_prompt_frame_is_encoded_whole_and_ring_writes_on_crops(monkeypatch) -> None:
    """Prompt frames stay pinned in memory for good: their values are the whole-frame encoder's exactly."""
    import edge_vos.tracker.tracker as tracker_module

    frames, labels = generate_sequence(seed=3, num_frames=7, size=(240, 432), num_objects=3, num_distractors=1)
    cropped: list[int] = []
    original = tracker_module.encode_values

    def counting(*args, **kwargs):
        cropped.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(tracker_module, "encode_values", counting)
    trackers = {inside: Tracker(TrackerConfig(backend="torch", precision="fp32",
                                              memory=MemoryConfig(encode_inside=inside)))
                for inside in (True, False)}
    for tracker in trackers.values():
        tracker.step(frames[0], labels[0])
    assert not cropped
    pinned = [t.memory.view([0, 1, 2]).values for t in trackers.values()]
    assert torch.equal(pinned[0], pinned[1])
    for frame in frames[1:]:
        trackers[True].step(frame)
    assert cropped  # the ring write at frame 5 went through encode_values


@pytest.mark.parametrize("value", ["yes", 1])
def test_encode_inside_must_be_a_boolean(value: object) -> None:
    from edge_vos.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="encode_inside"):
        from_dict(TrackerConfig, {"memory": {"encode_inside": value}})


@pytest.mark.parametrize("arch", ["stcn-r18-lite", "stcn-effl0-mb"])
def test_every_value_encoder_kind_splits_at_its_attention(arch: str) -> None:
    """ResNet, EfficientNet (the bundled arch, above) and the mask branch: local and global parts compose to the
    encoder, and an absent object's value from the shared pass is its whole-frame value."""
    from edge_vos.model import random_network

    network = random_network(arch).eval()
    image, f16 = _frame(network)
    runner = TorchRunner(network, CPU)
    probs = _masks((32, 96, 48, 112), None, (220, 300, 380, 480))
    expected = runner.encode_value(image, f16, probs, _others(probs))
    torch.testing.assert_close(runner.encode_value_global(runner.encode_value_local(image, f16, probs, _others(probs))),
                               expected)
    torch.testing.assert_close(encode_values(runner, image, f16, probs, _others(probs))[1], expected[1],
                               rtol=1e-4, atol=1e-5)

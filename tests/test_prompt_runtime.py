"""The prompt network's runtimes: ONNX Runtime (the CPU default) computes what eager torch computes, at any
crop size and batch, and the segmenter's masks do not depend on the runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_vos.prompt import make_prompt
from edge_vos.prompt.model import PromptNet, PromptNetConfig
from edge_vos.prompt.runtime import OnnxRuntimePasses, make_passes
from edge_vos.prompt.segmenter import PromptSegmenter, network_for

pytest.importorskip("onnxruntime", reason="ONNX Runtime is a dependency of the CPU path")


@pytest.fixture(scope="module")
def network() -> PromptNet:
    torch.manual_seed(3)
    return PromptNet(PromptNetConfig(crop_size=64)).eval()


@pytest.mark.parametrize(("batch", "size"), [(1, 64), (2, 64), (2, 96)])
def test_onnxruntime_logits_equal_eager_torch(network: PromptNet, batch: int, size: int) -> None:
    passes, name = make_passes(network, torch.device("cpu"), "onnxruntime")
    eager, _ = make_passes(network, torch.device("cpu"), "torch")
    rgb = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(size))
    maps = torch.zeros(batch, 4, size, size)
    maps[:, 1, size // 2 - 3: size // 2 + 3, size // 2 - 3: size // 2 + 3] = 1
    out, ref = passes(rgb, maps), eager(rgb, maps)
    assert name == "onnxruntime" and out.shape == ref.shape == (batch, 1, size, size)
    assert float((out - ref).abs().max()) < 1e-3 * max(1.0, float(ref.abs().max()))


def test_the_segmenter_runs_onnxruntime_on_a_cpu_and_masks_match_torch(network: PromptNet) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 60, (90, 140, 3), dtype=np.uint8)
    image[30:60, 40:100] = (230, 40, 40)
    fast = PromptSegmenter(network)
    eager = PromptSegmenter(network, runtime="torch")
    assert (fast.runtime, eager.runtime) == ("onnxruntime", "torch")
    for prompt in (make_prompt(image.shape[:2], box=(38, 28, 102, 62)),
                   make_prompt(image.shape[:2], points=[(70, 45)], labels=[1])):
        a, b = fast.probabilities(image, prompt), eager.probabilities(image, prompt)
        assert np.abs(a - b).max() < 1e-3


def test_runtime_choices_are_checked(network: PromptNet) -> None:
    with pytest.raises(ValueError, match="runtime must be one of"):
        make_passes(network, torch.device("cpu"), "tensorrt")
    # ONNX Runtime is only offered on the CPU, refused before anything touches the device.
    with pytest.raises(ValueError, match="CPU only"):
        make_passes(network, torch.device("cuda"), "onnxruntime")
    # auto picks eager torch on any other device (choosing it touches no device).
    assert make_passes(network, torch.device("cuda"), "auto")[1] == "torch"


def test_onnxruntime_takes_the_thread_count_it_is_given(network: PromptNet) -> None:
    """The service makes the segmenter on its main thread but runs prompts on the inference thread, whose
    torch thread count (pipeline.torch_threads) the session must follow, not the main thread's."""
    passes, _ = make_passes(network, torch.device("cpu"), "onnxruntime", threads=1)
    assert isinstance(passes, OnnxRuntimePasses) and passes.threads == 1
    from edge_vos.prompt.methods import PromptMasks

    masks = PromptMasks(threads=1)
    assert masks.load() and masks.segmenter is not None
    assert isinstance(masks.segmenter._passes, OnnxRuntimePasses) and masks.segmenter._passes.threads == 1


@pytest.fixture(scope="module")
def box_model() -> PromptNet:
    torch.manual_seed(4)
    return PromptNet(PromptNetConfig(crop_size=64)).eval()


@pytest.fixture(scope="module")
def correction_model() -> PromptNet:
    torch.manual_seed(5)
    return PromptNet(PromptNetConfig(crop_size=64)).eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A red object on a dark background."""
    out = np.random.default_rng(2).integers(0, 60, (90, 140, 3), dtype=np.uint8)
    out[30:60, 40:100] = (230, 40, 40)
    return out


def test_each_prompt_goes_to_its_network_box_alone_correction_or_clicks(
        network: PromptNet, box_model: PromptNet, correction_model: PromptNet, image: np.ndarray) -> None:
    three = PromptSegmenter(network, box_model=box_model, correction_model=correction_model, partners={})
    alone = {"clicks": PromptSegmenter(network), "box": PromptSegmenter(box_model),
             "correction": PromptSegmenter(correction_model)}
    hw = image.shape[:2]
    mask = np.zeros(hw, bool)
    mask[32:58, 45:95] = True
    prompts = {
        "box": make_prompt(hw, box=(38, 28, 102, 62)),
        "box with a mask": make_prompt(hw, box=(38, 28, 102, 62), mask=mask),
        "click": make_prompt(hw, points=[(70, 45)], labels=[1]),
        "box and click": make_prompt(hw, box=(38, 28, 102, 62), points=[(70, 45)], labels=[1]),
        "coarse mask": make_prompt(hw, mask=mask),
        "correction": make_prompt(hw, points=[(42, 31)], labels=[0], mask=mask),
        "correction with a box": make_prompt(hw, box=(38, 28, 102, 62), points=[(99, 59)], labels=[1], mask=mask),
    }
    expected = {"box": "box", "box with a mask": "box", "click": "clicks", "box and click": "correction",
                "coarse mask": "clicks", "correction": "correction", "correction with a box": "correction"}
    for name, prompt in prompts.items():
        assert network_for(prompt) == expected[name], name
        routed = alone[expected[name]].probabilities(image, prompt)
        assert np.array_equal(three.probabilities(image, prompt), routed), name
    for role in ("box", "correction"):  # the three networks answer differently: the routing is what is tested
        assert not np.array_equal(alone[role].probabilities(image, prompts[role]),
                                  alone["clicks"].probabilities(image, prompts[role]))
    for role in ("box", "correction"):
        with pytest.raises(ValueError, match=f"{role} network's config"):
            PromptSegmenter(network, **{f"{role}_model": PromptNet(PromptNetConfig(crop_size=96))})


def test_a_box_alone_is_answered_by_the_box_and_correction_networks_together(
        network: PromptNet, box_model: PromptNet, correction_model: PromptNet, image: np.ndarray) -> None:
    """FINAL_PASS_PARTNERS: the last pass averages the partner's answer (mirrored too); with no refinement the
    last pass is the only one, so the answer is exactly the mean of the two networks' own answers."""
    hw = image.shape[:2]
    box, click = make_prompt(hw, box=(38, 28, 102, 62)), make_prompt(hw, points=[(70, 45)], labels=[1])
    paired = PromptSegmenter(network, refine=0, box_model=box_model, correction_model=correction_model)
    mean = (PromptSegmenter(box_model, refine=0).probabilities(image, box)
            + PromptSegmenter(correction_model, refine=0).probabilities(image, box)) / 2
    assert np.abs(paired.probabilities(image, box) - mean).max() < 1e-5
    # Clicks alone have no partner; nor has a box when no correction network of its own is loaded.
    click_alone = PromptSegmenter(network, refine=0).probabilities(image, click)
    assert np.array_equal(paired.probabilities(image, click), click_alone)
    no_partner = PromptSegmenter(network, box_model=box_model)
    box_alone = PromptSegmenter(box_model).probabilities(image, box)
    assert np.array_equal(no_partner.probabilities(image, box), box_alone)
    for partners in ({"box": "box"}, {"box": "clicks and boxes"}):
        with pytest.raises(ValueError, match="partners"):
            PromptSegmenter(network, box_model=box_model, partners=partners)


def test_several_clicks_alone_are_answered_as_a_correction_of_the_first_clicks_answer(
        network: PromptNet, correction_model: PromptNet, image: np.ndarray) -> None:
    """CHAIN_CLICKS: the click network's start on the first positive click (CHAIN_START_REFINE passes, none
    mirrored), then the correction network with every click and that start as the mask."""
    from edge_vos.prompt.segmenter import CHAIN_START_REFINE

    hw = image.shape[:2]
    chained = PromptSegmenter(network, correction_model=correction_model)
    clicks = make_prompt(hw, points=[(30, 20), (70, 45), (95, 58)], labels=[0, 1, 1])
    start = PromptSegmenter(network, refine=CHAIN_START_REFINE, flip=False)(
        image, make_prompt(hw, points=[(70, 45)], labels=[1]))
    assert start.any()
    corrected = PromptSegmenter(correction_model).probabilities(
        image, make_prompt(hw, points=clicks.points, labels=clicks.labels, mask=start))
    assert np.array_equal(chained.probabilities(image, clicks), corrected)
    # One click, chaining off, or no correction network of its own: the click network answers as before.
    one = make_prompt(hw, points=[(70, 45)], labels=[1])
    assert np.array_equal(chained.probabilities(image, one), PromptSegmenter(network).probabilities(image, one))
    by_clicks = PromptSegmenter(network).probabilities(image, clicks)
    for plain in (PromptSegmenter(network, correction_model=correction_model, chain=False), PromptSegmenter(network)):
        assert np.array_equal(plain.probabilities(image, clicks), by_clicks)
    assert not np.array_equal(chained.probabilities(image, clicks), by_clicks)


def test_the_bundled_pair_loads_unless_one_network_is_named(tmp_path) -> None:
    from edge_vos.prompt.methods import PromptMasks
    from edge_vos.prompt.segmenter import BUNDLED_BOX_WEIGHTS, BUNDLED_CORRECTION_WEIGHTS, BUNDLED_WEIGHTS

    bundled = PromptMasks()
    assert bundled.box_weights == BUNDLED_BOX_WEIGHTS and BUNDLED_BOX_WEIGHTS.is_file()
    assert bundled.correction_weights == BUNDLED_CORRECTION_WEIGHTS and BUNDLED_CORRECTION_WEIGHTS.is_file()
    named = PromptMasks(BUNDLED_WEIGHTS)  # a named network answers every prompt
    assert named.box_weights is None and named.correction_weights is None
    assert PromptMasks(BUNDLED_WEIGHTS, box_weights=BUNDLED_BOX_WEIGHTS).box_weights == BUNDLED_BOX_WEIGHTS
    assert PromptMasks(BUNDLED_WEIGHTS, correction_weights=BUNDLED_CORRECTION_WEIGHTS).correction_weights == (
        BUNDLED_CORRECTION_WEIGHTS)
    for role in ("box_weights", "correction_weights"):
        missing = PromptMasks(**{role: tmp_path / "absent.safetensors"})
        assert not missing.load() and "absent.safetensors" in (missing.load_error or "")

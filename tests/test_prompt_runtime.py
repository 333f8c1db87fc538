"""The prompt network's runtimes: ONNX Runtime (the CPU default) computes what eager torch computes, at any
crop size and batch, and the segmenter's masks do not depend on the runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_vos.prompt import make_prompt
from edge_vos.prompt.model import PromptNet, PromptNetConfig
from edge_vos.prompt.runtime import OnnxRuntimePasses, make_passes
from edge_vos.prompt.segmenter import PromptSegmenter

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


def test_a_box_alone_goes_to_the_box_network_and_anything_with_clicks_to_the_click_network(
        network: PromptNet) -> None:
    torch.manual_seed(4)
    other = PromptNet(PromptNetConfig(crop_size=64)).eval()
    rng = np.random.default_rng(2)
    image = rng.integers(0, 60, (90, 140, 3), dtype=np.uint8)
    image[30:60, 40:100] = (230, 40, 40)
    both = PromptSegmenter(network, box_model=other)
    clicks_net, box_net = PromptSegmenter(network), PromptSegmenter(other)
    box = make_prompt(image.shape[:2], box=(38, 28, 102, 62))
    click = make_prompt(image.shape[:2], points=[(70, 45)], labels=[1])
    box_and_click = make_prompt(image.shape[:2], box=(38, 28, 102, 62), points=[(70, 45)], labels=[1])
    assert np.array_equal(both.probabilities(image, box), box_net.probabilities(image, box))
    for prompt in (click, box_and_click):
        assert np.array_equal(both.probabilities(image, prompt), clicks_net.probabilities(image, prompt))
    assert not np.array_equal(box_net.probabilities(image, box), clicks_net.probabilities(image, box))
    with pytest.raises(ValueError, match="box network's config"):
        PromptSegmenter(network, box_model=PromptNet(PromptNetConfig(crop_size=96)))


def test_the_bundled_pair_loads_unless_one_network_is_named(tmp_path) -> None:
    from edge_vos.prompt.methods import PromptMasks
    from edge_vos.prompt.segmenter import BUNDLED_BOX_WEIGHTS, BUNDLED_WEIGHTS

    assert PromptMasks().box_weights == BUNDLED_BOX_WEIGHTS and BUNDLED_BOX_WEIGHTS.is_file()
    assert PromptMasks(BUNDLED_WEIGHTS).box_weights is None  # a named network answers every prompt
    assert PromptMasks(BUNDLED_WEIGHTS, box_weights=BUNDLED_BOX_WEIGHTS).box_weights == BUNDLED_BOX_WEIGHTS
    missing = PromptMasks(box_weights=tmp_path / "absent.safetensors")
    assert not missing.load() and "absent.safetensors" in (missing.load_error or "")

"""How the prompt network's passes run: ONNX Runtime on a CPU, eager torch elsewhere.

A prompt costs several passes of the network (crops.py, segmenter.py), and its time budget is tight. On a
CPU, ONNX Runtime runs this network markedly faster than eager torch (batch norm folded into the
convolutions, its own kernels; the times are in docs/model-card.md, "Prompt network"). The graph is exported
in memory when the segmenter is made, with the batch and the crop size as dynamic axes, so there is no file
to cache or to go stale; its logits equal eager torch's within float rounding (tests/test_prompt_runtime.py).
Where ONNX Runtime is missing or the export fails, the passes run in eager torch, with the reason logged.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable

import torch

from edge_vos.prompt.model import PromptNet

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnxruntime", "torch")

Passes = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # rgb [B,3,S,S], maps [B,4,S,S] -> logits [B,1,S,S]


def make_passes(model: PromptNet, device: torch.device, runtime: str = "auto", threads: int = 0
                ) -> tuple[Passes, str]:
    """The function that runs the network on a batch of crops, and the runtime's name. `auto`: ONNX Runtime
    on a CPU, eager torch on any other device. `threads`: ONNX Runtime's intra-op threads (0: torch's count
    where the segmenter is made); the service passes its inference thread's count, since prompts run there."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch" or (runtime == "auto" and device.type != "cpu"):
        return _torch_passes(model), "torch"
    if device.type != "cpu":
        raise ValueError(f"runtime onnxruntime runs on the CPU only, not on {device}")
    try:
        return OnnxRuntimePasses(model, threads), "onnxruntime"
    except Exception as exc:  # an exporter or runtime without this network's ops: eager torch still works
        if runtime == "onnxruntime":
            raise
        log.warning("prompt network in eager torch: ONNX Runtime unavailable (%s)", exc)
        return _torch_passes(model), "torch"


def _torch_passes(model: PromptNet) -> Passes:
    model = model.to(memory_format=torch.channels_last)

    def run(rgb: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(rgb.contiguous(memory_format=torch.channels_last),
                         maps.contiguous(memory_format=torch.channels_last))

    return run


class OnnxRuntimePasses:
    """The network exported in memory and run in one ONNX Runtime session (the batch and crop size dynamic)."""

    def __init__(self, model: PromptNet, threads: int) -> None:
        import onnxruntime as ort

        size = model.config.crop_size
        example = (torch.zeros(1, 3, size, size), torch.zeros(1, 4, size, size))
        graph = io.BytesIO()
        axes = {0: "batch", 2: "height", 3: "width"}
        model = model.to(memory_format=torch.contiguous_format)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(model, example, graph, dynamo=False, opset_version=17, input_names=["rgb", "maps"],
                              output_names=["logits"], dynamic_axes={"rgb": axes, "maps": axes, "logits": axes})
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])

    @property
    def threads(self) -> int:
        return int(self.session.get_session_options().intra_op_num_threads)

    def __call__(self, rgb: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        feeds = {"rgb": rgb.contiguous().numpy(), "maps": maps.contiguous().numpy()}
        return torch.from_numpy(self.session.run(None, feeds)[0])

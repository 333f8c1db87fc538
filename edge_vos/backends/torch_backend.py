"""Eager PyTorch backend: channels_last, bf16 on CPUs that support it, fp16 on CUDA.

bf16 on a CPU: the encoders under autocast (their normalisations stay float32), the decoder as a bf16 copy
run without autocast. Under autocast the decoder cast every weight on every call and added each frame term
in float32, converting its activations back and forth between layers; per object and crop those copies
cost as much as the convolutions (docs/benchmarks.md, "objects-notes").

It runs the same part modules as the exported backends (`parts.py`), so the decoder's frame-only skip
convolutions run once per frame here too, and `torch` vs `onnxruntime` parity compares identical graphs.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from functools import lru_cache

import torch

from edge_vos.backends.base import PartRunner
from edge_vos.backends.parts import DECODER_REGION_PARTS, FRAME_TERMS, PART_NAMES, REGION_PARTS, make_part
from edge_vos.model.network import STCN

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16/AMX on x86, BF16 on Arm).

    Without them autocast still runs but emulates bf16 and is slower than fp32, so we do not use it.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class TorchRunner(PartRunner):
    name = "torch"

    def __init__(
        self, network: STCN, device: torch.device, precision: str = "fp32", *, channels_last: bool = True
    ) -> None:
        self.device = device
        self.precision = precision
        self.network = network.to(device).eval()
        self._autocast: torch.dtype | None = None
        if device.type == "cuda" and precision == "fp16":
            self.network = self.network.half()
        elif precision == "bf16":
            if device.type == "cpu" and not cpu_supports_bf16():
                log.warning("this CPU has no native bf16 kernels: running fp32 instead of bf16 autocast")
            elif device.type == "cuda" and not torch.cuda.is_bf16_supported():
                log.warning("this GPU has no bf16 support: running fp32")
            else:
                self._autocast = torch.bfloat16
        elif precision == "fp16" and device.type == "cpu":
            log.warning("fp16 on CPU is several times slower than fp32 (no fp16 conv kernels): running fp32")
        self.channels_last = channels_last
        # Set either way: the network may be shared with a runner that converted it before.
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.network = self.network.to(memory_format=layout)  # type: ignore[call-overload]
        self._dtype = next(self.network.parameters()).dtype
        self._parts = {part: make_part(self.network, part) for part in (*PART_NAMES, *REGION_PARTS)}
        self._bf16_parts: frozenset[str] = frozenset()
        if self._autocast is torch.bfloat16 and device.type == "cpu":
            decoder_network = copy.deepcopy(self.network).to(torch.bfloat16)  # the caller's network stays fp32
            self._bf16_parts = frozenset(("decoder", *DECODER_REGION_PARTS))
            self._parts.update({part: make_part(decoder_network, part) for part in self._bf16_parts})
        # Eager convolutions take any size; crops only pay on a CPU (a GPU decodes a whole batch at once).
        self.decodes_regions = self.encodes_regions = device.type == "cpu"
        self.batches_regions = self.decodes_regions  # eager convolutions take any batch as well

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        # no_grad, not inference_mode: the tracker writes outputs into its memory tensors in place.
        with torch.no_grad():
            if self._autocast is not None:
                with torch.autocast(self.device.type, dtype=self._autocast):
                    yield
            else:
                yield

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self._dtype)
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @staticmethod
    def _out(x: torch.Tensor) -> torch.Tensor:
        # One conversion: bf16 channels_last -> float32 channels_last -> contiguous took several times longer.
        return x.to(torch.float32, memory_format=torch.contiguous_format)

    def run_part(self, part: str, objects: int, *inputs: torch.Tensor) -> list[torch.Tensor]:
        if part in self._bf16_parts:
            with torch.no_grad():
                out = self._parts[part](*(x.to(self.device, torch.bfloat16, memory_format=torch.channels_last)
                                          for x in inputs))
            if part == FRAME_TERMS:  # cut per crop and back into this runner's decode_region: kept as they are
                return list(out)
        else:
            with self._context():
                out = self._parts[part](*(self._in(x) for x in inputs))
        return [self._out(y) for y in (out if isinstance(out, tuple) else (out,))]

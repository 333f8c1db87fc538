"""Eager PyTorch backend: channels_last, bf16 autocast on CPUs that support it, fp16 on CUDA.

It runs the same part modules as the exported backends (`parts.py`), so the decoder's frame-only skip
convolutions run once per frame here too, and `torch` vs `onnxruntime` parity compares identical graphs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from functools import lru_cache

import torch

from edge_vos.backends.base import PartRunner
from edge_vos.backends.parts import PART_NAMES, REGION_PARTS, make_part
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
        # Eager convolutions take any size; crops only pay on a CPU (a GPU decodes a whole batch at once).
        self.decodes_regions = self.encodes_regions = device.type == "cpu"

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
        return x.float().contiguous()

    def run_part(self, part: str, objects: int, *inputs: torch.Tensor) -> list[torch.Tensor]:
        with self._context():
            out = self._parts[part](*(self._in(x) for x in inputs))
        return [self._out(y) for y in (out if isinstance(out, tuple) else (out,))]

"""The decoder's 3x3 convolutions through NNPACK's Winograd transform, for eager PyTorch on an fp32 CPU.

The decoder is nearly all dense 3x3 convolutions, and on a CPU they run at close to its peak of
multiply-adds; the Winograd transform computes the same convolution with about half as many
multiplications. Neither oneDNN (PyTorch's CPU convolutions) nor ONNX Runtime's CPU provider use it for
these shapes, and PyTorch only picks NNPACK by itself for large batches, so the convolutions are re-classed
to call it directly. The result is the same convolution up to float rounding (a few 1e-6 on the decoder's
logits). The measured gain and its effect on masks: docs/benchmarks.md, "objects-notes".
"""

from __future__ import annotations

import copy
import logging
from functools import lru_cache

import torch
from torch import nn

from edge_vos.model.network import STCN

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def nnpack_unavailable_reason() -> str | None:
    """None when NNPACK runs here; otherwise why not. Asking also initialises NNPACK, without which each of
    its convolutions fails."""
    try:
        if not torch._nnpack_available():
            return "this PyTorch build has no NNPACK"
        x, weight = torch.ones(1, 2, 5, 5), torch.ones(3, 2, 3, 3)
        out = torch._nnpack_spatial_convolution(x, weight, None, [1, 1])
        expected = torch.nn.functional.conv2d(x, weight, padding=1)
    except (AttributeError, RuntimeError) as exc:
        return f"NNPACK failed on a test convolution ({exc})"
    if not torch.allclose(out, expected, rtol=1e-4, atol=1e-4):
        return "NNPACK's test convolution differs from PyTorch's"
    return None


# NNPACK transforms the kernels on every call, a fixed cost that a small map does not repay: below this many
# pixels per map a direct convolution is faster (docs/benchmarks.md, "objects-notes").
MIN_WINOGRAD_PIXELS = 256


class WinogradConv2d(nn.Conv2d):
    """A 3x3, stride-1, padding-1 nn.Conv2d (float32, NCHW) computed by NNPACK on maps of at least
    MIN_WINOGRAD_PIXELS pixels. `_conv_forward` is the convolution nn.Conv2d.forward calls and
    `model.modules.conv_of_channels` calls with a slice of the weights, so both take this path."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x.shape[-2] * x.shape[-1] < MIN_WINOGRAD_PIXELS:
            return super()._conv_forward(x, weight, bias)
        return torch._nnpack_spatial_convolution(x.contiguous(), weight.contiguous(), bias, [1, 1])


def _winograd_fits(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and conv.weight.dtype == torch.float32)


def with_winograd_decoder(network: STCN) -> STCN:
    """A copy of `network` whose decoder computes its 3x3 convolutions with NNPACK (same parameters; the
    original, which other runners may export, is left as it is). Call only when `nnpack_unavailable_reason()`
    is None."""
    reason = nnpack_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"with_winograd_decoder: {reason}")
    network = copy.deepcopy(network).float()
    converted = 0
    for module in network.decoder.modules():
        if _winograd_fits(module):
            module.__class__ = WinogradConv2d
            converted += 1
    log.debug("decoder: %d convolutions through NNPACK's Winograd transform", converted)
    return network


__all__ = ["MIN_WINOGRAD_PIXELS", "WinogradConv2d", "nnpack_unavailable_reason", "with_winograd_decoder"]

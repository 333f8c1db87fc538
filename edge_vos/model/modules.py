"""Building blocks of STCN's fusion and decoder heads (names follow official STCN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


def conv_of_concat(conv: nn.Conv2d, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """`conv(torch.cat(parts, dim=1))` as a sum of one convolution per part, with its slice of the weights.

    Convolution is linear in its input channels, so this is the same maths (up to float rounding); what it
    buys: a part with batch 1 beside parts with batch N (the frame's features beside N objects) is convolved
    once and broadcast in the sum, instead of being copied N times into the concatenation and convolved N
    times. The bias goes with the first part.
    """
    if conv.groups != 1:
        raise ValueError("conv_of_concat: grouped convolutions cannot be split by input channel")
    out: torch.Tensor | None = None
    start = 0
    for i, x in enumerate(parts):
        y = conv_of_channels(conv, x, start, with_bias=i == 0)
        start += x.shape[1]
        out = y if out is None else out + y
    if out is None or start != conv.in_channels:
        raise ValueError(f"conv_of_concat: parts hold {start} channels, the convolution takes {conv.in_channels}")
    return out


def conv_of_channels(conv: nn.Conv2d, x: torch.Tensor, start: int, *, with_bias: bool) -> torch.Tensor:
    """`conv`'s term of the input channels [start, start + x's channels): one summand of `conv_of_concat`.
    Through the convolution's own `_conv_forward`, as its forward, so a subclass that computes it differently
    (backends/winograd.py) does so here too."""
    weight = conv.weight[:, start:start + x.shape[1]]
    return conv._conv_forward(x, weight, conv.bias if with_bias else None)


def concat_broadcast(parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """torch.cat along channels, parts with batch 1 expanded to the others' batch."""
    n = max(x.shape[0] for x in parts)
    return torch.cat([x.expand(n, -1, -1, -1) for x in parts], dim=1)


class ResBlock(nn.Module):
    """Pre-activation residual block without batch norm; 3x3 `downsample` shortcut when widths differ.

    The input may come as several parts (its channels, in order) that are not concatenated: a part with
    batch 1 (the frame's) beside parts with batch N (objects) is then convolved once per frame by the
    first convolution and the shortcut (`conv_of_concat`), which halves those two for the decoder's first
    block and the value encoder's fusion.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.downsample = conv3x3(cin, cout) if cin != cout else None
        self.conv1 = conv3x3(cin, cout)
        self.conv2 = conv3x3(cout, cout)

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        if len(parts) == 1:
            r = self.conv1(F.relu(parts[0]))
        else:
            r = conv_of_concat(self.conv1, tuple(F.relu(x) for x in parts))
        r = self.conv2(F.relu(r))
        if self.downsample is not None:
            x = self.downsample(parts[0]) if len(parts) == 1 else conv_of_concat(self.downsample, parts)
        else:
            x = parts[0] if len(parts) == 1 else concat_broadcast(parts)
        return x + r

    def last_part_terms(self, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first convolution's and the shortcut's terms of the input's last channels, `last`: the frame's
        part of an input [objects' part, frame's part], computed once over any region of the frame."""
        if self.downsample is None:
            raise ValueError("last_part_terms: a block without a shortcut convolution adds its input whole")
        start = self.conv1.in_channels - last.shape[1]
        return (conv_of_channels(self.conv1, F.relu(last), start, with_bias=False),
                conv_of_channels(self.downsample, last, start, with_bias=False))

    def forward_with_terms(
        self, first: torch.Tensor, conv1_term: torch.Tensor, shortcut_term: torch.Tensor
    ) -> torch.Tensor:
        """`forward(first, last)` from `last_part_terms(last)`: the same sums in the same order."""
        if self.downsample is None:
            raise ValueError("forward_with_terms: a block without a shortcut convolution adds its input whole")
        r = conv_of_channels(self.conv1, F.relu(first), 0, with_bias=True) + conv1_term
        r = self.conv2(F.relu(r))
        return conv_of_channels(self.downsample, first, 0, with_bias=True) + shortcut_term + r


class _ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + mx)[:, :, None, None]


class _SpatialConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _SpatialGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spatial = _SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Channel then spatial attention (attribute names as in official STCN's cbam.py)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ChannelGate = _ChannelGate(channels)
        self.SpatialGate = _SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """Fuses the value trunk's f16 with the key encoder's f16 into the 512-channel memory value."""

    def __init__(self, cin: int, cout: int, use_cbam: bool = True) -> None:
        super().__init__()
        self.block1 = ResBlock(cin, cout)
        self.attention = CBAM(cout) if use_cbam else None
        self.block2 = ResBlock(cout, cout)

    def forward(self, value_f16: torch.Tensor, key_f16: torch.Tensor) -> torch.Tensor:
        """value_f16 [N,..] (objects); key_f16 [N or 1,..]: with batch 1 its half of block1 runs once."""
        return self.finish(self.block1(value_f16, key_f16))

    def finish(self, fused: torch.Tensor) -> torch.Tensor:
        """Attention and the second block over `block1`'s output. Not local: CBAM gates each channel by its
        average and maximum over the whole map, so this runs on whole maps (block1 and everything before it
        is convolutions, local, and may run on crops)."""
        x = fused
        if self.attention is not None:
            x = x + self.attention(x)
        return self.block2(x)


class UpsampleBlock(nn.Module):
    """Doubles `up`'s resolution and adds the skip branch's convolution of the encoder feature `skip`.

    `skip` may have batch 1 while `up` has batch N (one frame, N objects): the skip convolution then runs
    once and its output is broadcast over the objects (convolution is per sample, so this is exact).
    """

    def __init__(self, skip_channels: int, up_channels: int, out_channels: int) -> None:
        super().__init__()
        self.skip_conv = conv3x3(skip_channels, up_channels)
        self.out_conv = ResBlock(up_channels, out_channels)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return self.forward_with_skip(self.skip_conv(skip), up)

    def forward_with_skip(self, skip_term: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """`forward` from the skip convolution's output, computed once over any region of the frame."""
        x = skip_term + F.interpolate(up, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out_conv(x)

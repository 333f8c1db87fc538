"""Building blocks of STCN's fusion and decoder heads (names follow official STCN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ResBlock(nn.Module):
    """Pre-activation residual block without batch norm; 3x3 `downsample` shortcut when widths differ."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.downsample = conv3x3(cin, cout) if cin != cout else None
        self.conv1 = conv3x3(cin, cout)
        self.conv2 = conv3x3(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv1(F.relu(x))
        r = self.conv2(F.relu(r))
        if self.downsample is not None:
            x = self.downsample(x)
        return x + r


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
        x = self.block1(torch.cat([value_f16, key_f16], dim=1))
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
        x = self.skip_conv(skip)
        x = x + F.interpolate(up, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out_conv(x)

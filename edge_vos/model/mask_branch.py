"""A light value encoder: the masks through a few cheap strided convolutions, fused at /16 with image features
that are computed once per frame (the design of SAM 2's memory encoder and Cutie's mask encoder), then the
EfficientNet value encoder's fusion tail (CBAM and its second residual block).

The EfficientNet value encoder runs a whole trunk over [RGB, own mask, others' masks] for every object; here
an object costs only its mask branch and the tail, and the image enters through two streams that do not grow
with the object count: a small stem at /4 and the key encoder's f16. Its weights come from distillation of the
bundled value encoder (edge_vos.train.distill_value), whose fusion tail starts it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge_vos.model.modules import CBAM, ResBlock, conv3x3

# Channels of the mask branch at /4, /8 and /16.
MASK_BRANCH_WIDTHS = (16, 32, 64)


class LightFusion(nn.Module):
    """Mask features [N,..] and the key encoder's f16 [N or 1,..] at /16 -> values.

    The pre-attention feature is `key_shortcut(f16)` (the teacher's first fusion block has the same
    convolution of the key features on its shortcut; it starts from those weights) plus a per-object mix:
    a 1x1 convolution of the mask features added to a 3x3 convolution of the key features (once per frame),
    then a depthwise 3x3 and a 1x1 convolution. Attention and `block2` are the teacher's tail.
    """

    def __init__(self, mask_channels: int, key_channels: int, value_dim: int, use_cbam: bool = True) -> None:
        super().__init__()
        self.key_shortcut = conv3x3(key_channels, value_dim)
        self.key_in = conv3x3(key_channels, value_dim)
        self.mask_in = nn.Conv2d(mask_channels, value_dim, 1)
        self.mix_depthwise = nn.Conv2d(value_dim, value_dim, 3, padding=1, groups=value_dim)
        self.mix_out = nn.Conv2d(value_dim, value_dim, 1)
        self.attention = CBAM(value_dim) if use_cbam else None
        self.block2 = ResBlock(value_dim, value_dim)

    def features(self, mask_f16: torch.Tensor, key_f16: torch.Tensor) -> torch.Tensor:
        """The pre-attention feature (what distillation matches to the teacher's first fusion block)."""
        mixed = F.relu(self.mask_in(mask_f16) + self.key_in(F.relu(key_f16)))
        mixed = self.mix_out(F.relu(self.mix_depthwise(mixed)))
        return self.key_shortcut(key_f16) + mixed

    def forward(self, mask_f16: torch.Tensor, key_f16: torch.Tensor) -> torch.Tensor:
        return self.finish(self.features(mask_f16, key_f16))

    def finish(self, features: torch.Tensor) -> torch.Tensor:
        """Attention and the second block over whole maps, as `FeatureFusionBlock.finish`."""
        x = features
        if self.attention is not None:
            x = x + self.attention(x)
        return self.block2(x)


class MaskBranchValueEncoder(nn.Module):
    """Same call as the other value encoders: image [N or 1,3,H,W], key_f16 [N or 1,C,H/16,W/16], mask and
    others [N,1,H,W] -> values [N,value_dim,H/16,W/16]; the image stem and every convolution of key_f16 run
    once when those come with batch 1."""

    def __init__(
        self, key_f16_channels: int, use_cbam: bool = True, value_dim: int = 128,
        widths: tuple[int, int, int] = MASK_BRANCH_WIDTHS,
    ) -> None:
        super().__init__()
        c4, c8, c16 = widths
        self.image_stem = nn.Sequential(
            nn.Conv2d(3, c4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(c4, c4, 3, stride=2, padding=1),
        )
        self.mask_patch = nn.Conv2d(2, c4, 4, stride=4)
        self.down8 = nn.Conv2d(c4, c8, 3, stride=2, padding=1)
        self.down16 = nn.Conv2d(c8, c16, 3, stride=2, padding=1)
        self.fuser = LightFusion(c16, key_f16_channels, value_dim, use_cbam=use_cbam)

    def mask_features(self, image: torch.Tensor, mask: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """Per object features at /16: the masks patch-embedded at /4 plus the image stem, then two strided
        convolutions."""
        x = self.mask_patch(torch.cat([mask, others], dim=1)) + self.image_stem(image)
        x = F.relu(self.down8(F.relu(x)))
        return F.relu(self.down16(x))

    def encode_local(
        self, image: torch.Tensor, key_f16: torch.Tensor, mask: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        """The pre-attention feature: convolutions only, so it may run on a crop (`STCN.encode_value_local`)."""
        return self.fuser.features(self.mask_features(image, mask, others), key_f16)

    def forward(
        self, image: torch.Tensor, key_f16: torch.Tensor, mask: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        return self.fuser(self.mask_features(image, mask, others), key_f16)


__all__ = ["MASK_BRANCH_WIDTHS", "LightFusion", "MaskBranchValueEncoder"]

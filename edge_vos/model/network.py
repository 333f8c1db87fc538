"""STCN: key encoder, value encoder, key projection and decoder.

The network is split into the three calls the tracker makes per frame (and that get exported as separate
engines): `encode_key` once per frame, `encode_value` when a frame is written to memory, `decode` once per
frame for all objects at once (objects are the batch axis of the value encoder and the decoder).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge_vos.model.archs import ARCHS, EFFICIENTNET_LITE0, KEY_DIM, MASK_BRANCH, VALUE_DIM, ArchSpec
from edge_vos.model.efficientnet import LITE0_CHANNELS, EfficientNetLiteTrunk
from edge_vos.model.mask_branch import MaskBranchValueEncoder
from edge_vos.model.modules import FeatureFusionBlock, ResBlock, UpsampleBlock, conv_of_concat
from edge_vos.model.resnet import ResNetTrunk
from edge_vos.model.resnet import trunk_channels as resnet_channels


def trunk_channels(name: str) -> tuple[int, int, int]:
    """Channels of (f4, f8, f16) for a trunk name (ResNet depth or efficientnet-lite0)."""
    return LITE0_CHANNELS if name == EFFICIENTNET_LITE0 else resnet_channels(name)


def _key_encoder(name: str) -> nn.Module:
    return EfficientNetLiteTrunk(in_channels=3) if name == EFFICIENTNET_LITE0 else KeyEncoder(name)


def _value_encoder(name: str, key_f16_channels: int, use_cbam: bool, value_dim: int) -> nn.Module:
    if name == EFFICIENTNET_LITE0:
        return LiteValueEncoder(key_f16_channels, use_cbam=use_cbam, value_dim=value_dim)
    if name == MASK_BRANCH:
        return MaskBranchValueEncoder(key_f16_channels, use_cbam=use_cbam, value_dim=value_dim)
    return ValueEncoder(name, key_f16_channels, use_cbam=use_cbam, value_dim=value_dim)


class KeyEncoder(ResNetTrunk):
    def __init__(self, depth: str) -> None:
        super().__init__(depth, in_channels=3, bias=False, first_stage_name="res2")


class ValueEncoder(nn.Module):
    """ResNet-18 over [RGB, own mask, others' masks] fused with the key encoder's f16."""

    def __init__(
        self, depth: str, key_f16_channels: int, use_cbam: bool = True, value_dim: int = VALUE_DIM
    ) -> None:
        super().__init__()
        trunk = ResNetTrunk(depth, in_channels=5, bias=True)
        # Flattened so the parameter names match official STCN (value_encoder.conv1, .layer1, ...).
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        value_f16 = resnet_channels(depth)[2]
        self.fuser = FeatureFusionBlock(value_f16 + key_f16_channels, value_dim, use_cbam=use_cbam)

    def forward(
        self, image: torch.Tensor, key_f16: torch.Tensor, mask: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        """mask/others [N,1,H,W]; image and key_f16 with batch N or 1 (their convolutions then run once)."""
        return self.fuser.finish(self.encode_local(image, key_f16, mask, others))

    def encode_local(
        self, image: torch.Tensor, key_f16: torch.Tensor, mask: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        """Everything before the fusion's attention: convolutions only, so it may run on a crop."""
        x = conv_of_concat(self.conv1, (image, torch.cat([mask, others], dim=1)))
        x = self.maxpool(self.relu(self.bn1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fuser.block1(x, key_f16)


class LiteValueEncoder(EfficientNetLiteTrunk):
    """EfficientNet-Lite0 over [RGB, own mask, others' masks] fused with the key encoder's f16.

    Subclasses the trunk (rather than holding one) so the stem is `value_encoder.conv1` as in the ResNet
    value encoder, which the checkpoint loader's 4->5 channel adaptation looks up. The stem convolution is
    split by input channel (`conv_of_concat`): its RGB part runs once per frame, the masks' part per object;
    the same for the key features' half of the fusion's first block.
    """

    def __init__(self, key_f16_channels: int, use_cbam: bool = True, value_dim: int = VALUE_DIM) -> None:
        super().__init__(in_channels=5)
        self.fuser = FeatureFusionBlock(LITE0_CHANNELS[2] + key_f16_channels, value_dim, use_cbam=use_cbam)

    def forward(  # type: ignore[override]
        self, image: torch.Tensor, key_f16: torch.Tensor, mask: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        """mask/others [N,1,H,W]; image and key_f16 with batch N or 1 (their convolutions then run once)."""
        return self.fuser.finish(self.encode_local(image, key_f16, mask, others))

    def encode_local(
        self, image: torch.Tensor, key_f16: torch.Tensor, mask: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        """Everything before the fusion's attention: convolutions only, so it may run on a crop."""
        stem = conv_of_concat(self.conv1, (image, torch.cat([mask, others], dim=1)))
        f16, _, _ = self.forward_from_stem(stem)
        return self.fuser.block1(f16, key_f16)


class KeyProjection(nn.Module):
    def __init__(self, cin: int, key_dim: int = KEY_DIM) -> None:
        super().__init__()
        self.key_proj = nn.Conv2d(cin, key_dim, 3, padding=1)
        nn.init.orthogonal_(self.key_proj.weight.data)
        nn.init.zeros_(self.key_proj.bias.data)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.key_proj(x)


class Decoder(nn.Module):
    """Memory readout + query value at /16 -> mask logits at full size, through skips from f8 and f4.

    The query value and the skip inputs f8 and f4 depend only on the frame: given with batch 1 beside N
    objects they are convolved once per frame and broadcast (the query value's half of the first block's
    two convolutions: ResBlock with parts; the skip convolutions: UpsampleBlock), so that work, the largest
    single layer (the /4 skip convolution) included, does not grow with the object count.
    """

    def __init__(
        self, f8_channels: int, f4_channels: int, value_dim: int = VALUE_DIM,
        dims: tuple[int, int, int] = (512, 256, 256),
    ) -> None:
        super().__init__()
        d16, d8, d4 = dims
        self.compress = ResBlock(2 * value_dim, d16)
        self.up_16_8 = UpsampleBlock(f8_channels, d16, d8)
        self.up_8_4 = UpsampleBlock(f4_channels, d8, d4)
        self.pred = nn.Conv2d(d4, 1, 3, padding=1)

    def forward(
        self, readout: torch.Tensor, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        """readout [N,..]; query_value, f8, f4 with batch N or 1 (one frame: each convolution of theirs, the
        query value's half of the first block included, then runs once per frame)."""
        return self.forward_with_terms(readout, *self.frame_terms(query_value, f8, f4))

    def frame_terms(
        self, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every convolution of the frame's inputs (the query value's terms in the first block, the skip
        convolutions on f8 and f4), over whatever region of the frame they are given: computed once per
        frame and cut per object when objects are decoded on crops (tracker/regions.py)."""
        query_term, query_shortcut = self.compress.last_part_terms(query_value)
        return query_term, query_shortcut, self.up_16_8.skip_conv(f8), self.up_8_4.skip_conv(f4)

    def forward_with_terms(
        self, readout: torch.Tensor, query_term: torch.Tensor, query_shortcut: torch.Tensor, skip8: torch.Tensor,
        skip4: torch.Tensor,
    ) -> torch.Tensor:
        """`forward` from `frame_terms`' outputs on the same cells as `readout`: the objects' work only."""
        x = self.compress.forward_with_terms(readout, query_term, query_shortcut)
        x = self.up_16_8.forward_with_skip(skip8, x)
        x = self.up_8_4.forward_with_skip(skip4, x)
        x = self.pred(F.relu(x))
        return F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False)


class STCN(nn.Module):
    def __init__(self, spec: ArchSpec, use_cbam: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.use_cbam = use_cbam
        self.key_dim = KEY_DIM
        self.value_dim = spec.value_dim
        f4, f8, f16 = trunk_channels(spec.key_trunk)
        self.key_encoder = _key_encoder(spec.key_trunk)
        self.value_encoder = _value_encoder(spec.value_trunk, f16, use_cbam, spec.value_dim)
        self.key_proj = KeyProjection(f16)
        self.key_comp = nn.Conv2d(f16, spec.value_dim, 3, padding=1)
        self.decoder = Decoder(f8, f4, spec.value_dim, spec.decoder_dims)

    @property
    def arch(self) -> str:
        return self.spec.name

    def encode_key(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """image [B,3,H,W] normalised, H and W multiples of 16.

        Returns key [B,Ck,H/16,W/16], query value [B,512,H/16,W/16], and the trunk's f16, f8, f4.
        """
        f16, f8, f4 = self.key_encoder(image)
        return self.key_proj(f16), self.key_comp(f16), f16, f8, f4

    def encode_value(
        self, image: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        """masks/others [N,1,H,W] (objects); image [N or 1,3,H,W] and key_f16 [N or 1,C,h,w] (one frame,
        broadcast over the objects) -> values [N,value_dim,h,w]."""
        return self.value_encoder(image, key_f16, masks, others)

    def encode_value_local(
        self, image: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        """`encode_value` up to the fusion's attention (convolutions only: any region of the frame, image of
        16r x 16c, key_f16 of r x c) -> [N,value_dim,r,c]; `encode_value_global` finishes whole maps."""
        return self.value_encoder.encode_local(image, key_f16, masks, others)

    def encode_value_global(self, local: torch.Tensor) -> torch.Tensor:
        """`encode_value_local`'s output over the whole frame [N,value_dim,h,w] -> values [N,value_dim,h,w]."""
        return self.value_encoder.fuser.finish(local)

    def decode(
        self, readout: torch.Tensor, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        """readout [N,value_dim,h,w] (objects); query_value, f8, f4 with batch N or 1 (one frame: broadcast,
        and the skip convolutions on f8 and f4 then run once per frame) -> logits [N,1,H,W]."""
        return self.decoder(readout, query_value, f8, f4)

    def decode_frame_terms(
        self, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's frame-only convolutions over a region of the frame (query value [1,..,r,c], f8 of
        2r x 2c, f4 of 4r x 4c) -> query_term, query_shortcut [1,d16,r,c], skip8 [1,d16,2r,2c], skip4
        [1,d8,4r,4c]; `decode_with_terms` takes them, cut to an object's cells."""
        return self.decoder.frame_terms(query_value, f8, f4)

    def decode_with_terms(
        self, readout: torch.Tensor, query_term: torch.Tensor, query_shortcut: torch.Tensor, skip8: torch.Tensor,
        skip4: torch.Tensor,
    ) -> torch.Tensor:
        """`decode` from `decode_frame_terms`' outputs on the readout's cells -> logits [N,1,16r,16c]."""
        return self.decoder.forward_with_terms(readout, query_term, query_shortcut, skip8, skip4)


def build_network(arch: str = "stcn-r18", *, use_cbam: bool = True) -> STCN:
    """Builds an untrained network; `arch` is one of ARCHS (stcn-r50 is official STCN; stcn-effl0 and
    stcn-r18-lite are the compact archs of the bundled model and its from-scratch comparison; stcn-effl0-mb is
    stcn-effl0 with the light value encoder of mask_branch.py, stcn-effl0-ld with a narrower decoder)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    return STCN(ARCHS[arch], use_cbam=use_cbam)

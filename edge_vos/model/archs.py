"""The architectures `model.arch` may name, as plain data (torch-free: config modules import it); network.py
builds them."""

from __future__ import annotations

from dataclasses import dataclass

EFFICIENTNET_LITE0 = "efficientnet-lite0"
# A value encoder without a trunk: cheap mask convolutions fused with per-frame image features
# (edge_vos.model.mask_branch).
MASK_BRANCH = "mask-branch"

KEY_DIM = 64
VALUE_DIM = 512


@dataclass(frozen=True)
class ArchSpec:
    """What varies between architectures: trunks and head widths (official STCN: 512 / 512, 256, 256)."""

    name: str
    key_trunk: str
    value_trunk: str = "resnet18"
    value_dim: int = VALUE_DIM
    decoder_dims: tuple[int, int, int] = (512, 256, 256)  # widths at /16, /8, /4


ARCHS: dict[str, ArchSpec] = {
    "stcn-r18": ArchSpec("stcn-r18", key_trunk="resnet18"),
    "stcn-r50": ArchSpec("stcn-r50", key_trunk="resnet50"),
    # Compact archs for edge devices and the bundled model (< 30 MB): narrow value and decoder heads.
    "stcn-effl0": ArchSpec(
        "stcn-effl0", key_trunk=EFFICIENTNET_LITE0, value_trunk=EFFICIENTNET_LITE0, value_dim=128,
        decoder_dims=(128, 64, 32),
    ),
    "stcn-r18-lite": ArchSpec(
        "stcn-r18-lite", key_trunk="resnet18", value_trunk="resnet18", value_dim=128, decoder_dims=(128, 64, 32),
    ),
    # stcn-effl0 with the light value encoder, distilled from the bundled one (edge_vos.train.distill_value).
    "stcn-effl0-mb": ArchSpec(
        "stcn-effl0-mb", key_trunk=EFFICIENTNET_LITE0, value_trunk=MASK_BRANCH, value_dim=128,
        decoder_dims=(128, 64, 32),
    ),
    # stcn-effl0 with a narrower decoder, distilled from the bundled one (edge_vos.train.distill_decoder): the
    # decoder is the largest per-object cost, and these widths do about 3/10 of its per-object work.
    "stcn-effl0-ld": ArchSpec(
        "stcn-effl0-ld", key_trunk=EFFICIENTNET_LITE0, value_trunk=EFFICIENTNET_LITE0, value_dim=128,
        decoder_dims=(64, 32, 16),
    ),
}


__all__ = ["ARCHS", "EFFICIENTNET_LITE0", "KEY_DIM", "MASK_BRANCH", "VALUE_DIM", "ArchSpec"]

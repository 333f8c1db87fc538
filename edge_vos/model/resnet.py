"""ResNet trunks (stem + layer1..layer3, no layer4) with torchvision-compatible parameter names.

Written here rather than imported from torchvision because torchvision's wheels do not import beside the
pinned CPU torch on the development machines; the names match torchvision so its ImageNet checkpoints load.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, k: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv(cin, planes, 3, stride, bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, 1, bias)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(_conv(cin, planes, 1, stride, bias), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, bias: bool = False) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = _conv(cin, planes, 1, 1, bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride, bias)  # stride on the 3x3 (torchvision "v1.5")
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, cout, 1, 1, bias)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(_conv(cin, cout, 1, stride, bias), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_SPECS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6)),
}


def trunk_channels(depth: str) -> tuple[int, int, int]:
    """Channels of (f4, f8, f16) for a trunk name."""
    block, _ = _SPECS[depth]
    return 64 * block.expansion, 128 * block.expansion, 256 * block.expansion


class ResNetTrunk(nn.Module):
    """Stem + three stages; returns features at strides 4, 8 and 16.

    `first_stage_name` exists because official STCN calls the key encoder's layer1 `res2`.
    """

    def __init__(
        self,
        depth: str,
        in_channels: int = 3,
        bias: bool = False,
        first_stage_name: str = "layer1",
    ) -> None:
        super().__init__()
        if depth not in _SPECS:
            raise ValueError(f"unknown ResNet depth {depth!r}; expected one of {sorted(_SPECS)}")
        block, counts = _SPECS[depth]
        self.first_stage_name = first_stage_name
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=bias)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        stages = []
        for planes, count, stride in zip((64, 128, 256), counts, (1, 2, 2), strict=True):
            blocks = []
            for i in range(count):
                blocks.append(block(cin, planes, stride if i == 0 else 1, bias))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        setattr(self, first_stage_name, stages[0])
        self.layer2 = stages[1]
        self.layer3 = stages[2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f4 = getattr(self, self.first_stage_name)(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4

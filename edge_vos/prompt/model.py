"""The prompt network: an RGB crop plus prompt maps -> object mask logits on that crop.

Inputs, all at the crop's size S x S: RGB (ImageNet mean/std) and four prompt maps (`MAP_CHANNELS`):
the box (1 inside), positive and negative clicks (disks, `click_maps`), and a previous or coarse mask.

- Trunk: ImageNet EfficientNet-Lite0 (or Lite1/Lite2, `PromptNetConfig.trunk`) to stride 16
  (edge_vos.model.efficientnet). Its stem and blocks up to stride 4 see RGB only and stay frozen: on a
  CPU the backward pass through the high-resolution depthwise layers is most of a training step, and
  ImageNet's low-level filters need no prompt.
- Prompt encoder: the maps, convolved down to stride 4, are added to the trunk's stride-4 features (last
  conv zero-initialised, so training starts from the plain ImageNet trunk), so the later blocks see where
  the object is. A global-pooled context vector is added at stride 16.
- Decoder: U-Net style, stride 16 -> 8 -> 4 -> 2 with the trunk's skips and the maps again at stride 2
  (boundaries are decided where the clicks and box edges are still sharp); logits at stride 2, then
  bilinear to S.
Architecture knobs live in `PromptNetConfig`, which is stored in the weights' header so a file always
rebuilds the network it was trained as.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edge_vos.model.efficientnet import LITE_VARIANTS, EfficientNetLiteTrunk, lite_imagenet_state
from edge_vos.model.preprocess import IMAGENET_MEAN, IMAGENET_STD

MAP_CHANNELS = ("box", "positive", "negative", "mask")
ARCH_PREFIX = "prompt-eff"  # + the trunk's short name: prompt-effl0, prompt-effl1, prompt-effl2


@dataclass(frozen=True)
class PromptNetConfig:
    crop_size: int = 256  # S: every crop is resized to S x S
    decoder_widths: tuple[int, int, int, int] = (96, 64, 48, 32)  # at strides 16, 8, 4, 2
    prompt_width: int = 32
    click_radius: float = 5.0  # pixels of the S x S crop
    trunk: str = "lite0"  # EfficientNet-Lite variant (edge_vos.model.efficientnet.LITE_VARIANTS)

    @property
    def arch(self) -> str:
        """The header's `arch`: files written before the trunk was a choice say prompt-effl0."""
        return ARCH_PREFIX + "l" + self.trunk.removeprefix("lite")


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding=k // 2), nn.ReLU(inplace=True))


class PromptNet(nn.Module):
    def __init__(self, config: PromptNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or PromptNetConfig()
        n_maps = len(MAP_CHANNELS)
        pw = self.config.prompt_width
        d16, d8, d4, d2 = self.config.decoder_widths
        self.trunk = EfficientNetLiteTrunk(in_channels=3, variant=self.config.trunk)
        c2, c4, c8, c16 = self.trunk.channels
        self.prompt_encoder = nn.Sequential(_conv(n_maps, 16, stride=2), _conv(16, pw, stride=2),
                                            nn.Conv2d(pw, c4, 1))
        nn.init.zeros_(self.prompt_encoder[-1].weight)
        nn.init.zeros_(self.prompt_encoder[-1].bias)
        self.context = nn.Sequential(nn.Linear(c16, c16), nn.ReLU(inplace=True))
        self.dec16 = _conv(c16 * 2, d16, k=1)
        self.dec8 = nn.Sequential(_conv(d16 + c8, d8), _conv(d8, d8))
        self.dec4 = nn.Sequential(_conv(d8 + c4, d4), _conv(d4, d4))
        self.dec2 = nn.Sequential(_conv(d4 + c2 + n_maps, d2), _conv(d2, d2))
        self.head = nn.Conv2d(d2, 1, 3, padding=1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def init_from_imagenet(self) -> None:
        self.trunk.load_state_dict(lite_imagenet_state(self.trunk), strict=False)

    def train(self, mode: bool = True) -> PromptNet:
        """Batch norm stays at ImageNet statistics (batches of a few crops would only add noise)."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Stem and the blocks up to stride 4: kept at ImageNet values."""
        trunk = self.trunk
        frozen = [*trunk.conv1.parameters(), *trunk.bn1.parameters()]
        for block in trunk.blocks[: trunk.f4_block + 1]:
            frozen += list(block.parameters())
        return frozen

    def forward(self, rgb: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """rgb float [B,3,S,S] in 0..1, maps float [B,4,S,S] -> logits [B,1,S,S]."""
        trunk = self.trunk
        x = (rgb - self.mean) / self.std
        with torch.no_grad() if self.training else contextlib.nullcontext():
            x = trunk.act(trunk.bn1(trunk.conv1(x)))
            f2 = x
            for i in range(trunk.f4_block + 1):
                x = trunk.blocks[i](x)
                if i == trunk.f2_block:
                    f2 = x
        f2, x = f2.detach(), x.detach()
        x = x + self.prompt_encoder(maps)
        f4 = x
        for i in range(trunk.f4_block + 1, len(trunk.blocks)):
            x = trunk.blocks[i](x)
            if i == trunk.f8_block:
                f8 = x
        f16 = x
        ctx = self.context(f16.mean(dim=(2, 3)))[:, :, None, None].expand_as(f16)
        y = self.dec16(torch.cat([f16, ctx], 1))
        y = F.interpolate(y, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec8(torch.cat([y, f8], 1))
        y = F.interpolate(y, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec4(torch.cat([y, f4], 1))
        y = F.interpolate(y, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        maps2 = F.interpolate(maps, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec2(torch.cat([y, f2, maps2], 1))
        logits = self.head(y)
        return F.interpolate(logits, size=rgb.shape[-2:], mode="bilinear", align_corners=False)

    def header(self) -> dict[str, str]:
        import json

        return {"arch": self.config.arch, "config": json.dumps(asdict(self.config))}



def save_weights(model: PromptNet, path: str | Path, provenance: dict[str, str] | None = None) -> None:
    """The network's weights as safetensors; the header holds the arch, its config and `provenance`."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={**model.header(), **(provenance or {})})


def load_weights(path: str | Path) -> tuple[PromptNet, dict[str, str]]:
    """(network in eval mode, header) from a file written by `save_weights`."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        header = dict(handle.metadata() or {})
    arch = header.get("arch")
    known = {PromptNetConfig(trunk=t).arch for t in LITE_VARIANTS}
    if arch not in known:
        raise ValueError(f"{path}: not a prompt network (arch {arch!r}, expected one of {sorted(known)})")
    raw = json.loads(header["config"])  # files without `trunk` predate the choice: Lite0
    config = PromptNetConfig(**{**raw, "decoder_widths": tuple(raw["decoder_widths"])})
    if config.arch != arch:
        raise ValueError(f"{path}: arch {arch!r} does not match its config's trunk {config.trunk!r}")
    model = PromptNet(config)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), header

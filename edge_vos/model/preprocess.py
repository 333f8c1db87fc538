"""Pre- and post-processing as official STCN: ImageNet normalisation, even zero padding to /16."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Rows and columns of a [..., h, w] map: a rectangle, as Python slices.
Rect = tuple[slice, slice]


@dataclass(frozen=True)
class FrameGeometry:
    """How an input frame maps to the network's padded working canvas and back."""

    in_h: int
    in_w: int
    work_h: int  # resized, before padding
    work_w: int
    pad: tuple[int, int, int, int]  # left, right, top, bottom (F.pad order)

    @property
    def padded_hw(self) -> tuple[int, int]:
        return self.work_h + self.pad[2] + self.pad[3], self.work_w + self.pad[0] + self.pad[1]

    @property
    def feature_hw(self) -> tuple[int, int]:
        h, w = self.padded_hw
        return h // 16, w // 16


def frame_geometry(in_h: int, in_w: int, short_side: int | None, multiple: int = 16) -> FrameGeometry:
    """Scales so the short side equals `short_side` (None or 0: keep the input size), then pads evenly."""
    if in_h <= 0 or in_w <= 0:
        raise ValueError(f"frame size must be positive, got {in_w}x{in_h}")
    if short_side:
        scale = short_side / min(in_h, in_w)
        work_h, work_w = max(1, round(in_h * scale)), max(1, round(in_w * scale))
    else:
        work_h, work_w = in_h, in_w
    pad_h = (multiple - work_h % multiple) % multiple
    pad_w = (multiple - work_w % multiple) % multiple
    pad = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    return FrameGeometry(in_h, in_w, work_h, work_w, pad)


def image_to_tensor(image: np.ndarray, geometry: FrameGeometry, device: torch.device | str = "cpu") -> torch.Tensor:
    """RGB uint8 [H,W,3] -> normalised, resized, padded float tensor [1,3,h,w]."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H,W,3], got {image.dtype} {list(image.shape)}")
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
    if (geometry.work_h, geometry.work_w) != (geometry.in_h, geometry.in_w):
        x = F.interpolate(x, size=(geometry.work_h, geometry.work_w), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    # (x / 255 - mean) / std in one pass, written straight into the zero-padded canvas (this runs per frame)
    left, _, top, _ = geometry.pad
    canvas = torch.zeros(1, 3, *geometry.padded_hw, device=x.device)
    inner = canvas[..., top : top + geometry.work_h, left : left + geometry.work_w]
    torch.addcmul(-mean / std, x, 1.0 / (255.0 * std), out=inner)
    return canvas


def masks_to_tensor(masks: torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
    """Per-object masks or probabilities at input size [N,1,H,W] -> working canvas, padded with zeros."""
    x = masks.float()
    if (geometry.work_h, geometry.work_w) != (geometry.in_h, geometry.in_w):
        x = F.interpolate(x, size=(geometry.work_h, geometry.work_w), mode="bilinear", align_corners=False)
    return F.pad(x, geometry.pad)


def unpad(x: torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
    """Crops the padding off a [..., h, w] tensor on the working canvas."""
    left, right, top, bottom = geometry.pad
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]


def to_input_size(x: torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
    """Unpads and resizes [N,C,h,w] working-canvas maps (probabilities) back to the input size."""
    x = unpad(x, geometry)
    if (geometry.work_h, geometry.work_w) != (geometry.in_h, geometry.in_w):
        x = F.interpolate(x, size=(geometry.in_h, geometry.in_w), mode="bilinear", align_corners=False)
    return x


@lru_cache(maxsize=8)
def _bilinear_taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """F.interpolate's bilinear sampling (align_corners=False) along one axis: per output index, its two
    source indices. Cached: it depends on the frame size only, and is asked per object and frame (read only)."""
    dst = torch.arange(out_size, dtype=torch.float32)
    src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp_(min=0.0)
    first = src.floor().long()
    return first, (first + 1).clamp_(max=in_size - 1)


def _footprint(first: torch.Tensor, second: torch.Tensor, lo: int, hi: int) -> slice:
    """Output indices whose taps touch source indices [lo, hi) (taps rise with the output index)."""
    start = int(torch.searchsorted(second, lo))
    stop = int(torch.searchsorted(first, hi))
    return slice(start, max(start, stop))


def input_footprint(region: Rect, geometry: FrameGeometry) -> Rect:
    """The input pixels whose value `to_input_size` takes from any canvas pixel of `region` (canvas rows and
    columns), with one pixel more on each side against float rounding in the sampling positions. Why: a map
    that is at most another outside `region` stays so outside this, so work on it can stop here."""
    left, _, top, _ = geometry.pad
    rows = (max(region[0].start - top, 0), min(region[0].stop - top, geometry.work_h))
    cols = (max(region[1].start - left, 0), min(region[1].stop - left, geometry.work_w))
    if (geometry.work_h, geometry.work_w) == (geometry.in_h, geometry.in_w):
        return slice(*rows), slice(*cols)
    out = []
    for (lo, hi), work, size in ((rows, geometry.work_h, geometry.in_h), (cols, geometry.work_w, geometry.in_w)):
        first, second = _bilinear_taps(work, size)
        span = _footprint(first, second, lo, hi)
        out.append(slice(max(span.start - 1, 0), min(span.stop + 1, size)))
    return out[0], out[1]

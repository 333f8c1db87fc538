"""Samples for distilling the value encoder: one frame at the tracker's working scale with 1-4 objects, given
as the soft [own, others] masks the tracker writes to memory.

Frames come from DAVIS-2016 training sequences (minus evaluation splits and the left-out sequences), COCO
photographs (the prompt network's hold-out ids excluded: `part="train"`) and seeded synthetic scenes. DAVIS-2016
has one object per frame, so further objects are COCO cut-outs pasted at random places. Each sample is a pure
function of a numpy Generator, so a run is resumable from its step number alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from edge_vos.data.coco import coco128_images, coco_objects
from edge_vos.data.davis import davis_sequences, read_image, read_mask
from edge_vos.model.preprocess import IMAGENET_MEAN, IMAGENET_STD
from edge_vos.train.sources import held_out_names

MAX_DISTILL_OBJECTS = 4
_MIN_PIXELS = 64


@dataclass(frozen=True)
class DistillData:
    """Where the frames come from and how a sample is cut."""

    davis_root: str = "../shared/data/davis2016"
    static_root: str = "../shared/data/static"
    davis_res: str = "240p"  # the training sequences' only resolution here (480p holds val-dev)
    exclude_sequences: tuple[str, ...] = ("boat", "dance-jump", "hike", "hockey", "kite-walk", "rhino")
    synthetic_sequences: int = 12
    work_size: int = 360  # the tracker's working short side
    scale_range: tuple[float, float] = (0.8, 1.25)
    crop: int = 320  # square crop, multiple of 16
    source_weights: dict[str, float] = field(default_factory=lambda: {"real": 0.5, "photo": 0.3, "synthetic": 0.2})

    def __post_init__(self) -> None:
        if self.crop % 16 or self.crop < 64:
            raise ValueError(f"crop must be a multiple of 16 and >= 64, got {self.crop}")
        if set(self.source_weights) - {"real", "photo", "synthetic"} or sum(self.source_weights.values()) <= 0:
            raise ValueError(f"source_weights: expected weights of real/photo/synthetic, got {self.source_weights}")


@dataclass
class Sample:
    """image float [1,3,S,S] (ImageNet-normalised), masks and others float [O,1,S,S] in [0, 1]."""

    image: torch.Tensor
    masks: torch.Tensor
    others: torch.Tensor


class DistillFrames:
    """Frames with label maps from every source; `sample(rng)` cuts one training sample."""

    def __init__(self, cfg: DistillData, seed: int = 0, sequences: tuple[str, ...] | None = None) -> None:
        """`sequences`: only these DAVIS training sequences (the left-out ones, for the held-out error), and
        then neither photographs nor synthetic frames as bases."""
        self.cfg = cfg
        self.seed = seed
        held = held_out_names(cfg.davis_root)
        found = davis_sequences(cfg.davis_root, "train", cfg.davis_res, "2016")
        if sequences is None:
            keep = [s for s in found if s.name not in held and s.name not in cfg.exclude_sequences]
        else:
            unknown = sorted(set(sequences) - {s.name for s in found})
            if unknown:
                raise ValueError(f"not DAVIS-2016 training sequences: {unknown}")
            keep = [s for s in found if s.name in sequences]
        self.frames = [(s.name, i) for s in keep for i, f in enumerate(s.frames) if f.stem in s.masks]
        self.sequences = {s.name: s for s in keep}
        root = Path(cfg.static_root)
        self.cutouts = [(o.image_path, o.mask_path) for o in coco_objects(root, part="train")]
        self.photos = [(i.image_path, i.mask_path) for i in coco128_images(root, part="train")] + self.cutouts
        self.weights = dict(cfg.source_weights) if sequences is None else {"real": 1.0}
        self._synthetic: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _base(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        kinds = [k for k, w in self.weights.items() if w > 0]
        p = np.array([self.weights[k] for k in kinds], dtype=np.float64)
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        if kind == "photo":
            image_path, mask_path = self.photos[int(rng.integers(len(self.photos)))]
            return read_image(image_path), read_mask(mask_path)
        if kind == "synthetic":
            frames, labels = self._synthetic_sequence(int(rng.integers(self.cfg.synthetic_sequences)))
            t = int(rng.integers(len(frames)))
            return frames[t], labels[t]
        name, index = self.frames[int(rng.integers(len(self.frames)))]
        seq = self.sequences[name]
        labels = read_mask(seq.masks[seq.frames[index].stem])
        return seq.image(index), (labels > 0).astype(np.uint8)  # DAVIS-2016: any non-zero value is the object

    def _synthetic_sequence(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._synthetic.get(index)
        if cached is None:
            from edge_vos.data.synthetic import generate_sequence

            rng = np.random.default_rng([self.seed, 7919, index])
            cached = generate_sequence(seed=int(rng.integers(2**31)), num_frames=20, size=(240, 432),
                                       num_objects=int(rng.integers(1, 4)), num_distractors=int(rng.integers(0, 3)))
            self._synthetic[index] = cached
        return cached

    def _paste(self, rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, obj_id: int) -> None:
        """A COCO cut-out pasted in place (object id `obj_id`), at 10-40 % of the frame's short side."""
        src_path, mask_path = self.cutouts[int(rng.integers(len(self.cutouts)))]
        src, mask = read_image(src_path), read_mask(mask_path) > 0
        ys, xs = np.nonzero(mask)
        if len(ys) < _MIN_PIXELS:
            return
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        src, mask = src[y0:y1, x0:x1], mask[y0:y1, x0:x1].astype(np.uint8)
        h, w = labels.shape
        scale = min(h, w) * rng.uniform(0.1, 0.4) / max(y1 - y0, x1 - x0)
        size = (max(4, int((x1 - x0) * scale)), max(4, int((y1 - y0) * scale)))
        src = cv2.resize(src, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST).astype(bool)
        top, left = int(rng.integers(0, max(1, h - size[1]))), int(rng.integers(0, max(1, w - size[0])))
        region = (slice(top, top + mask.shape[0]), slice(left, left + mask.shape[1]))
        mask = mask[: h - top, : w - left]
        image[region][mask] = src[: mask.shape[0], : mask.shape[1]][mask]
        labels[region][mask] = obj_id

    def sample(self, rng: np.random.Generator) -> Sample:
        image, labels = self._base(rng)
        image, labels = np.ascontiguousarray(image), np.ascontiguousarray(labels)
        wanted = int(rng.integers(1, MAX_DISTILL_OBJECTS + 1))
        ids = [int(i) for i in np.unique(labels) if i > 0 and (labels == i).sum() >= _MIN_PIXELS]
        rng.shuffle(ids)
        ids = ids[:wanted]
        next_id = int(labels.max()) + 1
        while len(ids) < wanted and next_id < 255:
            self._paste(rng, image, labels, next_id)
            if (labels == next_id).sum() >= _MIN_PIXELS:
                ids.append(next_id)
            next_id += 1
        image, labels = self._crop(rng, image, labels)
        probs = soft_masks(rng, np.stack([labels == i for i in ids]) if ids else np.zeros((1, *labels.shape), bool))
        others = probs.sum(dim=0, keepdim=True) - probs
        x = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)
        x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return Sample(x[None], probs, others)

    def _crop(self, rng: np.random.Generator, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scaled to about the working short side, a random square crop (padded when smaller), random flip."""
        cfg = self.cfg
        h, w = labels.shape
        scale = max(cfg.work_size * rng.uniform(*cfg.scale_range) / min(h, w), cfg.crop / min(h, w))
        size = (max(cfg.crop, round(w * scale)), max(cfg.crop, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
        top, left = int(rng.integers(0, size[1] - cfg.crop + 1)), int(rng.integers(0, size[0] - cfg.crop + 1))
        image = image[top:top + cfg.crop, left:left + cfg.crop]
        labels = labels[top:top + cfg.crop, left:left + cfg.crop]
        if rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def soft_masks(rng: np.random.Generator, binary: np.ndarray) -> torch.Tensor:
    """Ground-truth masks [O,H,W] made to look like the tracker's: each eroded or dilated by a few pixels,
    blurred, then normalised with a background channel as the tracker's soft aggregation does -> [O,1,H,W]."""
    masks = torch.from_numpy(binary.astype(np.float32))[:, None]
    out = []
    for m in masks:
        radius = int(rng.integers(0, 4))
        if radius:
            k = 2 * radius + 1
            pooled = F.max_pool2d(m[None], k, 1, radius)
            m = pooled[0] if rng.random() < 0.5 else -F.max_pool2d(-m[None], k, 1, radius)[0]
        blur = 2 * int(rng.integers(1, 4)) + 1
        m = F.avg_pool2d(m[None], blur, 1, blur // 2, count_include_pad=False)[0]
        out.append(m.clamp(0.0, 1.0) * float(rng.uniform(0.85, 1.0)))
    probs = torch.stack(out)
    background = (1 - probs).prod(dim=0, keepdim=True)
    odds = torch.cat([background, probs], dim=0).clamp(1e-5, 1 - 1e-5)
    logits = torch.log(odds / (1 - odds))
    return torch.softmax(logits, dim=0)[1:]

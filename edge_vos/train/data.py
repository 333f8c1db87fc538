"""Training samples: 3-frame clips with up to two objects, from static images or from videos.

Every sample is a pure function of a numpy Generator, and the trainer seeds one Generator per step from
(seed, step): the data order and all augmentation are therefore resumable from the step number alone,
with no sampler state to save. Sources are read on demand (real frames) or generated once from the seed
and cached (synthetic sequences), neither of which changes what a given step sees.

Static stage (STCN's pre-training on images): one frame becomes a pseudo-video by three independent random
affine warps and colour changes; a second object, when wanted and absent, is cut from another frame and
pasted with its own motion. Video stage: three frames in temporal order (or reversed) with gaps of at most
`max_gap`, one shared crop with small per-frame jitter; a second object comes from the sequence itself
(synthetic, YouTube-VOS) or is pasted from another clip with its own motion (DAVIS-2016 has one object).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_vos.train.config import DataSection

log = logging.getLogger(__name__)

NUM_FRAMES = 3
MAX_OBJECTS = 2
# A first-frame object smaller than this share of the crop makes the sampler try another crop.
_MIN_AREA = 0.004
_RETRIES = 8


@dataclass
class Clip:
    """One sample: frames uint8 [3,S,S,3], masks float32 [3,2,S,S] (0/1), selector float32 [2]."""

    frames: np.ndarray
    masks: np.ndarray
    selector: np.ndarray


@dataclass(frozen=True)
class _RealSequence:
    name: str
    frames: tuple[Path, ...]
    masks: tuple[Path, ...]  # one per frame in `frames` (only annotated frames are kept)


def _affine(
    center: tuple[float, float], scale: float, angle_deg: float, shear: float, out: int, shift: tuple[float, float]
) -> np.ndarray:
    """2x3 matrix mapping source pixels to an out x out crop centred on `center` (then shifted)."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * scale
    rot = rot @ np.array([[1.0, math.tan(math.radians(shear))], [0.0, 1.0]])
    t = np.array([out / 2 + shift[0], out / 2 + shift[1]]) - rot @ np.asarray(center, dtype=np.float64)
    return np.concatenate([rot, t[:, None]], axis=1).astype(np.float32)


def _warp(img: np.ndarray, m: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(img, m, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _colour(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness, contrast and saturation jitter; `strength` scales the ranges."""
    x = img.astype(np.float32)
    gray = x.mean(axis=2, keepdims=True)
    sat = 1 + rng.uniform(-0.3, 0.3) * strength
    x = gray + (x - gray) * sat
    contrast = 1 + rng.uniform(-0.3, 0.3) * strength
    bright = rng.uniform(-30, 30) * strength
    x = (x - 128) * contrast + 128 + bright
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _centroid(mask: np.ndarray) -> tuple[float, float] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.mean()), float(ys.mean())


class TrainData:
    """Real sequences (DAVIS / YouTube-VOS layout) plus seeded synthetic sequences, sampled as clips."""

    def __init__(self, cfg: DataSection, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.real = self._load_real(cfg)
        self._synthetic: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if not self.real and cfg.synthetic_sequences == 0:
            raise FileNotFoundError("no training data: no real sequences found and no synthetic ones asked")
        self.real_frames = [(s, i) for s, seq in enumerate(self.real) for i in range(len(seq.frames))]
        log.info(
            "training data: %d real sequences (%d annotated frames), %d synthetic sequences",
            len(self.real), len(self.real_frames), cfg.synthetic_sequences,
        )

    @staticmethod
    def _load_real(cfg: DataSection) -> list[_RealSequence]:
        from edge_vos.data.davis import davis_sequences, youtube_vos_sequences

        found = []
        if cfg.davis_root:
            found += davis_sequences(cfg.davis_root, cfg.davis_split, cfg.davis_res, cfg.davis_year or None)
        if cfg.youtube_root:
            found += youtube_vos_sequences(cfg.youtube_root, "train")
        out = []
        for seq in found:
            keep = [(f, seq.masks[f.stem]) for f in seq.frames if f.stem in seq.masks]
            if len(keep) >= NUM_FRAMES:
                out.append(_RealSequence(seq.name, tuple(f for f, _ in keep), tuple(m for _, m in keep)))
        return out

    # -- sources -------------------------------------------------------------------------------------

    def _synthetic_sequence(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._synthetic.get(index)
        if cached is None:
            from edge_vos.data.synthetic import generate_sequence

            rng = np.random.default_rng([self.seed, 7919, index])
            cached = generate_sequence(
                seed=int(rng.integers(2**31)),
                num_frames=self.cfg.synthetic_frames,
                size=(240, 432),
                num_objects=int(rng.integers(1, 4)),
                num_distractors=int(rng.integers(0, 3)),
            )
            self._synthetic[index] = cached
        return cached

    def _num_frames(self, source: tuple[str, int]) -> int:
        kind, index = source
        return self.cfg.synthetic_frames if kind == "synthetic" else len(self.real[index].frames)

    def _frame(self, source: tuple[str, int], t: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 [H,W,3] and label map uint8 [H,W] of frame t of a source."""
        kind, index = source
        if kind == "synthetic":
            frames, labels = self._synthetic_sequence(index)
            return frames[t], labels[t]
        from edge_vos.data.davis import read_image, read_mask

        seq = self.real[index]
        labels = read_mask(seq.masks[t])
        if self.cfg.davis_year == "2016" and not self.cfg.youtube_root:
            labels = (labels > 0).astype(np.uint8)  # DAVIS-2016: any non-zero value is the object
        labels[labels == 255] = 0
        return read_image(seq.frames[t]), labels

    def _pick_source(self, rng: np.random.Generator) -> tuple[str, int]:
        use_synthetic = self.cfg.synthetic_sequences > 0 and (
            not self.real or rng.random() < self.cfg.synthetic_fraction
        )
        if use_synthetic:
            return "synthetic", int(rng.integers(self.cfg.synthetic_sequences))
        return "real", int(rng.integers(len(self.real)))

    # -- samples -------------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, stage: str, max_gap: int) -> Clip:
        """One clip of the given stage ("static" or "video")."""
        for _ in range(_RETRIES):
            clip = self._static(rng) if stage == "static" else self._video(rng, max_gap)
            if clip.masks[0, 0].mean() >= _MIN_AREA:
                return clip
        return clip

    def _frame_indices(self, rng: np.random.Generator, n: int, max_gap: int) -> list[int]:
        gap = max(1, min(max_gap, (n - 1) // (NUM_FRAMES - 1)))
        gaps = rng.integers(1, gap + 1, size=NUM_FRAMES - 1)
        start = int(rng.integers(0, n - int(gaps.sum())))
        idx = [start, start + int(gaps[0]), start + int(gaps.sum())]
        return idx[::-1] if rng.random() < 0.5 else idx

    def _placement(
        self, rng: np.random.Generator, shape: tuple[int, int], obj: np.ndarray, zoom: tuple[float, float]
    ) -> tuple[tuple[float, float], float]:
        """Crop centre and scale: mostly around the object, inside the frame where possible."""
        h, w = shape
        size = self.cfg.crop
        scale = size / min(h, w) * rng.uniform(*zoom)
        c = _centroid(obj)
        if c is None or rng.random() < 0.2:
            c = (rng.uniform(0, w), rng.uniform(0, h))
        half = size / 2 / scale
        cx = c[0] + rng.normal(0, 0.2) * 2 * half
        cy = c[1] + rng.normal(0, 0.2) * 2 * half
        cx = float(np.clip(cx, min(half, w / 2), max(w - half, w / 2)))
        cy = float(np.clip(cy, min(half, h / 2), max(h - half, h / 2)))
        return (cx, cy), scale

    def _choose_objects(self, rng: np.random.Generator, labels: np.ndarray) -> tuple[list[int], bool]:
        """Up to two object ids present in `labels`, and whether the sample wants two objects."""
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        ids = [int(i) for i, c in zip(ids, counts, strict=True) if c >= 64]
        rng.shuffle(ids)
        two = bool(rng.random() < self.cfg.two_object_prob)
        return ids[: MAX_OBJECTS if two else 1], two

    def _static(self, rng: np.random.Generator) -> Clip:
        size = self.cfg.crop
        source = self._pick_source(rng)
        img, labels = self._frame(source, int(rng.integers(self._num_frames(source))))
        ids, two = self._choose_objects(rng, labels)
        paste = self._paste_layer(rng, static=True) if two and len(ids) < 2 else None
        center, scale = self._placement(rng, labels.shape, labels == (ids[0] if ids else 1), (0.9, 1.4))
        flip = rng.random() < 0.5
        frames = np.zeros((NUM_FRAMES, size, size, 3), np.uint8)
        masks = np.zeros((NUM_FRAMES, MAX_OBJECTS, size, size), np.float32)
        for t in range(NUM_FRAMES):
            m = _affine(
                center, scale * rng.uniform(0.9, 1.1), rng.uniform(-20, 20), rng.uniform(-10, 10), size,
                (rng.uniform(-0.1, 0.1) * size, rng.uniform(-0.1, 0.1) * size),
            )
            frame = _warp(img, m, size)
            lab = _warp(labels, m, size, nearest=True)
            for k, obj_id in enumerate(ids):
                masks[t, k] = lab == obj_id
            if paste is not None:
                frame = self._composite(rng, frame, masks[t], paste, t, static=True)
            frames[t] = _colour(frame, rng, 1.0)
        if flip:
            frames, masks = frames[:, :, ::-1].copy(), masks[..., ::-1].copy()
        selector = np.array([float(masks[0, k].any()) for k in range(MAX_OBJECTS)], np.float32)
        return Clip(frames, masks, selector)

    def _video(self, rng: np.random.Generator, max_gap: int) -> Clip:
        size = self.cfg.crop
        source = self._pick_source(rng)
        idx = self._frame_indices(rng, self._num_frames(source), max_gap)
        raw = [self._frame(source, t) for t in idx]
        ids, two = self._choose_objects(rng, raw[0][1])
        paste = self._paste_layer(rng, static=False, max_gap=max_gap) if two and len(ids) < 2 else None
        center, scale = self._placement(rng, raw[0][1].shape, raw[0][1] == (ids[0] if ids else 1), (1.0, 1.5))
        angle, shear = rng.uniform(-10, 10), rng.uniform(-5, 5)
        flip = rng.random() < 0.5
        clip_colour = int(rng.integers(2**62))
        frames = np.zeros((NUM_FRAMES, size, size, 3), np.uint8)
        masks = np.zeros((NUM_FRAMES, MAX_OBJECTS, size, size), np.float32)
        for t, (img, labels) in enumerate(raw):
            m = _affine(
                center, scale * rng.uniform(0.97, 1.03), angle + rng.uniform(-3, 3), shear, size,
                (rng.uniform(-0.03, 0.03) * size, rng.uniform(-0.03, 0.03) * size),
            )
            frame = _warp(img, m, size)
            lab = _warp(labels, m, size, nearest=True)
            for k, obj_id in enumerate(ids):
                masks[t, k] = lab == obj_id
            if paste is not None:
                frame = self._composite(rng, frame, masks[t], paste, t, static=False)
            # One colour change for the whole clip (same generator seed every frame) plus a little per frame.
            frames[t] = _colour(_colour(frame, np.random.default_rng(clip_colour), 0.7), rng, 0.2)
        if flip:
            frames, masks = frames[:, :, ::-1].copy(), masks[..., ::-1].copy()
        selector = np.array([float(masks[0, k].any()) for k in range(MAX_OBJECTS)], np.float32)
        return Clip(frames, masks, selector)

    # -- copy-paste second object ----------------------------------------------------------------------

    def _paste_layer(
        self, rng: np.random.Generator, static: bool, max_gap: int = 1
    ) -> dict[str, object] | None:
        """An object cut from another frame (static) or clip (video) to paste as object 2."""
        source = self._pick_source(rng)
        if static:
            t0 = int(rng.integers(self._num_frames(source)))
            raw = [self._frame(source, t0)] * NUM_FRAMES
        else:
            raw = [self._frame(source, t) for t in self._frame_indices(rng, self._num_frames(source), max_gap)]
        ids, counts = np.unique(raw[0][1][raw[0][1] > 0], return_counts=True)
        if len(ids) == 0:
            return None
        obj_id = int(ids[int(rng.integers(len(ids)))])
        obj = raw[0][1] == obj_id
        ys, xs = np.nonzero(obj)
        extent = max(xs.max() - xs.min(), ys.max() - ys.min(), 8)
        size = self.cfg.crop
        scale = size * rng.uniform(0.25, 0.6) / extent
        return {
            "raw": raw, "id": obj_id, "center": _centroid(obj), "scale": scale, "angle": rng.uniform(-15, 15),
            "shift": (rng.uniform(-0.3, 0.3) * size, rng.uniform(-0.3, 0.3) * size),
        }

    def _composite(
        self, rng: np.random.Generator, frame: np.ndarray, masks: np.ndarray, paste: dict[str, object] | None,
        t: int, static: bool,
    ) -> np.ndarray:
        """Draws the pasted object over `frame` (it occludes object 1) and fills masks[1]."""
        if paste is None:
            return frame
        size = self.cfg.crop
        img, labels = paste["raw"][t]  # type: ignore[index]
        jitter = 0.1 if static else 0.03
        shift = paste["shift"]  # type: ignore[assignment]
        m = _affine(
            paste["center"], paste["scale"] * rng.uniform(1 - jitter, 1 + jitter),  # type: ignore[arg-type,operator]
            paste["angle"] + rng.uniform(-100, 100) * jitter, 0.0, size,  # type: ignore[operator]
            (shift[0] + rng.uniform(-1, 1) * jitter * size, shift[1] + rng.uniform(-1, 1) * jitter * size),
        )
        alpha = _warp((labels == paste["id"]).astype(np.float32), m, size)
        alpha = cv2.GaussianBlur(alpha, (3, 3), 0)
        fg = _warp(img, m, size).astype(np.float32)
        out = frame.astype(np.float32) * (1 - alpha[..., None]) + fg * alpha[..., None]
        inside = alpha > 0.5
        masks[0][inside] = 0
        masks[1] = inside
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def collate(clips: list[Clip]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stacks clips: frames [B,3,S,S,3] uint8, masks [B,3,2,S,S], selector [B,2]."""
    return (
        np.stack([c.frames for c in clips]),
        np.stack([c.masks for c in clips]),
        np.stack([c.selector for c in clips]),
    )

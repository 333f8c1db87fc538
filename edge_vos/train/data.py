"""Training samples: T-frame clips with up to `max_objects` objects, from static images or from videos.

Every sample is a pure function of a numpy Generator, and the trainer seeds one Generator per step from
(seed, step): the data order and all augmentation are therefore resumable from the step number alone,
with no sampler state to save. Sources are read on demand (real frames) or generated once from the seed
and cached (synthetic sequences), neither of which changes what a given step sees.

Static stage (STCN's pre-training on images): one frame becomes a pseudo-video by independent random
affine warps. Video stage: T frames in temporal order (or reversed) with gaps of at most `max_gap`, one
crop that may zoom and drift over the clip (objects change scale and leave the frame), small per-frame
jitter. Both stages then draw copy-paste layers (edge_vos.train.composite): further tracked objects cut
from other clips (DAVIS-2016 has one object per sequence), optionally a look-alike copy of the target,
and an unlabelled occluder that passes in front of the target. Masks keep only what stays visible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_vos.config import ConfigError
from edge_vos.train.composite import (
    Layer,
    camera_motion,
    centroid,
    crossing_path,
    draw_layer,
    extent,
    static_camera,
    video_camera,
    warp,
)
from edge_vos.train.config import DataSection

log = logging.getLogger(__name__)

# A first-frame object smaller than this share of the crop makes the sampler try another crop.
_MIN_AREA = 0.004
_RETRIES = 8
_MIN_OBJECT_PIXELS = 64

Source = tuple[str, int]  # ("real" | "synthetic", index)
Raw = tuple[tuple[np.ndarray, np.ndarray], ...]  # (RGB uint8 [H,W,3], labels uint8 [H,W]) per clip frame


@dataclass
class Clip:
    """One sample: frames uint8 [T,S,S,3], masks float32 [T,O,S,S] (0/1, visible pixels), selector [O]."""

    frames: np.ndarray
    masks: np.ndarray
    selector: np.ndarray


@dataclass(frozen=True)
class _RealSequence:
    name: str
    frames: tuple[Path, ...]
    masks: tuple[Path, ...]  # one per frame in `frames` (only annotated frames are kept)


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


def held_out_names(root: str | Path) -> set[str]:
    """Sequence names of every evaluation split list (ROOT/ImageSets/*/val*.txt): never training data."""
    from edge_vos.data.davis import read_split

    return {n for p in (Path(root) / "ImageSets").glob("*/val*.txt") for n in read_split(p)}


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
            len(self.real),
            len(self.real_frames),
            cfg.synthetic_sequences,
        )

    @property
    def sequence_names(self) -> list[str]:
        return [s.name for s in self.real]

    @staticmethod
    def _load_real(cfg: DataSection) -> list[_RealSequence]:
        from edge_vos.data.davis import davis_sequences, youtube_vos_sequences

        found = []
        if cfg.davis_root:
            found += davis_sequences(cfg.davis_root, cfg.davis_split, cfg.davis_res, cfg.davis_year or None)
            leaked = sorted({s.name for s in found} & held_out_names(cfg.davis_root))
            if leaked:
                raise ConfigError("data.davis_split", f"{cfg.davis_split!r} lists evaluation sequences: {leaked}")
        if cfg.youtube_root:
            found += youtube_vos_sequences(cfg.youtube_root, "train")
        out = []
        for seq in found:
            keep = [(f, seq.masks[f.stem]) for f in seq.frames if f.stem in seq.masks]
            if len(keep) >= cfg.clip_frames:
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

    def _num_frames(self, source: Source) -> int:
        kind, index = source
        return self.cfg.synthetic_frames if kind == "synthetic" else len(self.real[index].frames)

    def _frame(self, source: Source, t: int) -> tuple[np.ndarray, np.ndarray]:
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

    def _pick_source(self, rng: np.random.Generator) -> Source:
        use_synthetic = self.cfg.synthetic_sequences > 0 and (
            not self.real or rng.random() < self.cfg.synthetic_fraction
        )
        if use_synthetic:
            return "synthetic", int(rng.integers(self.cfg.synthetic_sequences))
        return "real", int(rng.integers(len(self.real)))

    def _raw(self, rng: np.random.Generator, source: Source, static: bool, max_gap: int) -> Raw:
        """The clip's source frames: one frame repeated (static) or T frames of the sequence (video)."""
        if static:
            return (self._frame(source, int(rng.integers(self._num_frames(source)))),) * self.cfg.clip_frames
        return tuple(self._frame(source, t) for t in self._frame_indices(rng, self._num_frames(source), max_gap))

    def _frame_indices(self, rng: np.random.Generator, n: int, max_gap: int) -> list[int]:
        steps = self.cfg.clip_frames - 1
        gap = max(1, min(max_gap, (n - 1) // steps))
        gaps = rng.integers(1, gap + 1, size=steps)
        start = int(rng.integers(0, n - int(gaps.sum())))
        idx = [start, *(start + np.cumsum(gaps)).tolist()]
        return idx[::-1] if rng.random() < 0.5 else idx

    # -- samples -------------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, stage: str, max_gap: int) -> Clip:
        """One clip of the given stage ("static" or "video")."""
        for _ in range(_RETRIES):
            clip = self._clip(rng, stage == "static", max_gap)
            if clip.masks[0, 0].mean() >= _MIN_AREA:
                return clip
        return clip

    def _placement(
        self, rng: np.random.Generator, shape: tuple[int, int], obj: np.ndarray, zoom: tuple[float, float]
    ) -> tuple[tuple[float, float], float]:
        """Crop centre and scale: mostly around the object, inside the frame where possible."""
        h, w = shape
        size = self.cfg.crop
        scale = size / min(h, w) * rng.uniform(*zoom)
        c = centroid(obj)
        if c is None or rng.random() < 0.2:
            c = (rng.uniform(0, w), rng.uniform(0, h))
        half = size / 2 / scale
        cx = c[0] + rng.normal(0, 0.2) * 2 * half
        cy = c[1] + rng.normal(0, 0.2) * 2 * half
        cx = float(np.clip(cx, min(half, w / 2), max(w - half, w / 2)))
        cy = float(np.clip(cy, min(half, h / 2), max(h - half, h / 2)))
        return (cx, cy), scale

    def _object_ids(self, rng: np.random.Generator, labels: np.ndarray) -> list[int]:
        """Ids of the objects of `labels` with at least a few pixels, in random order."""
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        out = [int(i) for i, c in zip(ids, counts, strict=True) if c >= _MIN_OBJECT_PIXELS]
        rng.shuffle(out)
        return out

    def _wanted_objects(self, rng: np.random.Generator) -> int:
        cfg = self.cfg
        if cfg.max_objects == 1 or rng.random() >= cfg.multi_object_prob:
            return 1
        return int(rng.integers(2, cfg.max_objects + 1))

    def _clip(self, rng: np.random.Generator, static: bool, max_gap: int) -> Clip:
        cfg, size = self.cfg, self.cfg.crop
        T, O = cfg.clip_frames, cfg.max_objects
        raw = self._raw(rng, self._pick_source(rng), static, max_gap)
        wanted = self._wanted_objects(rng)
        ids = self._object_ids(rng, raw[0][1])[:wanted]
        target = raw[0][1] == (ids[0] if ids else 1)
        center, scale = self._placement(rng, raw[0][1].shape, target, (0.9, 1.4) if static else (1.0, 1.5))
        if static:
            cameras = static_camera(rng, center, scale, T, size)
        else:
            motion = camera_motion(rng, size, cfg.zoom_prob, cfg.zoom_max, cfg.drift_prob, cfg.drift_max)
            cameras = video_camera(rng, center, scale, T, size, motion)
        frames = np.zeros((T, size, size, 3), np.float32)
        masks = np.zeros((T, O, size, size), np.float32)
        for t, ((img, labels), m) in enumerate(zip(raw, cameras, strict=True)):
            frames[t] = warp(img, m, size)
            lab = warp(labels, m, size, nearest=True)
            for k, obj_id in enumerate(ids):
                masks[t, k] = lab == obj_id

        layers: list[Layer] = []
        for slot in range(len(ids), wanted):
            layer = self._pasted_object(rng, static, max_gap, slot)
            if layer is not None:
                layers.append(layer)
        if ids and rng.random() < cfg.duplicate_prob:
            layers.append(self._duplicate(rng, raw, ids[0], scale, static))
        if rng.random() < cfg.occluder_prob:
            occluder = self._occluder(rng, static, max_gap, masks[0, 0], masks[-1, 0])
            if occluder is not None:
                layers.append(occluder)
        for layer in layers:
            for t in range(T):
                draw_layer(rng, layer, frames, masks, t)

        out = np.clip(frames + 0.5, 0, 255).astype(np.uint8)
        if static:
            out = np.stack([_colour(f, rng, 1.0) for f in out])
        else:
            # One colour change for the whole clip (same generator seed every frame) plus a little per frame.
            clip_colour = int(rng.integers(2**62))
            out = np.stack([_colour(_colour(f, np.random.default_rng(clip_colour), 0.7), rng, 0.2) for f in out])
        if rng.random() < 0.5:
            out, masks = out[:, :, ::-1].copy(), masks[..., ::-1].copy()
        selector = np.array([float(masks[0, k].any()) for k in range(O)], np.float32)
        return Clip(out, masks, selector)

    # -- copy-paste layers -----------------------------------------------------------------------------

    def _cut(
        self, rng: np.random.Generator, static: bool, max_gap: int
    ) -> tuple[Raw, int, tuple[float, float], float] | None:
        """An object of another clip: its frames, id, first-frame centroid and extent (None: no object)."""
        raw = self._raw(rng, self._pick_source(rng), static, max_gap)
        ids = self._object_ids(rng, raw[0][1])
        if not ids:
            return None
        obj = raw[0][1] == ids[0]
        return raw, ids[0], centroid(obj), extent(obj)  # type: ignore[return-value]

    def _pasted_object(self, rng: np.random.Generator, static: bool, max_gap: int, slot: int) -> Layer | None:
        """A further tracked object from another clip, with its own (static: jittered, video: linear) motion."""
        cut = self._cut(rng, static, max_gap)
        if cut is None:
            return None
        raw, obj_id, center, ext = cut
        size = self.cfg.crop
        start = (rng.uniform(-0.3, 0.3) * size, rng.uniform(-0.3, 0.3) * size)
        move = (0.0, 0.0) if static else (rng.uniform(-0.2, 0.2) * size, rng.uniform(-0.2, 0.2) * size)
        return Layer(
            raw,
            obj_id,
            center,
            size * rng.uniform(0.25, 0.6) / ext,
            rng.uniform(-15, 15),
            start,
            (start[0] + move[0], start[1] + move[1]),
            0.1 if static else 0.03,
            slot,
        )

    def _duplicate(self, rng: np.random.Generator, raw: Raw, obj_id: int, scale: float, static: bool) -> Layer:
        """An unlabelled copy of the target itself at another place: a look-alike the tracker must ignore."""
        size = self.cfg.crop
        center = centroid(raw[0][1] == obj_id)
        start = (rng.choice([-1, 1]) * rng.uniform(0.25, 0.45) * size, rng.uniform(-0.35, 0.35) * size)
        move = (0.0, 0.0) if static else (rng.uniform(-0.15, 0.15) * size, rng.uniform(-0.15, 0.15) * size)
        return Layer(
            raw,
            obj_id,
            center,
            scale * rng.uniform(0.7, 1.1),
            rng.uniform(-15, 15),  # type: ignore[arg-type]
            start,
            (start[0] + move[0], start[1] + move[1]),
            0.1 if static else 0.03,
            None,
        )

    def _occluder(
        self, rng: np.random.Generator, static: bool, max_gap: int, first: np.ndarray, last: np.ndarray
    ) -> Layer | None:
        """An unlabelled object that crosses in front of the target during the clip."""
        cut = self._cut(rng, static, max_gap)
        if cut is None:
            return None
        raw, obj_id, center, ext = cut
        size = self.cfg.crop
        own = size * rng.uniform(0.3, 0.6)
        path = crossing_path(rng, first, last, own, size)
        if path is None:
            return None
        return Layer(raw, obj_id, center, own / ext, rng.uniform(-15, 15), path[0], path[1], 0.02, None)


def collate(clips: list[Clip]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stacks clips: frames [B,T,S,S,3] uint8, masks [B,T,O,S,S], selector [B,O]."""
    return (
        np.stack([c.frames for c in clips]),
        np.stack([c.masks for c in clips]),
        np.stack([c.selector for c in clips]),
    )

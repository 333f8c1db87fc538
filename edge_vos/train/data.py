"""Training samples: T-frame clips with up to `max_objects` objects, from static images or from videos.

Every sample is a pure function of a numpy Generator, and the trainer seeds one Generator per step from
(seed, step): the data order and all augmentation are therefore resumable from the step number alone,
with no sampler state to save. Where frames come from (real, synthetic, photographs): sources.py.

Static stage (STCN's pre-training on images): one frame (a DAVIS frame, a synthetic one or, with
`static_photo_fraction`, a COCO photograph whose other instances are real distractors and may be tracked
together) becomes a pseudo-video by independent random affine warps. Video stage: T frames in temporal
order (or reversed) with gaps of at most `max_gap`, one crop that may zoom and drift over the clip
(objects change scale and leave the frame), small per-frame jitter; `video_photo_fraction` of its clips are
photo pseudo-videos instead. Both stages then draw copy-paste
layers (edge_vos.train.composite): further tracked objects cut from other clips (DAVIS-2016 has one
object per sequence), optionally a look-alike copy of the target, an unlabelled occluder that passes in
front of the target and an unlabelled distractor standing in the crop; with `photo_paste_prob` these are
cut from COCO photographs. Masks keep only what stays visible.
With `work_size` the frames are scaled to about the tracker's working size before cropping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
from edge_vos.train.sources import Raw, Sources

# A first-frame object smaller than this share of the crop makes the sampler try another crop.
_MIN_AREA = 0.004
_RETRIES = 8
_MIN_OBJECT_PIXELS = 64
# A photograph's target spans at least / at most this share of the crop (COCO objects vary widely in size).
_PHOTO_EXTENT = (0.2, 0.9)


@dataclass
class Clip:
    """One sample: frames uint8 [T,S,S,3], masks float32 [T,O,S,S] (0/1, visible pixels), selector [O]."""

    frames: np.ndarray
    masks: np.ndarray
    selector: np.ndarray


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


class TrainData:
    """Real sequences (DAVIS / YouTube-VOS layout) plus seeded synthetic sequences, sampled as clips."""

    def __init__(self, cfg: DataSection, seed: int) -> None:
        self.cfg = cfg
        self.sources = Sources(cfg, seed)

    @property
    def sequence_names(self) -> list[str]:
        return [s.name for s in self.sources.real]

    @property
    def photo_names(self) -> list[str]:
        return [p.name for p in self.sources.photos]

    # -- samples -------------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, stage: str, max_gap: int) -> Clip:
        """One clip of the given stage ("static" or "video")."""
        for _ in range(_RETRIES):
            clip = self._clip(rng, stage == "static", max_gap)
            if clip.masks[0, 0].mean() >= _MIN_AREA:
                return clip
        return clip

    def _placement(
        self, rng: np.random.Generator, shape: tuple[int, int], obj: np.ndarray, static: bool, photo: bool
    ) -> tuple[tuple[float, float], float]:
        """Crop centre and scale: mostly around the object, inside the frame where possible.

        With `work_size` the frame's short side becomes about the tracker's working size (times a factor in
        `scale_range`), so objects have the size the tracker sees; a photograph's target is further kept
        between a fifth and nine tenths of the crop. Without it the crop spans the short side, zoomed.
        """
        h, w = shape
        cfg, size = self.cfg, self.cfg.crop
        if cfg.work_size:
            scale = cfg.work_size / min(h, w) * rng.uniform(*cfg.scale_range)
        else:
            scale = size / min(h, w) * rng.uniform(*((0.9, 1.4) if static else (1.0, 1.5)))
        ext = extent(obj)
        if photo and ext > 0:
            scale = float(np.clip(scale, _PHOTO_EXTENT[0] * size / ext, _PHOTO_EXTENT[1] * size / ext))
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
        source = self.sources.pick(rng, cfg.static_photo_fraction if static else cfg.video_photo_fraction)
        raw = self.sources.raw(rng, source, static, max_gap)
        static = static or source[0] == "photo"
        wanted = self._wanted_objects(rng)
        ids = self._object_ids(rng, raw[0][1])[:wanted]
        target = raw[0][1] == (ids[0] if ids else 1)
        center, scale = self._placement(rng, raw[0][1].shape, target, static, source[0] == "photo")
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
        if cfg.distractor_prob > 0 and rng.random() < cfg.distractor_prob:
            distractor = self._distractor(rng, static, max_gap)
            if distractor is not None:
                layers.append(distractor)
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
        raw = self.sources.raw(rng, self.sources.pick(rng, self.cfg.photo_paste_prob), static, max_gap)
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


    def _distractor(self, rng: np.random.Generator, static: bool, max_gap: int) -> Layer | None:
        """An unlabelled object standing somewhere in the crop (drifting slowly): something not to track."""
        cut = self._cut(rng, static, max_gap)
        if cut is None:
            return None
        raw, obj_id, center, ext = cut
        size = self.cfg.crop
        start = (rng.uniform(-0.4, 0.4) * size, rng.uniform(-0.4, 0.4) * size)
        move = (0.0, 0.0) if static else (rng.uniform(-0.1, 0.1) * size, rng.uniform(-0.1, 0.1) * size)
        end = (start[0] + move[0], start[1] + move[1])
        own = size * rng.uniform(0.15, 0.45)
        return Layer(raw, obj_id, center, own / ext, rng.uniform(-15, 15), start, end, 0.03, None)


def collate(clips: list[Clip]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stacks clips: frames [B,T,S,S,3] uint8, masks [B,T,O,S,S], selector [B,O]."""
    return (
        np.stack([c.frames for c in clips]),
        np.stack([c.masks for c in clips]),
        np.stack([c.selector for c in clips]),
    )

"""Synthetic multi-object videos with a true label map on every frame.

Textured blob-shaped objects move, scale and rotate over a panning textured background and occlude one
another; distractors are near-copies of a target (same shape and texture, slightly different colour)
that are labelled background, so a tracker has to tell them apart by memory rather than appearance.
Everything is drawn with numpy/cv2 from a seed (same seed -> same video, bit for bit).

Uses: unit tests, multi-object evaluation (no real multi-object data here) and training:
    frames, labels = generate_sequence(seed=3, num_frames=40, size=(240, 432), num_objects=3)
    write_synthetic_davis("/tmp/synth", num_sequences=8)   # DAVIS-layout folder for `edge-vos eval`
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_vos.config import ConfigError, positive
from edge_vos.data.davis import write_davis_sequence, write_split
from edge_vos.labels import MAX_OBJECT_ID

log = logging.getLogger(__name__)


@dataclass
class SyntheticConfig:
    """How a synthetic sequence looks and moves; sizes are fractions of the frame's short side."""

    num_frames: int = 40
    height: int = 240
    width: int = 432
    num_objects: int = 3
    num_distractors: int = 2
    min_object_size: float = 0.22
    max_object_size: float = 0.42
    # Largest speed, in short sides per frame.
    max_speed: float = 0.025
    # Largest relative scale change over a sine period, and rotation in degrees per frame.
    max_scale_change: float = 0.35
    max_rotation: float = 3.0
    # Background pan, in pixels per frame.
    max_pan: float = 2.0
    # Colour difference of a distractor from the target it copies (0..255 per channel).
    distractor_tint: float = 25.0

    def __post_init__(self) -> None:
        positive("num_frames", self.num_frames)
        positive("height", self.height)
        positive("width", self.width)
        positive("num_objects", self.num_objects)
        positive("num_distractors", self.num_distractors, allow_zero=True)
        if self.num_objects > MAX_OBJECT_ID:
            raise ConfigError("num_objects", f"must be <= {MAX_OBJECT_ID} (object ids of a uint8 label map), "
                                             f"got {self.num_objects}")
        if min(self.height, self.width) < 32:
            raise ConfigError("height", "frames must be at least 32x32")
        if not 0 < self.min_object_size <= self.max_object_size <= 1:
            raise ConfigError("min_object_size", "need 0 < min_object_size <= max_object_size <= 1")


@dataclass
class _Layer:
    texture: np.ndarray  # float32 [S,S,3]
    alpha: np.ndarray  # float32 [S,S] in 0..1 (anti-aliased shape)
    label: int  # 0 for distractors
    center: np.ndarray  # [2] x, y at frame 0
    velocity: np.ndarray  # [2] pixels per frame
    wobble: np.ndarray  # [2] amplitude of a sinusoidal path, pixels
    wobble_freq: float
    scale0: float  # rendered size / texture size at frame 0
    scale_amp: float
    scale_freq: float
    phase: float
    angle0: float
    spin: float


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int) -> np.ndarray:
    """Band-limited noise in [0,1]: random values on a coarse grid, bicubically upsampled."""
    gh = max(2, int(round(cells * h / max(h, w))))
    gw = max(2, int(round(cells * w / max(h, w))))
    coarse = rng.random((gh, gw, channels), dtype=np.float32)
    out = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out.reshape(h, w, channels), 0.0, 1.0)


def _texture(rng: np.random.Generator, h: int, w: int, scale_cells: tuple[int, int]) -> np.ndarray:
    """Texture [h,w,3] float32 0..255: two noise octaves plus oriented stripes around a base colour."""
    base = rng.uniform(30, 225, size=3).astype(np.float32)
    noise = 0.6 * _smooth_noise(rng, h, w, scale_cells[0], 3) + 0.4 * _smooth_noise(
        rng, h, w, scale_cells[1], 3
    )
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(6, 24)
    stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / period))[..., None]
    stripe_colour = rng.uniform(-60, 60, size=3).astype(np.float32)
    tex = base + 110 * (noise - 0.5) + rng.uniform(0.2, 0.8) * stripes * stripe_colour
    return np.clip(tex, 0, 255).astype(np.float32)


def _blob(rng: np.random.Generator, size: int) -> np.ndarray:
    """Anti-aliased star-shaped blob [size,size] in 0..1: a smooth random radius around the centre."""
    n = 64
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radius = np.ones(n)
    for k in range(1, 6):  # low harmonics keep the outline smooth
        radius += rng.uniform(0, 0.35 / k) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    radius *= 0.45 * size / radius.max()
    c = (size - 1) / 2
    pts = np.stack([c + radius * np.cos(angles), c + radius * np.sin(angles)], axis=1)
    supersample = 4
    canvas = np.zeros((size * supersample, size * supersample), np.uint8)
    cv2.fillPoly(canvas, [np.round(pts * supersample).astype(np.int32)], 255)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _make_layers(rng: np.random.Generator, cfg: SyntheticConfig) -> list[_Layer]:
    h, w = cfg.height, cfg.width
    short = min(h, w)
    n_total = cfg.num_objects + cfg.num_distractors
    # Start positions on a shuffled jittered grid so targets are separate (and visible) at frame 0.
    cols = int(np.ceil(np.sqrt(n_total * w / h)))
    rows = int(np.ceil(n_total / cols))
    cells = rng.permutation(rows * cols)[:n_total]
    layers: list[_Layer] = []
    targets: list[_Layer] = []
    for i in range(n_total):
        is_target = i < cfg.num_objects
        cell_h, cell_w = h / rows, w / cols
        r, c = divmod(int(cells[i]), cols)
        center = np.array([(c + rng.uniform(0.35, 0.65)) * cell_w, (r + rng.uniform(0.35, 0.65)) * cell_h])
        size_px = rng.uniform(cfg.min_object_size, cfg.max_object_size) * short
        # Targets start no larger than their cell so they do not hide one another at frame 0.
        size_px = min(size_px, 1.1 * min(cell_h, cell_w)) if is_target else size_px
        if is_target or not targets:
            tex_size = int(np.clip(round(cfg.max_object_size * short * 1.4), 16, 512))
            texture = _texture(rng, tex_size, tex_size, (4, 12))
            alpha = _blob(rng, tex_size)
        else:  # a distractor: a retinted (and maybe mirrored) copy of one target
            src = targets[int(rng.integers(len(targets)))]
            tint = rng.uniform(-cfg.distractor_tint, cfg.distractor_tint, size=3).astype(np.float32)
            texture = np.clip(src.texture + tint, 0, 255)
            alpha = src.alpha
            if rng.random() < 0.5:
                texture, alpha = texture[:, ::-1].copy(), alpha[:, ::-1].copy()
            size_px = src.scale0 * alpha.shape[0] * rng.uniform(0.85, 1.15)
        speed = rng.uniform(0.3, 1.0) * cfg.max_speed * short
        heading = rng.uniform(0, 2 * np.pi)
        layer = _Layer(
            texture=texture,
            alpha=alpha,
            label=i + 1 if is_target else 0,
            center=center,
            velocity=speed * np.array([np.cos(heading), np.sin(heading)]),
            wobble=rng.uniform(0, 0.08, size=2) * short,
            wobble_freq=rng.uniform(0.05, 0.2),
            scale0=size_px / alpha.shape[0],
            scale_amp=rng.uniform(0, cfg.max_scale_change),
            scale_freq=rng.uniform(0.02, 0.1),
            phase=rng.uniform(0, 2 * np.pi),
            angle0=rng.uniform(-30, 30),
            spin=rng.uniform(-cfg.max_rotation, cfg.max_rotation),
        )
        layers.append(layer)
        if is_target:
            targets.append(layer)
    return layers


def _bounce(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflects positions into [lo, hi] so objects bounce off the frame borders."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _trajectories(layer: _Layer, t: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres [T,2], scales [T], angles [T] of one layer over frame indices t."""
    # Straight line plus a sinusoidal wobble, offset so that frame 0 sits at `center`.
    wobble = np.sin(layer.wobble_freq * t[:, None] + layer.phase) - np.sin(layer.phase)
    path = layer.center + t[:, None] * layer.velocity + layer.wobble * wobble
    margin = 0.1 * min(h, w)
    centers = np.stack(
        [_bounce(path[:, 0], margin, w - margin), _bounce(path[:, 1], margin, h - margin)], axis=1
    )
    breathing = np.sin(layer.scale_freq * t + layer.phase) - np.sin(layer.phase)
    scales = layer.scale0 * (1 + layer.scale_amp * breathing)
    scales = np.maximum(scales, 0.2 * layer.scale0)
    angles = layer.angle0 + layer.spin * t
    return centers, scales, angles


def generate_sequence(
    seed: int,
    num_frames: int = 40,
    size: tuple[int, int] = (240, 432),
    num_objects: int = 3,
    num_distractors: int = 2,
    config: SyntheticConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic video: frames uint8 [T,H,W,3] (RGB) and label maps uint8 [T,H,W] (0 = background).

    Targets are labelled 1..num_objects and all are visible in frame 0; distractors are labelled 0.
    `config` overrides the other arguments' defaults for the finer knobs (its own frame count, size and
    object counts are replaced by the explicit arguments).
    """
    base = config or SyntheticConfig()
    cfg = SyntheticConfig(
        **{
            **base.__dict__,
            "num_frames": num_frames,
            "height": size[0],
            "width": size[1],
            "num_objects": num_objects,
            "num_distractors": num_distractors,
        }
    )
    rng = np.random.default_rng(seed)
    h, w, T = cfg.height, cfg.width, cfg.num_frames
    pan = rng.uniform(-cfg.max_pan, cfg.max_pan, size=2)
    pad = int(np.ceil(np.abs(pan).max() * T)) + 1
    background = _texture(rng, h + 2 * pad, w + 2 * pad, (6, 24))
    layers = _make_layers(rng, cfg)
    # Random depth order: later layers are drawn on top.
    order = rng.permutation(len(layers))
    t = np.arange(T, dtype=np.float64)
    motion = [_trajectories(layer, t, h, w) for layer in layers]

    frames = np.empty((T, h, w, 3), np.uint8)
    labels = np.zeros((T, h, w), np.uint8)
    for ti in range(T):
        ox, oy = pad + pan * ti
        x0, y0 = int(round(ox)), int(round(oy))
        canvas = background[y0 : y0 + h, x0 : x0 + w].copy()
        lab = labels[ti]
        for li in order:
            layer = layers[li]
            centers, scales, angles = motion[li]
            s = layer.alpha.shape[0]
            M = cv2.getRotationMatrix2D(((s - 1) / 2, (s - 1) / 2), float(angles[ti]), float(scales[ti]))
            M[:, 2] += centers[ti] - (s - 1) / 2
            alpha = cv2.warpAffine(layer.alpha, M, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
            box = cv2.boundingRect((alpha > 0.01).astype(np.uint8))
            if box[2] == 0:
                continue
            bx, by, bw, bh = box
            M[:, 2] -= (bx, by)  # warp the texture only inside the object's box
            tex = cv2.warpAffine(
                layer.texture, M, (bw, bh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
            a = alpha[by : by + bh, bx : bx + bw, None]
            region = canvas[by : by + bh, bx : bx + bw]
            region *= 1 - a
            region += a * tex
            inside = alpha[by : by + bh, bx : bx + bw] > 0.5
            lab[by : by + bh, bx : bx + bw][inside] = layer.label
        frames[ti] = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return frames, labels


def write_synthetic_davis(
    root: str | Path,
    num_sequences: int,
    seed: int = 0,
    num_frames: int = 40,
    size: tuple[int, int] = (240, 432),
    num_objects: int = 3,
    num_distractors: int = 2,
    split: str = "val",
    res: str | None = None,
    year: str = "2017",
) -> list[str]:
    """Writes a DAVIS-layout folder (JPEGImages, Annotations, ImageSets/<year>/<split>.txt) of
    `num_sequences` videos named synth-000.., sequence i drawn from seed `seed + i`; res defaults to
    "<height>p". Returns the sequence names."""
    res = res or f"{size[0]}p"
    names = []
    for i in range(num_sequences):
        name = f"synth-{i:03d}"
        frames, labels = generate_sequence(seed + i, num_frames, size, num_objects, num_distractors)
        write_davis_sequence(root, name, frames, labels, res=res)
        names.append(name)
    write_split(root, split, names, year=year)
    log.info("wrote %d synthetic sequences to %s (split %s, %s)", num_sequences, root, split, res)
    return names

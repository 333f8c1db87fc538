"""Training samples for the prompt network: a crop, its prompt maps and the true mask on that crop.

Sources: frames of a DAVIS split (DAVIS-2016 `train`; never val-dev), seeded synthetic scenes
(edge_vos.data.synthetic: several textured objects and look-alike distractors) and copy-paste composites
(an object cut from a frame of another sequence pasted onto a frame at a random place and scale; the
target is then either the pasted object or the original one, now partly hidden behind it), and other
annotated stills (`extra_roots`, Cutie's example frames), and COCO stills (`coco`: coco-mval-train's
training part and coco128's instances, `coco_share` of the draws; train/prompt/coco.py). With
`geometric`, samples may be rotated, pasted objects are mirrored, rotated and re-coloured on their own,
and some composites paste neighbours over the target's sides first (a crowd); without it the samples are
drawn exactly as before it existed.

Each sample imitates one way a prompt reaches the network at inference (crops.py):
- `box`: a box from the truth, tight or with each side moved by up to `box_jitter` of its size;
- `box+clicks`: the same, the clicks then come from the trainer's iterative loop (corrections);
- `clicks`: clicks on the whole frame (first pass without a box); with `first_looks`, also on the windows
  the segmenter's first looks use (a square around the click, the frame with a margin);
- `zoom`: a coarse mask (the truth degraded: blocky, dilated/eroded, simplified to a polygon, with a
  blob added or cut) plus clicks, on the window around it (second pass; a mask to refine).
The first click is deep inside the object (the distance transform's maximum, or a random pixel at least
40 % as deep); sometimes one or two more positives at random depth, sometimes negatives just outside
it. Every draw comes from the Generator the trainer seeds from (seed, step), so a resumed run sees the
same samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_vos.prompt.crops import (
    CONTEXT,
    Window,
    box_map,
    box_window,
    click_maps,
    click_window,
    crop_image,
    frame_window,
    mask_box,
)
from edge_vos.train.prompt.coco import CocoTargets
from edge_vos.train.prompt.prompts import (
    deep_pixel,
    degrade,
    farthest_inside,
    first_clicks,
    jitter_box,
    jitter_window,
)

log = logging.getLogger(__name__)

KINDS = ("box", "box+clicks", "clicks", "zoom")
KIND_WEIGHTS = (0.4, 0.15, 0.2, 0.25)
_MIN_AREA = 100  # pixels of the frame: smaller targets are skipped


@dataclass
class Sample:
    kind: str
    rgb: np.ndarray  # uint8 [S,S,3]
    maps: np.ndarray  # float32 [4,S,S]: box, positive, negative, mask
    truth: np.ndarray  # float32 [S,S] 0/1
    points: list[tuple[float, float]]  # crop pixels
    labels: list[int]

    @property
    def takes_clicks(self) -> bool:
        return self.kind != "box"


class PromptData:
    def __init__(self, davis_root: str | Path | None, split: str = "train", res: str = "240p",
                 synthetic_sequences: int = 8, synthetic_frames: int = 12, size: int = 256,
                 click_radius: float = 5.0, seed: int = 0, paste_prob: float = 0.4,
                 extra_roots: tuple[str | Path, ...] = (), geometric: bool = False,
                 coco: CocoTargets | None = None, coco_share: float = 0.0, first_looks: bool = False,
                 coco_kinds: tuple[str, ...] = KINDS) -> None:
        self.size = size
        # The prompt kinds a COCO draw may be given (others are redrawn among these): COCO annotates a rider
        # and a horse apart where DAVIS has one object, which a box settles and a click does not.
        unknown = sorted(set(coco_kinds) - set(KINDS))
        if unknown or not coco_kinds:
            raise ValueError(f"coco_kinds: {unknown or 'none given'}; expected some of {KINDS}")
        self.coco_kinds = tuple(coco_kinds)
        # Click samples also in the first looks' windows (prompt/segmenter.py), so that the network learns the
        # views it is first shown at inference; False draws exactly the samples drawn before it existed.
        self.first_looks = first_looks
        self.coco = coco
        self.coco_share = coco_share if coco is not None else 0.0
        self.paste_prob = paste_prob
        self.geometric = geometric
        self.click_radius = click_radius
        self.real: list[tuple[int, np.ndarray, np.ndarray]] = []  # (sequence index, image, bool mask)
        if davis_root:
            from edge_vos.data.davis import davis_sequences

            if split == "val-dev":
                raise ValueError("val-dev is for measurement only, never for training")
            for s, seq in enumerate(davis_sequences(davis_root, split, res)):
                for t in range(len(seq)):
                    labels = seq.mask(t)
                    if labels is not None and (labels > 0).sum() >= _MIN_AREA:
                        self.real.append((s, seq.image(t), labels > 0))
        self.synthetic: list[tuple[np.ndarray, np.ndarray]] = []  # (image, label map)
        if synthetic_sequences:
            from edge_vos.data.synthetic import generate_sequence

            for i in range(synthetic_sequences):
                frames, labels = generate_sequence(10_000 + seed * 1000 + i, num_frames=synthetic_frames)
                self.synthetic += [(f, lab) for f, lab in zip(frames, labels, strict=True)]
        self.extra: list[tuple[np.ndarray, np.ndarray]] = []  # (image, label map): other annotated stills
        for root in extra_roots:
            self.extra += _annotated_stills(root)
        if not self.real and not self.synthetic and self.coco is None:
            raise FileNotFoundError("no training data: no DAVIS frames, COCO stills or synthetic scenes")
        log.info("prompt training data: %d real frames, %d synthetic frames, %d other stills, COCO %.0f %% of "
                 "draws", len(self.real), len(self.synthetic), len(self.extra), 100 * self.coco_share)

    # -- sources -------------------------------------------------------------------------------------

    def _source(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A frame and the target's bool mask (before cropping)."""
        image, mask, _ = self._draw(rng)
        return image, mask

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
        """A frame, the target's bool mask (before cropping), and whether it is a COCO photograph."""
        if self.coco is not None and (rng.random() < self.coco_share or not (self.real or self.synthetic)):
            image, mask = self.coco.draw(rng)
            if mask.sum() >= _MIN_AREA:
                return image, mask, True
        image, mask = self._video_or_still(rng)
        return image, mask, False

    def _video_or_still(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if not self.real or (self.synthetic and rng.random() < 0.15):
            image, labels = self.synthetic[int(rng.integers(len(self.synthetic)))]
            ids = [int(v) for v in np.unique(labels) if v and (labels == v).sum() >= _MIN_AREA]
            if ids:
                return image, labels == ids[int(rng.integers(len(ids)))]
        if self.extra and rng.random() < 0.05:
            image, labels = self.extra[int(rng.integers(len(self.extra)))]
            ids = [int(v) for v in np.unique(labels) if v and (labels == v).sum() >= _MIN_AREA]
            if ids:
                return image, labels == ids[int(rng.integers(len(ids)))]
        seq, image, mask = self.real[int(rng.integers(len(self.real)))]
        if rng.random() < self.paste_prob and len(self.real) > 1:
            return self._paste(rng, seq, image, mask)
        return image, mask

    def _paste(self, rng: np.random.Generator, seq: int, image: np.ndarray, mask: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        if self.geometric and rng.random() < 0.3:  # a crowd: more objects pasted around the target first
            crowd, left = image, mask
            for _ in range(int(rng.integers(1, 3))):
                crowd, pasted = self._paste_one(rng, seq, crowd, near=left)
                left = left & ~pasted
            if left.sum() >= max(_MIN_AREA, 0.3 * mask.sum()):
                return crowd, left
        return self._paste_target(rng, seq, image, mask)

    def _paste_one(self, rng: np.random.Generator, seq: int, image: np.ndarray, near: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """`image` with an object of another sequence pasted on it (scaled, maybe mirrored, rotated and
        re-coloured when `geometric`), and the pasted object's mask."""
        for _ in range(8):
            other_seq, other, other_mask = self.real[int(rng.integers(len(self.real)))]
            if other_seq != seq:
                break
        h, w = image.shape[:2]
        ys, xs = np.nonzero(other_mask)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        obj, obj_mask = other[y0:y1, x0:x1], other_mask[y0:y1, x0:x1].astype(np.float32)
        if self.geometric:
            if rng.random() < 0.5:
                obj, obj_mask = obj[:, ::-1], obj_mask[:, ::-1]
            obj = _colour(np.ascontiguousarray(obj), rng)
            obj, obj_mask = _rotate(np.ascontiguousarray(obj), np.ascontiguousarray(obj_mask),
                                    float(rng.uniform(-30, 30)) if rng.random() < 0.5 else 0.0)
        low, high = (0.3, 1.2) if self.geometric else (0.4, 1.1)
        scale = rng.uniform(low, high) * min(1.0, 0.9 * min(h / obj.shape[0], w / obj.shape[1]))
        ow, oh = max(4, int(obj.shape[1] * scale)), max(4, int(obj.shape[0] * scale))
        obj = cv2.resize(obj, (ow, oh), interpolation=cv2.INTER_LINEAR)
        alpha = cv2.GaussianBlur(cv2.resize(obj_mask, (ow, oh), interpolation=cv2.INTER_LINEAR), (3, 3), 0)
        px, py = int(rng.integers(0, max(1, w - ow + 1))), int(rng.integers(0, max(1, h - oh + 1)))
        if near is not None and near.any():  # overlapping the target's box edge, as a neighbour would
            ys, xs = np.nonzero(near)
            cx = xs.min() if rng.random() < 0.5 else xs.max()
            cy = float(rng.uniform(ys.min(), ys.max() + 1))
            px = int(np.clip(cx - ow / 2 + rng.uniform(-0.3, 0.3) * ow, 0, max(0, w - ow)))
            py = int(np.clip(cy - oh / 2, 0, max(0, h - oh)))
        ow, oh = min(ow, w - px), min(oh, h - py)
        out = image.astype(np.float32).copy()
        a = alpha[:oh, :ow, None]
        out[py:py + oh, px:px + ow] = out[py:py + oh, px:px + ow] * (1 - a) + obj[:oh, :ow] * a
        pasted = np.zeros((h, w), bool)
        pasted[py:py + oh, px:px + ow] = alpha[:oh, :ow] > 0.5
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), pasted

    def _paste_target(self, rng: np.random.Generator, seq: int, image: np.ndarray, mask: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """One object pasted; the target is the pasted object or the original one, partly hidden."""
        composite, pasted = self._paste_one(rng, seq, image)
        hidden = mask & ~pasted
        if rng.random() < 0.5 and pasted.sum() >= _MIN_AREA:
            return composite, pasted
        if hidden.sum() >= max(_MIN_AREA, 0.3 * mask.sum()):
            return composite, hidden
        return (composite, pasted) if pasted.sum() >= _MIN_AREA else (image, mask)

    # -- one sample ----------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> Sample:
        image, mask, photo = self._draw(rng)
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.geometric and rng.random() < 0.3:
            rotated, rmask = _rotate(np.ascontiguousarray(image), np.ascontiguousarray(mask).astype(np.float32),
                                     float(rng.uniform(-20, 20)), keep_size=True)
            if (rmask > 0.5).sum() >= _MIN_AREA:
                image, mask = rotated, rmask > 0.5
        image = _colour(np.ascontiguousarray(image), rng)
        mask = np.ascontiguousarray(mask)
        kind = KINDS[int(rng.choice(len(KINDS), p=KIND_WEIGHTS))]
        if photo and kind not in self.coco_kinds:
            weights = np.array([w if k in self.coco_kinds else 0.0 for k, w in zip(KINDS, KIND_WEIGHTS, strict=True)])
            kind = KINDS[int(rng.choice(len(KINDS), p=weights / weights.sum()))]
        s = self.size
        truth_box = mask_box(mask)
        assert truth_box is not None
        coarse = None
        box = None
        if kind in ("box", "box+clicks"):
            box = jitter_box(truth_box, mask.shape, rng)
            window = jitter_window(box_window(box, context=CONTEXT * rng.uniform(0.75, 1.25)), rng)
        elif kind == "clicks":
            window = self._click_look(mask, rng)
        else:
            coarse = degrade(mask, rng)
            cbox = mask_box(coarse) or truth_box
            window = jitter_window(box_window(cbox, context=CONTEXT * rng.uniform(0.75, 1.25)), rng)
        rgb = crop_image(image, window, s, edge=True)
        if rng.random() < 0.25:  # softer detail, as a low-resolution frame scaled up
            f = rng.uniform(0.4, 0.8)
            rgb = cv2.resize(cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA), (s, s),
                             interpolation=cv2.INTER_LINEAR)
        truth = crop_image(mask.astype(np.float32), window, s) > 0.5
        maps = np.zeros((4, s, s), np.float32)
        if box is not None:
            maps[0] = box_map(box, window, s)
        if coarse is not None:
            maps[3] = crop_image(coarse.astype(np.float32), window, s) > 0.5
        points: list[tuple[float, float]] = []
        labels: list[int] = []
        if kind in ("clicks", "zoom") and truth.any():
            points, labels = first_clicks(truth, rng)
            maps[1:3] = click_maps(np.array(points), np.array(labels), s, self.click_radius)
        return Sample(kind, rgb, maps, truth.astype(np.float32), points, labels)

    def _click_look(self, mask: np.ndarray, rng: np.random.Generator) -> Window:
        """The window a first look at clicks alone crops: the whole frame, or (with `first_looks`) the frame
        with a margin or a square around a click deep in the object, at shares around the segmenter's."""
        hw = mask.shape[:2]
        if not self.first_looks:
            return frame_window(hw)
        look = rng.random()
        if look < 1 / 3:
            return frame_window(hw)
        if look < 2 / 3:
            return box_window(frame_window(hw), context=float(rng.uniform(0.25, 0.75)))
        _, depth, dist = farthest_inside(mask)
        x, y = deep_pixel(dist, 0.4 * depth, rng)
        return click_window(np.array([[x + 0.5, y + 0.5]]), hw, float(rng.uniform(0.45, 1.0)))


def _colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    gray = x.mean(axis=2, keepdims=True)
    x = gray + (x - gray) * (1 + rng.uniform(-0.3, 0.3))
    x = (x - 128) * (1 + rng.uniform(-0.25, 0.25)) + 128 + rng.uniform(-25, 25)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _rotate(image: np.ndarray, mask: np.ndarray, degrees: float, keep_size: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
    """Image and float mask rotated about their centre; the canvas grows to hold them unless `keep_size`
    (then the corners are filled from the nearest pixel)."""
    if not degrees:
        return image, mask
    h, w = mask.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    size = (w, h)
    if not keep_size:
        c, s = abs(m[0, 0]), abs(m[0, 1])
        size = (int(h * s + w * c) + 1, int(h * c + w * s) + 1)
        m[0, 2] += size[0] / 2 - w / 2
        m[1, 2] += size[1] / 2 - h / 2
    border = cv2.BORDER_REPLICATE if keep_size else cv2.BORDER_CONSTANT
    return (cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=border),
            cv2.warpAffine(mask, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))


def _annotated_stills(root: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, label map) for every annotated frame of a folder laid out as `images/<clip>/<frame>.jpg` with
    `masks/<clip>/<frame>.png` (Cutie's examples); a mask of another size is resized to its frame."""
    from edge_vos.data.davis import read_image, read_mask

    out = []
    for mask_path in sorted(Path(root).glob("masks/*/*.png")):
        image_path = Path(root) / "images" / mask_path.parent.name / (mask_path.stem + ".jpg")
        if not image_path.is_file():
            continue
        image, labels = read_image(image_path), read_mask(mask_path)
        if labels.shape != image.shape[:2]:
            labels = cv2.resize(labels, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        out.append((image, labels))
    return out

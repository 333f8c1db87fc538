"""Readers and writers for the DAVIS and YouTube-VOS folder layouts.

DAVIS:       ROOT/JPEGImages/<res>/<seq>/00000.jpg, ROOT/Annotations/<res>/<seq>/00000.png,
             ROOT/ImageSets/<year>/<split>.txt (one sequence per line; DAVIS-2016's original lists hold
             "/JPEGImages/480p/<seq>/00000.jpg /Annotations/..." pairs, which are understood too).
YouTube-VOS: ROOT/<split>/JPEGImages/<seq>/*.jpg, ROOT/<split>/Annotations/<seq>/*.png (in `valid`
             only the frames where an object first appears are annotated).
Annotations are palette PNGs whose pixel values are object ids; predictions are written the same way
with the DAVIS (PASCAL VOC) palette so the official toolkits and viewers read them unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map [256,3] uint8 (id 1 red, 2 green, 3 yellow, ...)."""
    ids = np.arange(256)
    cmap = np.zeros((256, 3), dtype=np.int64)
    for shift in range(8):  # bit `shift` of each of r, g, b comes from bits 3*shift .. 3*shift+2 of the id
        for channel in range(3):
            cmap[:, channel] |= ((ids >> (3 * shift + channel)) & 1) << (7 - shift)
    return cmap.astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 [H,W,3]."""
    with Image.open(path) as img:
        return np.array(img.convert("RGB"))


def read_mask(path: str | Path) -> np.ndarray:
    """Label map uint8 [H,W] from a palette (or greyscale) PNG: pixel value = object id."""
    with Image.open(path) as img:
        if img.mode in ("P", "L"):
            return np.asarray(img, dtype=np.uint8).copy()
        if img.mode in ("1", "I", "I;16"):
            return np.asarray(img).astype(np.uint8)
        raise ValueError(f"{path}: expected a palette or greyscale PNG, got mode {img.mode}")


def write_mask(path: str | Path, labels: np.ndarray) -> None:
    """Writes a label map [H,W] (ids 0..255) as a palette PNG with the DAVIS palette."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a label map [H,W], got shape {list(labels.shape)}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("label values must be in 0..255")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(davis_palette().ravel().tolist())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


@dataclass(frozen=True)
class VideoSequence:
    """One video: frames in order and the annotations that exist (all frames for DAVIS)."""

    name: str
    frames: tuple[Path, ...]
    # frame stem ("00000") -> annotation file; absent frames have no annotation.
    masks: dict[str, Path] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def frame_ids(self) -> list[str]:
        return [p.stem for p in self.frames]

    def image(self, index: int) -> np.ndarray:
        return read_image(self.frames[index])

    def mask(self, index: int) -> np.ndarray | None:
        """Label map of frame `index`, or None when that frame is not annotated."""
        path = self.masks.get(self.frames[index].stem)
        return None if path is None else read_mask(path)

    def all_masks(self) -> np.ndarray:
        """Every frame's label map [T,H,W] uint8; raises if a frame has no annotation."""
        missing = [i for i in self.frame_ids if i not in self.masks]
        if missing:
            raise FileNotFoundError(f"{self.name}: no annotation for frame(s) {missing[:5]}")
        return np.stack([read_mask(self.masks[i]) for i in self.frame_ids])


def _list_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes) if folder.is_dir() else []


def _sequence(name: str, image_dir: Path, mask_dir: Path) -> VideoSequence:
    frames = _list_files(image_dir, IMAGE_SUFFIXES)
    if not frames:
        raise FileNotFoundError(f"no frames for sequence {name!r} in {image_dir}")
    masks = {p.stem: p for p in _list_files(mask_dir, (".png",))}
    return VideoSequence(name, tuple(frames), masks)


def find_split_file(root: str | Path, split: str, year: str | None = None) -> Path:
    """ROOT/ImageSets/<year>/<split>.txt; without `year`, the only year folder holding that split."""
    sets = Path(root) / "ImageSets"
    if year is not None:
        path = sets / year / f"{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"split list not found: {path}")
        return path
    candidates = sorted(sets.glob(f"*/{split}.txt"))
    if len(candidates) != 1:
        found = sorted(str(p.relative_to(sets)) for p in sets.glob("*/*.txt")) if sets.is_dir() else []
        what = "several" if candidates else "no"
        raise FileNotFoundError(
            f"{what} split list(s) named {split}.txt under {sets} (have: {found}); give the year"
        )
    return candidates[0]


def read_split(path: str | Path) -> list[str]:
    """Sequence names of a split list, in file order, without duplicates."""
    names: list[str] = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split()[0]
        # DAVIS-2016 original lists: "/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png"
        name = Path(first).parent.name if "/" in first else first
        if name not in names:
            names.append(name)
    return names


def davis_sequences(
    root: str | Path, split: str, res: str = "480p", year: str | None = None
) -> list[VideoSequence]:
    """The sequences of a DAVIS split at resolution `res` (e.g. 480p, Full-Resolution)."""
    root = Path(root)
    image_root = root / "JPEGImages" / res
    if not image_root.is_dir():
        have = (
            sorted(p.name for p in (root / "JPEGImages").glob("*")) if (root / "JPEGImages").is_dir() else []
        )
        raise FileNotFoundError(f"{image_root} not found (resolutions present: {have})")
    names = read_split(find_split_file(root, split, year))
    return [_sequence(n, image_root / n, root / "Annotations" / res / n) for n in names]


def youtube_vos_sequences(root: str | Path, split: str = "valid") -> list[VideoSequence]:
    """Every sequence of a YouTube-VOS split folder, sorted by name."""
    base = Path(root) / split
    image_root = base / "JPEGImages"
    if not image_root.is_dir():
        raise FileNotFoundError(f"{image_root} not found")
    names = sorted(p.name for p in image_root.iterdir() if p.is_dir())
    return [_sequence(n, image_root / n, base / "Annotations" / n) for n in names]


def write_davis_sequence(
    root: str | Path,
    name: str,
    frames: np.ndarray | None,
    labels: np.ndarray,
    res: str = "480p",
    jpeg_quality: int = 95,
) -> None:
    """Writes frames [T,H,W,3] as JPEGImages/<res>/<name>/%05d.jpg and labels [T,H,W] as Annotations."""
    root = Path(root)
    if frames is not None:
        if len(frames) != len(labels):
            raise ValueError(f"{len(frames)} frames but {len(labels)} label maps")
        image_dir = root / "JPEGImages" / res / name
        image_dir.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(frames):
            Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(
                image_dir / f"{t:05d}.jpg", quality=jpeg_quality
            )
    for t, lab in enumerate(labels):
        write_mask(root / "Annotations" / res / name / f"{t:05d}.png", lab)


def write_split(root: str | Path, split: str, names: Iterable[str], year: str = "2017") -> Path:
    """Writes ImageSets/<year>/<split>.txt."""
    path = Path(root) / "ImageSets" / year / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))
    return path


def write_predictions(
    out_dir: str | Path, sequence: str, frame_ids: Iterable[str], labels: Iterable[np.ndarray]
) -> None:
    """Predictions as DIR/<sequence>/<frame id>.png palette PNGs (the layout the DAVIS toolkit reads)."""
    for frame_id, lab in zip(frame_ids, labels, strict=True):
        write_mask(Path(out_dir) / sequence / f"{frame_id}.png", lab)

"""COCO still images with object masks (`../shared/data/static/`, its README) and the prompt hold-out.

- `coco-mval-train/`: one object per entry (`objects.json`: name, category, COCO image id); the mask PNG
  is 1 on the object.
- `coco128/`: every instance of 128 images (`instances.json`); the mask PNG holds instance ids 1..N, so
  the other instances of an image are real neighbours and distractors of the one prompted.

The hold-out: a deterministic share of coco-mval-train's COCO *image ids*, drawn per category so every
category keeps objects on both sides (`HOLDOUT_SHARE`). Every object of a held-out image is held out,
whatever its category, and coco128 images with a held-out id too, so no pixel of a held-out image is
ever trained on. Training takes `coco_objects(..., part="train")`; measurement `part="holdout"`.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_vos.data.davis import read_image, read_mask

MVAL_DIR = "coco-mval-train"
COCO128_DIR = "coco128"
HOLDOUT_SHARE = 0.25  # of each category's images
PARTS = ("train", "holdout", "all")


@dataclass(frozen=True)
class CocoObject:
    """One prompted object of coco-mval-train."""

    name: str
    category: str
    image_id: int
    image_path: Path
    mask_path: Path

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 [H,W,3], bool mask [H,W])."""
        return read_image(self.image_path), read_mask(self.mask_path) > 0


@dataclass(frozen=True)
class CocoImage:
    """One coco128 image with its instance ids (1..N in the mask PNG)."""

    image_id: int
    image_path: Path
    mask_path: Path
    instance_ids: tuple[int, ...]

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 [H,W,3], instance label map uint8 [H,W], 0 = background)."""
        return read_image(self.image_path), read_mask(self.mask_path)


def _stable_rank(image_id: int) -> int:
    """A fixed pseudo-random order of image ids (the same on every machine and Python run)."""
    return zlib.crc32(f"coco-holdout-{image_id}".encode())


def _all_mval(root: Path) -> list[CocoObject]:
    folder = root / MVAL_DIR
    listing = folder / "objects.json"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} not found (coco-mval-train, see ../shared/data/static/README.md)")
    return [CocoObject(o["name"], o["category"], int(o["coco_image_id"]), folder / "images" / f"{o['name']}.jpg",
                       folder / "masks" / f"{o['name']}.png") for o in json.loads(listing.read_text())]


def holdout_image_ids(objects: list[CocoObject], share: float = HOLDOUT_SHARE) -> frozenset[int]:
    """COCO image ids held out: in each category, `share` of its images (rounded, at least one) in
    `_stable_rank` order."""
    by_category: dict[str, set[int]] = {}
    for obj in objects:
        by_category.setdefault(obj.category, set()).add(obj.image_id)
    held: set[int] = set()
    for ids in by_category.values():
        count = max(1, round(len(ids) * share))
        held.update(sorted(ids, key=_stable_rank)[:count])
    return frozenset(held)


def coco_objects(root: str | Path, part: str = "train") -> list[CocoObject]:
    """coco-mval-train's objects of `part` (train, holdout or all) under the static-data `root`."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    objects = _all_mval(Path(root))
    if part == "all":
        return objects
    held = holdout_image_ids(objects)
    return [o for o in objects if (o.image_id in held) == (part == "holdout")]


def coco128_images(root: str | Path, part: str = "train") -> list[CocoImage]:
    """coco128's images: `train` leaves out any whose COCO image id is held out of coco-mval-train, `all` keeps
    every one (the tracker's trainer, which the prompt hold-out does not concern)."""
    if part not in ("train", "all"):
        raise ValueError(f"part must be train or all, got {part!r}")
    folder = Path(root) / COCO128_DIR
    listing = folder / "instances.json"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} not found (coco128, see ../shared/data/static/README.md)")
    mval = folder.parent / MVAL_DIR / "objects.json"
    held = holdout_image_ids(_all_mval(folder.parent)) if part == "train" and mval.is_file() else frozenset()
    return [CocoImage(int(e["name"]), folder / "images" / f"{e['name']}.jpg", folder / "masks" / f"{e['name']}.png",
                      tuple(int(i["id"]) for i in e["instances"]))
            for e in json.loads(listing.read_text()) if int(e["name"]) not in held]

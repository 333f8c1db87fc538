"""Still photographs with object masks (`../shared/data/static`, COCO): sources of pseudo-videos and cut-outs.

Two sets, one reader (the folder's README describes them):

- `coco-mval-train/`: one object per image, `masks/NAME.png` holds 1 on the object; `objects.json` lists
  the names.
- `coco128/`: every instance of an image, `masks/NAME.png` holds instance ids 1..N; `instances.json`
  lists each image's ids.

Both become `StaticImage`s whose label map has the image's objects as ids 1..N and 0 elsewhere, so a
trainer treats them as one-frame sequences with several objects (the others of a coco128 image are real
distractors). Images are read on demand: the sets are small on disk, large once decoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_vos.data.davis import read_image, read_mask

# The sets of the static folder, by sub-folder name, and the JSON listing each one's entries.
STATIC_SETS = {"coco-mval-train": "objects.json", "coco128": "instances.json"}


@dataclass(frozen=True)
class StaticImage:
    """One photograph: `image` (jpg) and `mask` (palette PNG of object ids) paths, the set it comes from."""

    name: str
    image: Path
    mask: Path
    source: str

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 [H,W,3] and label map uint8 [H,W] (0 = background, k = object k)."""
        image, labels = read_image(self.image), read_mask(self.mask)
        if image.shape[:2] != labels.shape:
            raise ValueError(f"{self.mask}: mask {labels.shape} does not match image {image.shape[:2]}")
        return image, labels


def static_images(root: str | Path, sets: tuple[str, ...] = tuple(STATIC_SETS)) -> list[StaticImage]:
    """Every listed image of the chosen sets under `root`, in the listing's order; a missing file is an error."""
    root = Path(root)
    out: list[StaticImage] = []
    for name in sets:
        if name not in STATIC_SETS:
            raise ValueError(f"unknown static set {name!r}; known: {sorted(STATIC_SETS)}")
        folder = root / name
        listing = folder / STATIC_SETS[name]
        if not listing.is_file():
            raise FileNotFoundError(f"{listing} not found (see {root / 'README.md'})")
        for entry in json.loads(listing.read_text()):
            stem = entry["name"]
            item = StaticImage(stem, folder / "images" / f"{stem}.jpg", folder / "masks" / f"{stem}.png", name)
            for path in (item.image, item.mask):
                if not path.is_file():
                    raise FileNotFoundError(f"{path} listed in {listing} but missing")
            out.append(item)
    return out

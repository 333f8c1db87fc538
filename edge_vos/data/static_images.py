"""Still photographs with object masks (`../shared/data/static`, COCO): sources of pseudo-videos and cut-outs.

The tracker's view of the two sets that data/coco.py lists (the folder's README describes them):

- `coco-mval-train/`: one object per image, `masks/NAME.png` holds 1 on the object; `objects.json` lists
  the names.
- `coco128/`: every instance of an image, `masks/NAME.png` holds instance ids 1..N; `instances.json`
  lists each image's ids.

Both become `StaticImage`s whose label map has the image's objects as ids 1..N and 0 elsewhere, so a
trainer treats them as one-frame sequences with several objects (the others of a coco128 image are real
distractors). Every image is used, the prompt network's COCO hold-out included: that hold-out measures the
prompt network, which shares nothing with the tracker. Images are read on demand: the sets are small on
disk, large once decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_vos.data.coco import COCO128_DIR, MVAL_DIR, coco128_images, coco_objects
from edge_vos.data.davis import read_image, read_mask

# The sets of the static folder, by sub-folder name (data/coco.py reads their listings).
STATIC_SETS = (MVAL_DIR, COCO128_DIR)


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


def static_images(root: str | Path, sets: tuple[str, ...] = STATIC_SETS) -> list[StaticImage]:
    """Every listed image of the chosen sets under `root`, in the listing's order; a missing file is an error."""
    out: list[StaticImage] = []
    for name in sets:
        if name not in STATIC_SETS:
            raise ValueError(f"unknown static set {name!r}; known: {sorted(STATIC_SETS)}")
        if name == MVAL_DIR:
            paths = [(o.image_path, o.mask_path) for o in coco_objects(root, part="all")]
        else:
            paths = [(i.image_path, i.mask_path) for i in coco128_images(root, part="all")]
        for image, mask in paths:
            for path in (image, mask):
                if not path.is_file():
                    raise FileNotFoundError(f"{path} listed in {path.parent.parent} but missing")
            out.append(StaticImage(image.stem, image, mask, name))
    return out

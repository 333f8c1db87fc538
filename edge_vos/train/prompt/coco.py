"""COCO objects as prompt-training targets: coco-mval-train's training part and coco128's instances.

Never the hold-out: `edge_vos.data.coco` decides it by COCO image id, and both lists come from there with
the held-out images already removed. A coco128 target is one instance; the image's other instances stay
in it, so the network learns to leave a neighbour of the same kind out of a box or a click.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_vos.data.coco import CocoImage, CocoObject, coco128_images, coco_objects

log = logging.getLogger(__name__)

MIN_INSTANCE_AREA = 1500  # pixels of a coco128 image (640 px long side): smaller instances are not targets
MVAL_SHARE = 0.65  # of COCO draws: coco-mval-train objects (one per image, curated); the rest coco128


class CocoTargets:
    """Draws (image, bool target mask) pairs from the COCO stills under `static_root`."""

    def __init__(self, static_root: str | Path, min_area: int = MIN_INSTANCE_AREA,
                 mval_share: float = MVAL_SHARE) -> None:
        self.objects: list[CocoObject] = coco_objects(static_root, "train")
        self.images: list[CocoImage] = coco128_images(static_root)
        self.min_area = min_area
        self.mval_share = mval_share if self.images else 1.0
        if not self.objects:
            raise FileNotFoundError(f"no coco-mval-train training objects under {static_root}")
        log.info("COCO targets: %d coco-mval-train objects (hold-out excluded), %d coco128 images",
                 len(self.objects), len(self.images))

    @property
    def image_ids(self) -> set[int]:
        """Every COCO image id a draw can come from (tests check the hold-out is not among them)."""
        return {o.image_id for o in self.objects} | {i.image_id for i in self.images}

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if rng.random() < self.mval_share:
            return self.objects[int(rng.integers(len(self.objects)))].load()
        for _ in range(8):
            image, labels = self.images[int(rng.integers(len(self.images)))].load()
            ids, areas = np.unique(labels[labels > 0], return_counts=True)
            big = ids[areas >= self.min_area]
            if len(big):
                return image, labels == big[int(rng.integers(len(big)))]
        return self.objects[int(rng.integers(len(self.objects)))].load()

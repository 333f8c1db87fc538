"""What the tracker accepts as a frame and a prompt: checked before any state changes, so a rejected frame
loses nothing that was accepted before (TrackerInputError names the problem)."""

from __future__ import annotations

import numpy as np

from edge_vos.model.preprocess import FrameGeometry
from edge_vos.tracker.errors import TrackerInputError
from edge_vos.tracker.objects import ObjectManager


def check_image(image: object) -> tuple[int, int]:
    """An RGB uint8 [H,W,3] frame -> (H, W)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
        raise TrackerInputError(f"expected an RGB uint8 image [H,W,3], got {desc}")
    return image.shape[0], image.shape[1]


def prompt_ids(
    mask: np.ndarray | None, objects: list[int] | None, geometry: FrameGeometry, tracked: ObjectManager
) -> list[int]:
    """The object ids a prompt mask brings (all ids in it, or the named `objects`), checked against the
    frame size and the room left beside the `tracked` objects."""
    if mask is None:
        if objects:
            raise TrackerInputError("objects were named but no mask was given")
        return []
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise TrackerInputError("mask must be a 2-D integer label map (0 = background, value = object id)")
    if mask.shape != (geometry.in_h, geometry.in_w):
        raise TrackerInputError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} but the frame is {geometry.in_w}x{geometry.in_h}"
        )
    present = [int(v) for v in np.unique(mask) if v != 0]
    for obj_id in present:
        ObjectManager.check_id(obj_id)
    if objects is None:
        chosen = present
    else:
        for obj_id in objects:
            ObjectManager.check_id(obj_id)
        missing = [o for o in objects if o not in present]
        if missing:
            raise TrackerInputError(f"objects {missing} are not in the mask (it holds {present})")
        chosen = list(dict.fromkeys(objects))
    tracked.check_room(chosen)
    return chosen

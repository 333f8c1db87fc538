"""Stand-ins for tests of the service without a network: a tracker with Tracker's interface (and the same
input errors: tests/test_fakes.py checks they agree with the real Tracker's) and a reader that fails on
cue. They exercise threads, queues, sockets and commands in milliseconds."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from edge_vos.labels import MAX_OBJECT_ID
from edge_vos.service.sources import SourceError
from edge_vos.tracker import TrackerInputError


@dataclass
class FakeResult:
    frame_index: int
    labels: np.ndarray
    object_ids: list[int]
    probabilities: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


class FakeTracker:
    """Keeps each object's last prompt mask and returns it unchanged (objects do not move), with the same
    validation errors as the real tracker for ids, sizes and the object limit. `delay_s` simulates
    inference time; `outputs` records every labels map returned (the "tracker's own output")."""

    def __init__(self, max_objects: int = 8, delay_s: float = 0.0) -> None:
        self.max_objects = max_objects
        self.delay_s = delay_s
        self.masks: dict[int, np.ndarray] = {}
        self.frame_index = -1
        self.outputs: list[np.ndarray] = []
        self.prompts: list[tuple[int, list[int]]] = []  # (frame_index or -1 for add_prompt, ids)
        self.block = threading.Event()  # set: step() hangs until cleared (a stalled inference)

    @property
    def object_ids(self) -> list[int]:
        return list(self.masks)

    def _prompt(self, image: np.ndarray, mask: np.ndarray | None, objects: list[int] | None) -> list[int]:
        """The real Tracker's input rules (TrackerInputError, nothing changed) for a frame and its prompt."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise TrackerInputError("expected an RGB uint8 image [H,W,3]")
        if mask is None:
            if objects:
                raise TrackerInputError("objects were named but no mask was given")
            return []
        if not isinstance(mask, np.ndarray) or mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
            raise TrackerInputError("mask must be a 2-D integer label map")
        if mask.shape != image.shape[:2]:
            raise TrackerInputError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the frame is "
                                    f"{image.shape[1]}x{image.shape[0]}")
        present = [int(v) for v in np.unique(mask) if v]
        for obj_id in present + list(objects or []):
            valid = not isinstance(obj_id, bool) and isinstance(obj_id, (int, np.integer))
            if not valid or not 1 <= obj_id <= MAX_OBJECT_ID:
                raise TrackerInputError(f"object id must be an integer in 1..{MAX_OBJECT_ID}, got {obj_id!r}")
        ids = present if objects is None else list(dict.fromkeys(int(i) for i in objects))
        missing = [i for i in ids if i not in present]
        if missing:
            raise TrackerInputError(f"objects {missing} are not in the mask")
        new = [i for i in ids if i not in self.masks]
        if len(self.masks) + len(new) > self.max_objects:
            raise TrackerInputError(f"cannot track more than {self.max_objects} objects")
        for i in ids:
            self.masks[i] = mask == i
        return ids

    def step(
        self, image: np.ndarray, mask: np.ndarray | None = None, objects: list[int] | None = None, *,
        defer_memory_write: bool = False,
    ) -> FakeResult:
        while self.block.is_set():
            time.sleep(0.01)
        if self.delay_s:
            time.sleep(self.delay_s)
        ids = self._prompt(image, mask, objects)
        if ids:
            self.prompts.append((self.frame_index + 1, ids))
        h, w = image.shape[:2]
        self.frame_index += 1
        labels = np.zeros((h, w), np.uint8)
        ids = []
        for obj_id, m in self.masks.items():
            if m.shape == (h, w):
                labels[m] = obj_id
                ids.append(obj_id)
        probs = np.stack([(labels == i).astype(np.float32) * 0.9 for i in ids]) if ids else np.zeros((0, h, w),
                                                                                                    np.float32)
        self.outputs.append(labels.copy())
        return FakeResult(self.frame_index, labels, ids, probs, {"total": self.delay_s * 1000})

    def write_deferred_memory(self) -> float:
        return 0.0  # it keeps no memory

    def add_prompt(self, image: np.ndarray, mask: np.ndarray, objects: list[int] | None = None) -> None:
        ids = self._prompt(image, mask, objects)
        if not ids:
            raise TrackerInputError("the prompt mask holds none of the requested objects")
        self.prompts.append((-1, ids))

    def remove_object(self, obj_id: int) -> None:
        if obj_id not in self.masks:
            raise KeyError(f"unknown object {obj_id}")
        del self.masks[obj_id]

    def reset(self) -> None:
        self.masks.clear()


class ArrayReader:
    """Frames from an array, like a file; `fail_at`: raise SourceError (a lost source) when reading that
    frame index, once per listed index; `fail_open`: the first N opens fail."""

    live = False
    description = "array"
    unreadable = 0

    def __init__(self, frames: np.ndarray, fail_at: tuple[int, ...] = (), fail_open: int = 0,
                 mask: np.ndarray | None = None, live: bool = False) -> None:
        self.frames, self.fail_at, self.fail_open, self.mask, self.live = frames, set(fail_at), fail_open, mask, live
        self.index = 0
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        if self.index >= len(self.frames):
            self.index = 0  # reopening a finished file starts it again
        if self.fail_open > 0:
            self.fail_open -= 1
            raise SourceError("camera absent")

    def read(self) -> np.ndarray | None:
        if self.index in self.fail_at:
            self.fail_at.discard(self.index)
            raise SourceError(f"lost at frame {self.index}")
        if self.index >= len(self.frames):
            return None
        frame = self.frames[self.index]
        self.index += 1
        return frame

    def close(self) -> None:
        pass

    def nominal_fps(self) -> float | None:
        return None

    def initial_mask(self) -> np.ndarray | None:
        return self.mask

"""A bag made with rosbags from a sequence's frames drives the tracker (bundled weights) to the same masks as
the sequence's image folder: DAVIS-2016 frames when the data is present, and a rendered scene always."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_vos.data.davis import read_mask
from edge_vos.data.synthetic import generate_sequence
from edge_vos.ros2.uri import open_source as open_reader
from edge_vos.service.config import SourceConfig
from edge_vos.tracker import Tracker, TrackerConfig

from .conftest import DAVIS, require_data
from .ros2_support import frames_bag

FRAMES = 5


def _frames(uri: str, limit: int) -> list[np.ndarray]:
    reader = open_reader(SourceConfig(uri=uri))
    reader.open()
    out = []
    while len(out) < limit and (frame := reader.read()) is not None:
        out.append(frame)
    reader.close()
    return out


def _track(frames: list[np.ndarray], first_mask: np.ndarray) -> list[np.ndarray]:
    tracker = Tracker(TrackerConfig(device="cpu", resolution=0, backend="torch", precision="fp32"))  # bundled, eager
    return [tracker.step(f, first_mask if i == 0 else None).labels for i, f in enumerate(frames)]


def _same_masks(folder: Path, first_mask: np.ndarray, bag: Path, encoding: str) -> None:
    folder_frames = _frames(str(folder), FRAMES)
    frames_bag(bag, np.stack(folder_frames), encoding)
    bag_frames = _frames(f"rosbag2:{bag}?topic=/camera/image_raw", FRAMES)
    assert len(bag_frames) == len(folder_frames) == FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(bag_frames, folder_frames, strict=True))
    from_folder, from_bag = _track(folder_frames, first_mask), _track(bag_frames, first_mask)
    assert all(np.array_equal(a, b) for a, b in zip(from_bag, from_folder, strict=True))
    ids = {int(i) for i in np.unique(first_mask) if i}
    assert {int(i) for i in np.unique(from_bag[-1]) if i} == ids  # the objects are still tracked


def test_a_bag_of_davis_frames_gives_the_folders_masks(tmp_path: Path) -> None:
    root = require_data(DAVIS, "DAVIS-2016")
    sequence = "blackswan" if (root / "JPEGImages/240p/blackswan").is_dir() else sorted(
        p.name for p in (root / "JPEGImages/240p").iterdir())[0]
    annotation = root / "Annotations/240p" / sequence / "00000.png"
    if not annotation.is_file():
        pytest.skip(f"no first-frame annotation at {annotation}")
    first = (read_mask(annotation) > 0).astype(np.uint8)
    _same_masks(root / "JPEGImages/240p" / sequence, first, tmp_path / "davis_bag", "bgr8")


def test_a_bag_of_a_rendered_scene_gives_the_folders_masks(tmp_path: Path) -> None:
    frames, labels = generate_sequence(seed=4, num_frames=FRAMES, size=(120, 176), num_objects=2, num_distractors=1)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    _same_masks(folder, labels[0], tmp_path / "scene_bag", "rgb8")

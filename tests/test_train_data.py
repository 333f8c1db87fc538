"""Training data from still photographs (COCO) and left-out sequences: shapes, labels, what never enters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge_vos.config import ConfigError, load_yaml
from edge_vos.data.davis import write_davis_sequence, write_mask, write_split
from edge_vos.data.static_images import static_images
from edge_vos.train.config import DataSection, TrainConfig
from edge_vos.train.data import TrainData

from .conftest import DATA, require_data, require_davis

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _fake_static(root: Path) -> None:
    """One single-object image (coco-mval-train layout) and one with three instances (coco128 layout)."""
    rng = np.random.default_rng(0)
    single, multi = root / "coco-mval-train", root / "coco128"
    for folder in (single, multi):
        (folder / "images").mkdir(parents=True)
    image = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    labels = np.zeros((120, 160), np.uint8)
    labels[20:90, 30:100] = 1
    Image.fromarray(image).save(single / "images" / "cat01_1.jpg")
    write_mask(single / "masks" / "cat01_1.png", labels)
    (single / "objects.json").write_text(json.dumps([{"name": "cat01_1", "category": "cat", "coco_image_id": 1}]))
    labels = np.zeros((120, 160), np.uint8)
    labels[10:60, 10:60], labels[50:110, 70:130], labels[15:45, 110:150] = 1, 2, 3
    Image.fromarray(image).save(multi / "images" / "000000000002.jpg")
    write_mask(multi / "masks" / "000000000002.png", labels)
    instances = [{"id": k, "coco_class": 0} for k in (1, 2, 3)]
    (multi / "instances.json").write_text(json.dumps([{"name": "000000000002", "instances": instances}]))


def test_static_images_read_as_label_maps(tmp_path: Path) -> None:
    _fake_static(tmp_path)
    items = static_images(tmp_path)
    assert [(i.name, i.source) for i in items] == [("cat01_1", "coco-mval-train"), ("000000000002", "coco128")]
    image, labels = items[1].read()
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    assert labels.shape == (120, 160) and set(np.unique(labels)) == {0, 1, 2, 3}
    (tmp_path / "coco128" / "masks" / "000000000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="000000000002.png"):
        static_images(tmp_path)
    with pytest.raises(ValueError, match="unknown static set"):
        static_images(tmp_path, ("coco-train",))


def test_shared_static_sets_match_their_listings() -> None:
    root = require_data(DATA / "static", "static images")
    items = static_images(root)
    assert sum(i.source == "coco-mval-train" for i in items) == 427
    assert sum(i.source == "coco128" for i in items) == 128
    listed = {
        e["name"]: {k["id"] for k in e["instances"]}
        for e in json.loads((root / "coco128" / "instances.json").read_text())
    }
    for item in [i for i in items if i.source == "coco128"][:5]:
        _, labels = item.read()
        assert set(np.unique(labels)) - {0} <= listed[item.name]


def _photo_data(root: Path, **overrides: object) -> TrainData:
    base: dict[str, object] = dict(
        davis_root="",
        synthetic_sequences=2,
        synthetic_frames=8,
        crop=64,
        clip_frames=4,
        max_objects=3,
        static_root=str(root),
        static_photo_fraction=1.0,
        multi_object_prob=1.0,
    )
    base.update(overrides)
    return TrainData(DataSection(**base), seed=0)  # type: ignore[arg-type]


def test_photographs_become_multi_object_pseudo_videos(tmp_path: Path) -> None:
    _fake_static(tmp_path)
    data = _photo_data(tmp_path, work_size=48)
    assert data.photo_names == ["cat01_1", "000000000002"]
    tracked_together = 0
    for step in range(12):
        a = data.sample(np.random.default_rng([0, step]), "static", 1)
        b = data.sample(np.random.default_rng([0, step]), "static", 1)
        assert a.frames.shape == (4, 64, 64, 3) and a.frames.dtype == np.uint8
        assert a.masks.shape == (4, 3, 64, 64) and a.selector.shape == (3,)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
        assert set(np.unique(a.masks)) <= {0.0, 1.0} and a.masks.sum(axis=1).max() <= 1
        assert a.selector[0] == 1.0 and list(a.selector) == [float(a.masks[0, k].any()) for k in range(3)]
        # the frames differ by the random warps: a pseudo-video, not one frame repeated
        assert not np.array_equal(a.frames[0], a.frames[1])
        tracked_together += int(a.selector.sum() >= 2)
    assert tracked_together >= 6


def test_photo_cut_outs_are_pasted_into_video_clips(tmp_path: Path) -> None:
    _fake_static(tmp_path)
    data = _photo_data(
        tmp_path, static_photo_fraction=0.0, photo_paste_prob=1.0, distractor_prob=1.0, occluder_prob=1.0
    )
    for step in range(4):
        clip = data.sample(np.random.default_rng([1, step]), "video", 2)
        assert clip.masks.shape == (4, 3, 64, 64) and clip.masks.sum(axis=1).max() <= 1


def _video_clip_sources(data: TrainData, clips: int) -> list[str]:
    """The kind of every source `data` reads while drawing `clips` video-stage clips (own frames and layers)."""
    picked: list[str] = []
    original = data.sources.raw

    def recording_raw(rng: np.random.Generator, source: tuple[str, int], *args: Any) -> Any:
        picked.append(source[0])
        return original(rng, source, *args)

    data.sources.raw = recording_raw  # type: ignore[method-assign]
    for step in range(clips):
        clip = data.sample(np.random.default_rng([2, step]), "video", 2)
        assert clip.masks.shape == (4, 3, 64, 64) and clip.selector[0] == 1.0
    return picked


def test_photo_pseudo_videos_are_mixed_into_the_video_stage(tmp_path: Path) -> None:
    """With video_photo_fraction 1 every video-stage clip's own frames are a photograph (pasted layers may come
    from elsewhere; without a DAVIS root the videos would be synthetic); with 0 no photograph is read."""
    _fake_static(tmp_path)
    mixed = _photo_data(tmp_path, static_photo_fraction=0.0, video_photo_fraction=1.0)
    assert _video_clip_sources(mixed, 6).count("photo") >= 6
    plain = _photo_data(tmp_path, static_photo_fraction=0.0, video_photo_fraction=0.0)
    assert "photo" not in _video_clip_sources(plain, 6)


def test_photo_options_need_a_static_root() -> None:
    with pytest.raises(ConfigError, match="static_root"):
        DataSection(davis_root="", static_photo_fraction=0.5)
    with pytest.raises(ConfigError, match="static_root"):
        DataSection(davis_root="", video_photo_fraction=0.5)


def _fake_davis(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("tr-a", "tr-b", "tr-c", "held-v"):
        frames = rng.integers(0, 255, size=(5, 48, 64, 3), dtype=np.uint8)
        labels = np.zeros((5, 48, 64), np.uint8)
        labels[:, 10:30, 20:40] = 1
        write_davis_sequence(root, name, frames, labels, res="240p")
    write_split(root, "train", ["tr-a", "tr-b", "tr-c"], year="2016")
    write_split(root, "val-dev", ["held-v"], year="2016")


def test_left_out_sequences_are_not_training_data(tmp_path: Path) -> None:
    _fake_davis(tmp_path)
    cfg = DataSection(
        davis_root=str(tmp_path), davis_res="240p", synthetic_sequences=0, crop=32, exclude_sequences=["tr-b"]
    )
    assert TrainData(cfg, seed=0).sequence_names == ["tr-a", "tr-c"]
    cfg.exclude_sequences = ["tr-b", "held-v"]  # not a training sequence: an error naming it
    with pytest.raises(ConfigError, match="held-v"):
        TrainData(cfg, seed=0)


def test_shipped_coco_recipe_never_sees_val_dev_or_its_left_out_sequences() -> None:
    from edge_vos.data.davis import read_split

    root = require_davis()
    require_data(DATA / "static", "static images")
    cfg = load_yaml(TrainConfig, CONFIGS / "train-cpu-coco.yaml").data
    cfg.davis_root, cfg.static_root = str(root), str(DATA / "static")
    data = TrainData(cfg, seed=0)
    val_dev = set(read_split(root / "ImageSets" / "2016" / "val-dev.txt"))
    train_names = read_split(root / "ImageSets" / "2016" / "train.txt")
    assert len(cfg.exclude_sequences) == 6 and set(cfg.exclude_sequences) <= set(train_names)
    assert data.sequence_names == [n for n in train_names if n not in cfg.exclude_sequences]
    assert not set(data.sequence_names) & (val_dev | set(cfg.exclude_sequences))
    # the photographs are COCO images only: no DAVIS frame (and no val-dev frame) among them
    assert len(data.photo_names) == 555
    assert all(p.image.is_relative_to(DATA / "static") for p in data.sources.photos)

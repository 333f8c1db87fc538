"""DAVIS / YouTube-VOS layout readers and the palette PNG writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_vos.data.davis import (
    davis_palette,
    davis_sequences,
    find_split_file,
    read_mask,
    read_split,
    write_davis_sequence,
    write_mask,
    write_predictions,
    write_split,
    youtube_vos_sequences,
)

from .conftest import require_davis


def test_palette_is_the_davis_voc_colour_map() -> None:
    pal = davis_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0]
    assert pal[3].tolist() == [128, 128, 0]
    assert pal[4].tolist() == [0, 0, 128]
    assert pal[255].tolist() == [224, 224, 192]


def test_mask_round_trip_is_a_palette_png(tmp_path: Path) -> None:
    labels = np.zeros((7, 9), np.uint8)
    labels[2:5, 3:8] = 2
    labels[0, 0] = 255
    write_mask(tmp_path / "a" / "00000.png", labels)
    with Image.open(tmp_path / "a" / "00000.png") as img:
        assert img.mode == "P"
        assert img.getpalette()[3:6] == [128, 0, 0]
    np.testing.assert_array_equal(read_mask(tmp_path / "a" / "00000.png"), labels)


def test_write_mask_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_mask(tmp_path / "x.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError):
        write_mask(tmp_path / "x.png", np.full((2, 2), 300))


def test_davis_layout_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 16, 24, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (3, 16, 24), dtype=np.uint8)
    write_davis_sequence(tmp_path, "seq-a", frames, labels, res="480p")
    write_davis_sequence(tmp_path, "seq-b", frames[:2], labels[:2], res="480p")
    write_split(tmp_path, "val", ["seq-b", "seq-a"], year="2017")
    seqs = davis_sequences(tmp_path, "val")
    assert [s.name for s in seqs] == ["seq-b", "seq-a"]
    a = seqs[1]
    assert len(a) == 3 and a.frame_ids == ["00000", "00001", "00002"]
    assert a.image(0).shape == (16, 24, 3)
    np.testing.assert_array_equal(a.all_masks(), labels)
    np.testing.assert_array_equal(a.mask(2), labels[2])
    with pytest.raises(FileNotFoundError, match="resolutions present"):
        davis_sequences(tmp_path, "val", res="1080p")
    with pytest.raises(FileNotFoundError):
        davis_sequences(tmp_path, "nope")


def test_split_lists_both_formats(tmp_path: Path) -> None:
    path = tmp_path / "ImageSets" / "2016" / "val.txt"
    path.parent.mkdir(parents=True)
    path.write_text(
        "/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png\n"
        "/JPEGImages/480p/bear/00001.jpg /Annotations/480p/bear/00001.png\n"
        "\n/JPEGImages/480p/cows/00000.jpg /Annotations/480p/cows/00000.png\n"
    )
    assert read_split(path) == ["bear", "cows"]
    assert find_split_file(tmp_path, "val") == path
    (tmp_path / "ImageSets" / "2017").mkdir()
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("dog\n")
    with pytest.raises(FileNotFoundError, match="give the year"):
        find_split_file(tmp_path, "val")
    assert read_split(find_split_file(tmp_path, "val", "2017")) == ["dog"]


def test_youtube_vos_layout_with_sparse_annotations(tmp_path: Path) -> None:
    base = tmp_path / "valid"
    for stem in ("00000", "00005", "00010"):
        (base / "JPEGImages" / "abc").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(base / "JPEGImages" / "abc" / f"{stem}.jpg")
    write_mask(base / "Annotations" / "abc" / "00000.png", np.ones((8, 8), np.uint8))
    write_mask(base / "Annotations" / "abc" / "00010.png", np.full((8, 8), 2, np.uint8))
    (seq,) = youtube_vos_sequences(tmp_path, "valid")
    assert seq.frame_ids == ["00000", "00005", "00010"]
    assert seq.mask(1) is None
    assert int(seq.mask(2).max()) == 2
    with pytest.raises(FileNotFoundError, match="00005"):
        seq.all_masks()


def test_write_predictions_layout(tmp_path: Path) -> None:
    labels = [np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)]
    write_predictions(tmp_path, "bear", ["00000", "00001"], labels)
    assert sorted(p.name for p in (tmp_path / "bear").iterdir()) == ["00000.png", "00001.png"]


def test_reads_shared_davis2016() -> None:
    seqs = davis_sequences(require_davis(), "val-dev", res="480p")
    assert len(seqs) == 10
    first = seqs[0]
    assert first.image(0).shape == (480, 854, 3)
    mask = first.mask(0)
    assert mask is not None and mask.shape == (480, 854) and set(np.unique(mask)) <= {0, 1}

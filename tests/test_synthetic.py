"""The synthetic multi-object generator: determinism, visibility, distractors, DAVIS-layout output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_vos.config import ConfigError
from edge_vos.data.davis import davis_sequences
from edge_vos.data.synthetic import SyntheticConfig, generate_sequence, write_synthetic_davis


def test_shapes_dtypes_and_determinism() -> None:
    frames, labels = generate_sequence(7, num_frames=12, size=(64, 96), num_objects=3, num_distractors=1)
    assert frames.shape == (12, 64, 96, 3) and frames.dtype == np.uint8
    assert labels.shape == (12, 64, 96) and labels.dtype == np.uint8
    again = generate_sequence(7, num_frames=12, size=(64, 96), num_objects=3, num_distractors=1)
    np.testing.assert_array_equal(frames, again[0])
    np.testing.assert_array_equal(labels, again[1])
    other = generate_sequence(8, num_frames=12, size=(64, 96), num_objects=3, num_distractors=1)
    assert not np.array_equal(labels, other[1])


@pytest.mark.parametrize("seed", range(6))
def test_every_target_is_visible_in_frame_zero_and_moves(seed: int) -> None:
    _, labels = generate_sequence(seed, num_frames=20, size=(96, 160), num_objects=3, num_distractors=2)
    assert set(np.unique(labels[0])) == {0, 1, 2, 3}
    assert labels.max() <= 3  # distractors are background
    for obj in (1, 2, 3):
        assert (labels[0] == obj).sum() > 50
        assert not np.array_equal(labels[0] == obj, labels[-1] == obj)


def test_distractors_change_the_image_but_not_the_labels() -> None:
    f0, l0 = generate_sequence(3, num_frames=6, size=(96, 160), num_objects=2, num_distractors=0)
    f2, l2 = generate_sequence(3, num_frames=6, size=(96, 160), num_objects=2, num_distractors=3)
    # Distractors draw on the frames and, where they pass in front, hide target pixels; they never add labels.
    assert not np.array_equal(f0, f2)
    assert set(np.unique(l2)) <= {0, 1, 2}


def test_objects_occlude_each_other_somewhere() -> None:
    """Over a few seeds some target loses pixels to another layer passing in front of it."""
    occluded = False
    for seed in range(4):
        _, labels = generate_sequence(seed, num_frames=40, size=(96, 160), num_objects=4, num_distractors=2)
        areas = np.stack([(labels == k).sum(axis=(1, 2)) for k in range(1, 5)])
        occluded |= bool((areas.min(axis=1) < 0.6 * areas.max(axis=1)).any())
    assert occluded


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="num_objects"):
        SyntheticConfig(num_objects=0)
    with pytest.raises(ConfigError):
        SyntheticConfig(min_object_size=0.5, max_object_size=0.2)


def test_write_synthetic_davis_folder(tmp_path: Path) -> None:
    names = write_synthetic_davis(tmp_path, 2, seed=5, num_frames=4, size=(48, 64), num_objects=2)
    assert names == ["synth-000", "synth-001"]
    seqs = davis_sequences(tmp_path, "val", res="48p")
    assert [s.name for s in seqs] == names
    masks = seqs[1].all_masks()
    np.testing.assert_array_equal(masks, generate_sequence(6, 4, (48, 64), 2, 2)[1])

"""J and F against hand-computed cases, the toolkit's empty-mask rules, and the val-dev anchor."""

from __future__ import annotations

import numpy as np
import pytest

from edge_vos.evaluation.metrics import (
    bound_pixels,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    evaluate_sequence,
    f_measure,
    seg2bmap,
    summarize,
)

from .conftest import require_davis


def _top_rows(n: int, size: int = 100) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[:n] = True
    return m


def test_iou_hand_cases() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert db_eval_iou(a, b) == 1.0  # both empty
    a[:2, :2] = True  # 4 px
    assert db_eval_iou(a, b) == 0.0  # one empty
    b[:2, :3] = True  # 6 px, 4 shared
    assert db_eval_iou(a, b) == pytest.approx(4 / 6)
    void = np.zeros((4, 4), bool)
    void[:, 2] = True  # hides the 2 extra predicted pixels
    assert db_eval_iou(a, b, void) == 1.0
    stack = db_eval_iou(np.stack([a, np.zeros_like(a)]), np.stack([b, np.zeros_like(b)]))
    np.testing.assert_allclose(stack, [4 / 6, 1.0])


def test_seg2bmap_single_pixel_and_full_mask() -> None:
    seg = np.zeros((4, 4), bool)
    seg[1, 1] = True
    expected = np.zeros((4, 4), bool)
    expected[0:2, 0:2] = True  # the pixel and its upper/left neighbours (half-pixel shift to the origin)
    np.testing.assert_array_equal(seg2bmap(seg), expected)
    # A mask that fills the frame has no boundary at all in the toolkit's convention.
    assert not seg2bmap(np.ones((5, 6), bool)).any()
    assert not seg2bmap(np.zeros((5, 6), bool)).any()


def test_bound_pixels_is_ceil_of_diagonal_fraction() -> None:
    assert bound_pixels((100, 100)) == 2  # ceil(0.008 * 141.4)
    assert bound_pixels((480, 854)) == 8  # ceil(0.008 * 979.6)
    assert bound_pixels((480, 854), bound_th=3) == 3


def test_f_measure_tolerance_is_the_disk_radius() -> None:
    gt = _top_rows(50)
    assert f_measure(gt, gt) == 1.0
    assert f_measure(_top_rows(52), gt) == 1.0  # 2 px away: within ceil(0.008 * diag) = 2
    assert f_measure(_top_rows(53), gt) == 0.0  # 3 px away: no boundary pixel matches
    # Half of the predicted edge within reach: precision = recall = 0.5.
    pred = _top_rows(50)
    pred[:, 50:] = _top_rows(60)[:, 50:]
    f = f_measure(pred, gt)
    assert 0.4 < f < 0.6


def test_f_measure_empty_mask_rules() -> None:
    empty = np.zeros((20, 20), bool)
    obj = np.zeros((20, 20), bool)
    obj[5:10, 5:10] = True
    assert f_measure(empty, empty) == 1.0  # no boundary on either side: P = R = 1
    assert f_measure(empty, obj) == 0.0  # nothing predicted: P = 1, R = 0
    assert f_measure(obj, empty) == 0.0  # predicted on empty truth: P = 0, R = 1
    # A full-frame prediction has no boundary pixels, so against an empty truth F is 1 while J is 0.
    assert f_measure(np.ones_like(empty), empty) == 1.0
    assert db_eval_iou(empty, np.ones_like(empty)) == 0.0
    np.testing.assert_allclose(db_eval_boundary(np.stack([obj, empty]), np.stack([obj, obj])), [1.0, 0.0])


def test_db_statistics_mean_recall_decay() -> None:
    m, r, d = db_statistics(np.array([1, 1, 1, 1, 0, 0, 0, 0], float))
    assert (m, r, d) == (0.5, 0.5, 1.0)
    # Quantile bins overlap: for 8 frames they are [0:3], [2:5], [4:6], [5:8].
    m, r, d = db_statistics(np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]))
    assert m == pytest.approx(0.55) and r == pytest.approx(0.5)
    assert d == pytest.approx(0.8 - 0.3)
    m, r, d = db_statistics(np.array([0.2, np.nan, 0.8, 0.6]))
    assert m == pytest.approx(1.6 / 3)


def test_evaluate_sequence_drops_first_and_last_and_handles_missing_objects() -> None:
    gt = np.zeros((5, 10, 10), np.uint8)
    gt[:, :3, :3] = 1
    gt[:, 6:, 6:] = 2
    pred = gt.copy()
    pred[0] = 0  # first and last frames are not scored
    pred[-1] = 0
    pred[1:4][pred[1:4] == 2] = 0  # object 2 lost on every scored frame
    scores = evaluate_sequence("s", gt, pred)
    assert [s.name for s in scores] == ["s_1", "s_2"]
    assert scores[0].stats["J-Mean"] == 1.0 and scores[0].stats["F-Mean"] == 1.0
    assert scores[1].stats["J-Mean"] == 0.0 and scores[1].stats["F-Mean"] == 0.0
    assert len(scores[0].j) == 3
    table = summarize(scores)
    assert table["J&F-Mean"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="object id 3"):
        evaluate_sequence("s", gt, np.full_like(gt, 3))
    # DAVIS-2016 mode: any non-zero id is the object.
    single = evaluate_sequence("s", (gt > 0).astype(np.uint8), gt * 7, separate_objects=False)
    assert len(single) == 1 and single[0].stats["J-Mean"] == 1.0


def test_void_ground_truth_counts_as_background() -> None:
    gt = np.zeros((3, 8, 8), np.uint8)
    gt[:, :4] = 1
    gt[:, 4:, :] = 255
    scores = evaluate_sequence("v", gt, (gt == 1).astype(np.uint8))
    assert scores[0].stats["J-Mean"] == 1.0


def test_first_frame_copy_on_val_dev_matches_the_anchor() -> None:
    from edge_vos.data.davis import davis_sequences

    scores = []
    for seq in davis_sequences(require_davis(), "val-dev"):
        gt = seq.all_masks()
        scores += evaluate_sequence(seq.name, gt, np.repeat(gt[:1], len(gt), axis=0))
    table = summarize(scores)
    assert round(table["J&F-Mean"], 1) == 26.5
    assert round(table["J-Mean"], 1) == 28.1
    assert round(table["F-Mean"], 1) == 24.9

"""Decoding each object inside its window's reach: the crop's arithmetic, the decode on crops against the
whole-frame decode, the prior's reach, and the tracker's masks with and without it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_vos.backends.base import PartRunner
from edge_vos.backends.torch_backend import TorchRunner
from edge_vos.data.synthetic import generate_sequence
from edge_vos.tracker import TrackerConfig
from edge_vos.tracker.config import PriorConfig
from edge_vos.tracker.pieces import Box
from edge_vos.tracker.prior import _REACH_FLOOR, MotionPrior
from edge_vos.tracker.regions import (
    BATCH_CALL_CELLS,
    CELL,
    WINDOW_STEP,
    CellCrop,
    _batches,
    _rounded,
    decode_objects,
)
from tests.conftest import track_labels

CPU = torch.device("cpu")
HW = (160, 256)  # 10 x 16 cells
# Cells from a crop's cut edge beyond which the crop's decode equals the whole frame's: the decoder's
# receptive field (two 3x3 at /16, two at /8, two at /4, the skips and upsamplings) spans less than this.
EXACT_BEYOND_CELLS = 4


class _WholeFramesOnly(PartRunner):
    """A runner like TensorRT's: whole frames only."""

    name = "whole-frames"

    def __init__(self, inner: TorchRunner) -> None:
        self.inner, self.device = inner, inner.device
        self.calls: list[tuple[int, ...]] = []

    def run_part(self, part: str, objects: int, *inputs: torch.Tensor) -> Sequence[torch.Tensor]:
        self.calls.append(tuple(inputs[0].shape))
        return self.inner.run_part(part, objects, *inputs)


def _inputs(network: torch.nn.Module, objects: int = 3) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    with torch.no_grad():
        _, qv, _, f8, f4 = network.encode_key(torch.randn(1, 3, *HW))
    readout = torch.randn(objects, network.value_dim, HW[0] // CELL, HW[1] // CELL)
    return readout, qv, f8, f4


def test_a_crop_holds_its_box_in_whole_cells_inside_the_frame() -> None:
    cells = (10, 16)
    assert CellCrop.around(Box(20, 40, 33, 47), cells) == CellCrop(1, 3, 2, 3)
    assert CellCrop.around(Box(0, 159, 0, 255), cells).covers(cells)
    assert CellCrop.around(Box(-5, 500, 250, 900), cells) == CellCrop(0, 10, 15, 16)
    assert CellCrop.around(Box(300, 320, -90, -40), cells) == CellCrop(9, 10, 0, 1)  # off the canvas: nearest cell
    crop = CellCrop(1, 3, 2, 5)
    assert crop.cut(torch.zeros(1, 1, 40, 64), 4).shape == (1, 1, 8, 12)
    assert not crop.covers(cells)


def test_without_a_reach_every_object_is_decoded_whole(lite_network) -> None:
    runner = TorchRunner(lite_network, CPU)
    readout, qv, f8, f4 = _inputs(lite_network)
    expected = runner.decode(readout, qv, f8, f4).sigmoid()
    for reach in (None, [None, None, None]):
        probs, regions = decode_objects(runner, readout, qv, f8, f4, reach)
        assert torch.equal(probs, expected) and regions == [None, None, None]


def test_a_cropped_object_matches_the_whole_decode_away_from_the_cut_and_is_zero_outside(lite_network) -> None:
    runner = TorchRunner(lite_network, CPU)
    readout, qv, f8, f4 = _inputs(lite_network)
    whole = runner.decode(readout, qv, f8, f4).sigmoid()
    # Object 0: cut on every side; object 1: no previous box; object 2: against the frame's top-left corner.
    reach = [Box(16, 143, 16, 223), None, Box(0, 150, 0, 200)]
    probs, regions = decode_objects(runner, readout, qv, f8, f4, reach)
    assert probs.shape == whole.shape
    torch.testing.assert_close(probs[1], whole[1])
    crop = CellCrop.around(reach[0], (10, 16))
    assert crop == CellCrop(1, 9, 1, 14)
    assert regions[0] == (slice(16, 144), slice(16, 224)) and regions[1] is None
    inside = torch.zeros(HW, dtype=torch.bool)
    inside[crop.r0 * CELL:crop.r1 * CELL, crop.c0 * CELL:crop.c1 * CELL] = True
    assert torch.all(probs[0, 0][~inside] == 0) and torch.all(probs[0, 0][inside] > 0)
    m = EXACT_BEYOND_CELLS * CELL
    rows = slice(crop.r0 * CELL + m, crop.r1 * CELL - m)
    cols = slice(crop.c0 * CELL + m, crop.c1 * CELL - m)
    torch.testing.assert_close(probs[0, 0, rows, cols], whole[0, 0, rows, cols])
    # Against the frame's own edges the crop is cut nowhere: exact up to the cut edges.
    end_r, end_c = math.floor(150 / CELL) + 1, math.floor(200 / CELL) + 1
    torch.testing.assert_close(probs[2, 0, :(end_r * CELL - m), :(end_c * CELL - m)],
                               whole[2, 0, :(end_r * CELL - m), :(end_c * CELL - m)])


def test_a_runner_that_decodes_whole_frames_only_decodes_every_object_whole(lite_network) -> None:
    runner = _WholeFramesOnly(TorchRunner(lite_network, CPU))
    readout, qv, f8, f4 = _inputs(lite_network)
    probs, regions = decode_objects(runner, readout, qv, f8, f4, [Box(16, 60, 16, 60)] * 3)
    assert regions == [None] * 3 and runner.calls == [tuple(readout.shape)]
    torch.testing.assert_close(probs, runner.inner.decode(readout, qv, f8, f4).sigmoid())


def test_the_window_is_below_the_floor_outside_the_reach_and_at_it_on_its_edge() -> None:
    prior = MotionPrior(PriorConfig(enabled=True, margin=0.5, min_margin_px=1))
    probs = torch.zeros(2, 1, 200, 300)
    probs[0, 0, 80:100, 120:160] = 0.9  # 20 x 40 px
    probs[1, 0, 0:30, 0:20] = 0.9  # in the corner: the reach is clipped to the canvas
    prior.update([1, 2], probs)
    windows = prior.windows([1, 2, 3], (200, 300), CPU)
    reach = prior.reach([1, 2, 3], (200, 300))
    assert reach[2] is None  # no previous box: anywhere
    for row, box in enumerate(reach[:2]):
        assert box is not None
        inside = torch.zeros(200, 300, dtype=torch.bool)
        inside[math.floor(box.y0):math.floor(box.y1) + 1, math.floor(box.x0):math.floor(box.x1) + 1] = True
        assert windows[row, 0][~inside].max() < _REACH_FLOOR
    box = reach[0]
    assert box is not None and 0 < box.y0 < 80 and 99 < box.y1 < 199
    centre_row = windows[0, 0, 90]
    assert centre_row[math.ceil(box.x0)] >= _REACH_FLOOR * 0.9 and centre_row[math.floor(box.x0) - 1] < _REACH_FLOOR
    assert (reach[1].y0, reach[1].x0) == (0.0, 0.0)


def test_the_bundled_tracker_paints_the_same_masks_inside_the_reach_as_over_the_whole_frame() -> None:
    frames, labels = generate_sequence(seed=3, num_frames=12, size=(240, 432), num_objects=3, num_distractors=1)
    results = {inside: track_labels(TrackerConfig(backend="torch", precision="fp32",
                                                  prior=PriorConfig(decode_inside=inside)), frames, labels[0])
               for inside in (True, False)}
    agree = float((results[True] == results[False]).mean())
    assert agree > 0.999, agree
    assert (results[True][1:] > 0).any()


@pytest.mark.parametrize("value", ["yes", 1])
def test_decode_inside_must_be_a_boolean(value: object) -> None:
    from edge_vos.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="decode_inside"):
        from_dict(TrackerConfig, {"prior": {"decode_inside": value}})


_coords = st.floats(-40, 300, allow_nan=False)


def _windows(reach: list[Box | None], cells: tuple[int, int], batches: bool) -> dict[int, tuple[CellCrop, CellCrop]]:
    """Per cropped object, its crop and the window it is decoded on (decode_objects' choice)."""
    crops = {row: CellCrop.around(b, cells) for row, b in enumerate(reach) if b is not None}
    crops = {row: c for row, c in crops.items() if not c.covers(cells)}
    if not batches:
        return {row: (c, c) for row, c in crops.items()}
    return {row: (crops[row], window) for batch in _batches(crops, cells) for row, window in batch.items()}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(boxes=st.lists(st.none() | st.tuples(_coords, _coords, _coords, _coords), min_size=1, max_size=4),
       batches=st.booleans())
def test_any_reach_gives_every_object_its_plane_and_nothing_outside_its_crop(lite_network, boxes, batches) -> None:
    """Boxes anywhere (outside the canvas, inverted, thin), some objects without one, crops batched or not: each
    object's plane is the whole decode, or on its crop its window's decode (cut to the crop) and 0 elsewhere."""
    runner = TorchRunner(lite_network, CPU)
    runner.batches_regions = batches
    readout, qv, f8, f4 = _inputs(lite_network, len(boxes))
    reach = [None if b is None else Box(min(b[0], b[1]), max(b[0], b[1]), min(b[2], b[3]), max(b[2], b[3]))
             for b in boxes]
    probs, regions = decode_objects(runner, readout, qv, f8, f4, reach)
    assert probs.shape == (len(boxes), 1, *HW) and bool(((probs >= 0) & (probs <= 1)).all())
    cells = (HW[0] // CELL, HW[1] // CELL)
    windows = _windows(reach, cells, batches)
    if windows:
        union = CellCrop(min(w.r0 for _, w in windows.values()), max(w.r1 for _, w in windows.values()),
                         min(w.c0 for _, w in windows.values()), max(w.c1 for _, w in windows.values()))
        if batches:  # rounded as the windows are
            union = union.window(_rounded(union.shape, cells), cells)
        if len(windows) < len(reach):  # an object decoded whole: the frame terms over the whole grid serve all
            union = CellCrop(0, cells[0], 0, cells[1])
    for row in range(len(reach)):
        if row not in windows:
            torch.testing.assert_close(probs[row], runner.decode(readout[row:row + 1], qv, f8, f4).sigmoid()[0])
            assert regions[row] is None
            continue
        crop, window = windows[row]
        assert regions[row] == crop.pixels()
        # the frame's terms over the windows' union (the whole grid beside an object decoded whole), or over
        # the window alone where the union is the larger
        whole_grid = len(windows) < len(reach)
        region = union if whole_grid or union.area <= sum(w.area for _, w in windows.values()) else window
        terms = runner.decode_frame_terms(region.cut(qv, 1), region.cut(f8, 2), region.cut(f4, 4))
        cut = window.within(region)
        expected = runner.decode_region(window.cut(readout[row:row + 1], 1),
                                        *(cut.cut(t, scale) for t, scale in zip(terms, (1, 1, 2, 4), strict=True)))
        expected = crop.within(window).cut(expected.sigmoid(), CELL)
        torch.testing.assert_close(crop.cut(probs[row:row + 1], CELL), expected)
        assert float(probs[row].sum()) == pytest.approx(float(expected.sum()), rel=1e-5)


_cell_crops = st.builds(
    lambda r0, h, c0, w: CellCrop(r0, min(r0 + h, 23), c0, min(c0 + w, 40)),
    st.integers(0, 22), st.integers(1, 23), st.integers(0, 39), st.integers(1, 40),
)


@given(crops=st.lists(_cell_crops, min_size=1, max_size=8))
def test_batched_windows_hold_their_crops_share_a_shape_and_pad_less_than_a_call_costs(crops) -> None:
    cells = (23, 40)
    by_row = dict(enumerate(crops))
    batches = _batches(by_row, cells)
    assert sorted(row for batch in batches for row in batch) == list(by_row)
    for batch in batches:
        shapes = {window.shape for window in batch.values()}
        assert len(shapes) == 1
        for row, window in batch.items():
            crop = by_row[row]
            assert window.r0 <= crop.r0 and crop.r1 <= window.r1 and window.c0 <= crop.c0 and crop.c1 <= window.c1
            assert 0 <= window.r0 and window.r1 <= cells[0] and 0 <= window.c0 and window.c1 <= cells[1]
        # every crop but the batch's first joined because padding it in cost fewer cells than its own call; the
        # windows are then rounded up to whole WINDOW_STEP cells (or the grid)
        tight = (max(by_row[row].shape[0] for row in batch), max(by_row[row].shape[1] for row in batch))
        padding = sum(tight[0] * tight[1] - by_row[row].area for row in batch)
        assert padding < BATCH_CALL_CELLS * (len(batch) - 1) or (len(batch) == 1 and padding == 0)
        assert shapes == {(min(-(-tight[0] // WINDOW_STEP) * WINDOW_STEP, cells[0]),
                           min(-(-tight[1] // WINDOW_STEP) * WINDOW_STEP, cells[1]))}


def test_crops_of_one_size_decode_in_one_call_and_a_far_larger_one_alone(lite_network) -> None:
    readout, qv, f8, f4 = _inputs(lite_network, 4)
    runner = _CountingRunner(lite_network)
    same = [Box(0, 40, 0, 40), Box(100, 140, 200, 240), Box(0, 40, 200, 240)]  # 3 x 3 cells each
    decode_objects(runner, readout[:3], qv, f8, f4, same)
    assert runner.region_batches == [3]
    runner.region_batches.clear()
    runner.batches_regions = False
    decode_objects(runner, readout[:3], qv, f8, f4, same)
    assert runner.region_batches == [1, 1, 1]


class _CountingRunner(TorchRunner):
    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__(network, CPU)
        self.term_regions: list[tuple[int, int]] = []
        self.region_batches: list[int] = []

    def run_part(self, part: str, objects: int, *inputs: torch.Tensor) -> list[torch.Tensor]:
        if part == "decoder_frame":
            self.term_regions.append(tuple(inputs[0].shape[-2:]))
        if part == "decoder_region":
            self.region_batches.append(inputs[0].shape[0])
        return super().run_part(part, objects, *inputs)


def test_the_frames_terms_run_once_over_crops_that_overlap_and_per_crop_when_far_apart(lite_network) -> None:
    """Overlapping crops share one computation of the decoder's frame terms over their union; two small crops in
    opposite corners, whose union would be most of the frame, get theirs each. Either way each crop's decode
    equals the eager decoder on the frame terms of the region they were computed on."""
    readout, qv, f8, f4 = _inputs(lite_network, 2)
    runner = _CountingRunner(lite_network)
    near = [Box(16, 100, 16, 140), Box(40, 120, 60, 200)]  # cells rows 1-6 / 2-7, columns 1-8 / 3-12
    probs, _ = decode_objects(runner, readout, qv, f8, f4, near)
    # one batch: both crops (6 x 8 and 6 x 10 cells) decoded on windows of the larger size rounded up to whole
    # WINDOW_STEP cells, 8 x 12, centred on each crop and moved inside the grid
    assert runner.region_batches == [2]
    windows = [CellCrop(0, 8, 0, 12), CellCrop(1, 9, 2, 14)]
    # the frame terms over the windows' union (9 x 14 cells) rounded as the windows are: the whole 10 x 16 grid
    assert runner.term_regions == [(10, 16)]
    union = CellCrop(0, 10, 0, 16)
    net = lite_network.decoder
    with torch.no_grad():
        terms = net.frame_terms(union.cut(qv, 1), union.cut(f8, 2), union.cut(f4, 4))
        for row, (box, window) in enumerate(zip(near, windows, strict=True)):
            crop = CellCrop.around(box, (10, 16))
            cut = window.within(union)
            expected = net.forward_with_terms(
                window.cut(readout[row:row + 1], 1), *(cut.cut(t, s) for t, s in zip(terms, (1, 1, 2, 4), strict=True))
            ).sigmoid()
            torch.testing.assert_close(crop.cut(probs[row:row + 1], CELL), crop.within(window).cut(expected, CELL))
    runner.term_regions.clear()
    decode_objects(runner, readout, qv, f8, f4, [Box(0, 20, 0, 20), Box(140, 159, 230, 255)])
    assert runner.term_regions == [(4, 4), (4, 4)]

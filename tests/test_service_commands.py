"""Command parsing and validation: every malformed or hostile request becomes a CommandError naming the
problem; valid prompts become masks at the frame's size."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from edge_vos.prompt import DEFAULT_METHOD
from edge_vos.service.commands import (
    AddObject,
    Command,
    CommandError,
    Limits,
    Query,
    RemoveObject,
    Request,
    Reset,
    fit_mask,
    parse_request,
)
from edge_vos.wire.protocol import encode_rle

from .conftest import CUTIE, require_data

LIMITS = Limits(frame_hw=(120, 160), max_polygon_points=100)


def parse_command(raw: bytes, limits: Limits) -> Command:
    """The command of a valid request (the request id is the control thread's and tested there)."""
    return parse_request(raw, limits).command


def _png(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _cmd(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def _square(h: int = 120, w: int = 160) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[20:60, 30:90] = 1
    return mask


def test_simple_commands() -> None:
    assert isinstance(parse_command(_cmd(cmd="reset"), LIMITS), Reset)
    assert parse_request(_cmd(cmd="stats", req="a"), LIMITS) == Request(Query("stats"), "a")
    remove = parse_request(_cmd(cmd="remove", id=4, req=9), LIMITS)
    assert isinstance(remove.command, RemoveObject) and remove.command.obj_id == 4 and remove.req == 9


def test_add_by_png_rle_polygon_box() -> None:
    square = _square()
    by_png = parse_command(_cmd(cmd="add", id=2, mask=_png(square)), LIMITS)
    assert isinstance(by_png, AddObject) and by_png.frame is None
    np.testing.assert_array_equal(by_png.mask, square.astype(bool))
    rle = encode_rle(square, [1])[0]
    by_rle = parse_command(_cmd(cmd="add", id=2, rle={"size": rle["size"], "counts": rle["counts"]}, frame=7), LIMITS)
    assert by_rle.frame == 7
    np.testing.assert_array_equal(by_rle.mask, square.astype(bool))
    # Uncompressed RLE (column-major run lengths starting with background).
    counts = [0, 120 * 160]
    by_list = parse_command(_cmd(cmd="add", id=1, rle={"size": [120, 160], "counts": counts}), LIMITS)
    assert by_list.mask.all()
    poly = parse_command(_cmd(cmd="add", id=3, polygon=[[10, 10], [50, 10], [50, 40], [10, 40]]), LIMITS)
    assert poly.mask[20, 20] and not poly.mask[100, 100]
    box = parse_command(_cmd(cmd="add", id=3, box=[150, 100, 10.4, 5]), LIMITS)  # corners in any order
    assert box.prompt.box == (10, 5, 150, 100) and box.mask is None and box.method == DEFAULT_METHOD


def test_add_by_points_and_combinations() -> None:
    clicks = parse_command(_cmd(cmd="add", id=1, points=[[10, 20], [159.5, 119]], labels=[1, 0]), LIMITS)
    assert isinstance(clicks, AddObject) and clicks.mask is None
    np.testing.assert_array_equal(clicks.prompt.points, [[10, 20], [159.5, 119]])
    np.testing.assert_array_equal(clicks.prompt.labels, [1, 0])
    assert clicks.prompt.box is None and clicks.prompt.mask is None
    both = parse_command(_cmd(cmd="add", id=1, box=[5, 5, 100, 100], points=[[50, 50]], labels=[0],
                              method="grabcut"), LIMITS)
    assert both.prompt.box == (5, 5, 100, 100) and both.method == "grabcut"
    # A polygon with a box or clicks is a coarse mask to refine; alone it is taken as is unless refine.
    square = [[10, 10], [50, 10], [50, 40], [10, 40]]
    refined = parse_command(_cmd(cmd="add", id=3, polygon=square, points=[[30, 30]], labels=[1]), LIMITS)
    assert refined.mask is None and refined.prompt.mask[20, 20] and not refined.prompt.mask[100, 100]
    as_is = parse_command(_cmd(cmd="add", id=3, polygon=square), LIMITS)
    assert as_is.prompt is None and as_is.mask[20, 20]
    asked = parse_command(_cmd(cmd="add", id=3, polygon=square, refine=True), LIMITS)
    assert asked.mask is None and asked.prompt.mask[20, 20] and asked.prompt.box is None
    negatives_in_box = parse_command(_cmd(cmd="add", id=2, box=[0, 0, 80, 80], points=[[5, 5]], labels=[0]), LIMITS)
    assert negatives_in_box.prompt.negatives.tolist() == [[5, 5]]


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (b"\xff\xfe\x00garbage", "", "not UTF-8"),
        (b"{not json", "", "not valid JSON"),
        (b"[1, 2]", "", "JSON object"),
        (b"[" * 100000 + b"]" * 100000, "", "JSON"),
        (_cmd(id=1), "cmd", "required"),
        (_cmd(cmd="format_disk"), "cmd", "unknown command"),
        (_cmd(cmd=["add"]), "cmd", "required"),
        (_cmd(cmd="remove"), "id", "required"),
        (_cmd(cmd="remove", id="1"), "id", "integer"),
        (_cmd(cmd="remove", id=True), "id", "integer"),
        (_cmd(cmd="remove", id=0), "id", "1..254"),
        (_cmd(cmd="remove", id=255), "id", "1..254"),
        (_cmd(cmd="remove", id=1, extra=1), "extra", "unknown field"),
        (_cmd(cmd="stats", req={"x": 1}), "req", "integer or a string"),
        (_cmd(cmd="add", id=1), "mask", "give a mask, rle, polygon, box or points"),
        (_cmd(cmd="add", id=1, mask=_png(_square()), polygon=[[0, 0]] * 3), "polygon", "at most one of"),
        (_cmd(cmd="add", id=1, mask=12), "mask", "base64"),
        (_cmd(cmd="add", id=1, mask="!!!notbase64"), "mask", "base64"),
        (_cmd(cmd="add", id=1, mask=base64.b64encode(b"GIF89a....").decode()), "mask", "PNG"),
        (_cmd(cmd="add", id=1, mask=_png(np.zeros((120, 160)))), "mask", "empty"),
        (_cmd(cmd="add", id=1, mask=_png(_square(100, 100))), "mask", "100x100 but the frame is 160x120"),
        (_cmd(cmd="add", id=1, rle="abc"), "rle", "size"),
        (_cmd(cmd="add", id=1, rle={"size": [120], "counts": "a"}), "rle.size", "integers"),
        (_cmd(cmd="add", id=1, rle={"size": [100000, 100000], "counts": "a"}), "rle.size", "does not fit"),
        (_cmd(cmd="add", id=1, rle={"size": [120, 160], "counts": [5, -1]}), "rle.counts", "non-negative"),
        (_cmd(cmd="add", id=1, rle={"size": [120, 160], "counts": [5, 7]}), "rle.counts", "sum"),
        (_cmd(cmd="add", id=1, rle={"size": [120, 160], "counts": {"a": 1}}), "rle.counts", "string"),
        (_cmd(cmd="add", id=1, box=[0, 0, 2, 2]), "box", "4x4"),
        (_cmd(cmd="add", id=1, box=[10, 10, 10, 50]), "box", "empty"),
        (_cmd(cmd="add", id=1, box=[500, 500, 600, 600]), "box", "inside the 160x120 frame"),
        (_cmd(cmd="add", id=1, box=["1", 0, 10, 10]), "box", "numbers"),
        (_cmd(cmd="add", id=1, box=[True, 0, 10, 10]), "box", "numbers"),
        (_cmd(cmd="add", id=1, points=[[10, 10]]), "labels", "required with points"),
        (_cmd(cmd="add", id=1, labels=[1]), "labels", "without points"),
        (_cmd(cmd="add", id=1, points=[[10, 10], [20, 20]], labels=[1]), "labels", "1 labels for 2 points"),
        (_cmd(cmd="add", id=1, points=[[10, 10]], labels=[2]), "labels[0]", "1 (object) or 0"),
        (_cmd(cmd="add", id=1, points=[[10, 10]], labels=[True]), "labels[0]", "1 (object) or 0"),
        (_cmd(cmd="add", id=1, points=[[10, 10]], labels=["1"]), "labels[0]", "1 (object) or 0"),
        (_cmd(cmd="add", id=1, points=[[10, 10]], labels=[0]), "labels", "at least one point must be labelled 1"),
        (_cmd(cmd="add", id=1, points=[[10, 10], [160, 5]], labels=[1, 1]), "points[1]", "outside the 160x120"),
        (_cmd(cmd="add", id=1, points=[[-1, 5]], labels=[1]), "points[0]", "outside"),
        (_cmd(cmd="add", id=1, points=[[5, 5, 5]], labels=[1]), "points", "[x, y] pairs"),
        (_cmd(cmd="add", id=1, points=[], labels=[]), "points", "1..64"),
        (_cmd(cmd="add", id=1, points=[[5, 5]] * 65, labels=[1] * 65), "points", "1..64"),
        (_cmd(cmd="add", id=1, points=[[5, "x"]], labels=[1]), "points", "numbers"),
        (_cmd(cmd="add", id=1, box=[0, 0, 10, 10], method="magic"), "method", "one of"),
        (_cmd(cmd="add", id=1, mask=_png(_square()), method="grabcut"), "method", "taken as is"),
        (_cmd(cmd="add", id=1, box=[0, 0, 10, 10], refine="yes"), "refine", "true or false"),
        (_cmd(cmd="add", id=1, box=[0, 0, 10, 10], refine=True), "refine", "none was given"),
        (_cmd(cmd="add", id=1, box=[0, 0, 10]), "box", "x0, y0, x1, y1"),
        (_cmd(cmd="add", id=1, box=["a", 0, 10, 10]), "box", "numbers"),
        (_cmd(cmd="add", id=1, box=[0, 0, 1e308 * 10, 10]), "box", "finite numbers"),
        (_cmd(cmd="add", id=1, polygon=[[0, 0], [1, 1]]), "polygon", "3..100"),
        (_cmd(cmd="add", id=1, polygon=[[0, 0]] * 101), "polygon", "3..100"),
        (_cmd(cmd="add", id=1, polygon=[[0, 0], [1, 1], [1e9, 5]]), "polygon[2]", "outside"),
        (_cmd(cmd="add", id=1, polygon=[[0, 0], [1, 1], [2]]), "polygon[2]", "[x, y]"),
        (_cmd(cmd="add", id=1, polygon=[[-50, -50], [-40, -50], [-40, -40]]), "polygon", "no pixel"),
        (_cmd(cmd="add", id=1, box=[0, 0, 10, 10], frame=-3), "frame", ">= 0"),
        (_cmd(cmd="add", id=1, box=[0, 0, 10, 10], frame="previous"), "frame", "integer"),
        (_cmd(cmd="add", id=1, box=[0, 0, 10, 10], resize="yes"), "resize", "true or false"),
    ],
)
def test_hostile_and_malformed_requests(raw: bytes, field: str, message: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(raw, LIMITS)
    assert info.value.field == field
    assert message in str(info.value)
    reply = info.value.to_reply()
    assert reply["ok"] is False and "req" not in reply and message in reply["error"]


def test_an_invalid_request_keeps_its_id_for_the_control_thread() -> None:
    with pytest.raises(CommandError) as info:
        parse_request(_cmd(cmd="remove", id=0, req="r-7"), LIMITS)
    assert info.value.req == "r-7" and info.value.field == "id"
    with pytest.raises(CommandError) as info:  # an id that is itself invalid is not echoed
        parse_request(_cmd(cmd="ping", req=[1]), LIMITS)
    assert info.value.req is None and info.value.field == "req"


def test_huge_png_mask_is_refused_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("L", (8000, 8000), 1).save(buf, format="PNG")  # tiny file, 64 Mpixel when decoded
    raw = _cmd(cmd="add", id=1, mask=base64.b64encode(buf.getvalue()).decode())
    with pytest.raises(CommandError, match="larger than"):
        parse_command(raw, Limits(frame_hw=(480, 854)))
    with pytest.raises(CommandError, match="too large"):  # for a small frame the text itself is too long
        parse_command(raw, LIMITS)


def test_add_before_first_frame_is_an_error() -> None:
    with pytest.raises(CommandError, match="no frame has arrived"):
        parse_command(_cmd(cmd="add", id=1, box=[0, 0, 10, 10]), Limits(frame_hw=None))


def test_resize_policy() -> None:
    frame_hw = (480, 854)
    narrow = np.ones((480, 853), np.uint8)
    with pytest.raises(CommandError, match="853x480 but the frame is 854x480"):
        fit_mask(narrow, frame_hw, resize=False, tolerance=0.02)
    assert fit_mask(narrow, frame_hw, resize=True, tolerance=0.02).shape == frame_hw
    with pytest.raises(CommandError, match="tolerance"):
        fit_mask(np.ones((240, 427), np.uint8), frame_hw, resize=True, tolerance=0.02)
    raw = _cmd(cmd="add", id=1, mask=_png(np.pad(_square(), ((0, 0), (0, 1)))), resize=True)  # 161 wide
    assert parse_command(raw, LIMITS).mask.shape == (120, 160)


def test_judo_frame5_mask_policy() -> None:
    """The real 853-px mask of judo frame 5: refused without resize, accepted (nearest) with it."""
    path = require_data(CUTIE / "masks" / "judo" / "00005.png", "the judo clip's masks")
    from edge_vos.data.davis import read_mask

    mask = read_mask(path)
    assert mask.shape == (480, 853)
    limits = Limits(frame_hw=(480, 854))
    new_id = int(mask.max())
    rle = encode_rle(mask, [new_id])[0]
    raw = {"cmd": "add", "id": new_id, "rle": {"size": rle["size"], "counts": rle["counts"]}}
    with pytest.raises(CommandError, match="853x480 but the frame is 854x480"):
        parse_command(json.dumps(raw).encode(), limits)
    add = parse_command(json.dumps({**raw, "resize": True}).encode(), limits)
    assert add.mask.shape == (480, 854)
    assert abs(int(add.mask.sum()) - int((mask == new_id).sum())) < 0.01 * (mask == new_id).sum() + 500

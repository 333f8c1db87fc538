"""Corrections (issue #21): `add` with `"correct": true` clicks on a tracked object's error on a recent frame;
the service starts from the object's tracked mask there, answers with the corrected mask, and the track goes on
from it. Through the control socket, with the fake tracker (objects stay where their last prompt put them, so
what it tracks after a correction is exactly the corrected mask) on a synthetic scene and the bundled prompt
network; bad input keeps the API's errors. The browser flow: test_view_browser.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_vos.client import CommandClient, CommandFailed, Subscriber, correction_mask
from edge_vos.data.synthetic import generate_sequence
from edge_vos.prompt import make_prompt, with_coarse_mask
from edge_vos.prompt.methods import PromptMasks
from edge_vos.service.commands import CommandError, Limits, parse_request
from edge_vos.service.pipeline import Service

from .fakes import ArrayReader, FakeTracker
from .service_support import masks, running, service_config, wait_for

H, W = 240, 432
LIMITS = Limits(frame_hw=(H, W))


def _scene() -> tuple[np.ndarray, np.ndarray]:
    frames, labels = generate_sequence(3, 1, (H, W), 3, 1)
    return frames, labels[0]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _halves(truth: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The object's left half (a mask that misses a part) and a click in the missed right half."""
    ys, xs = np.nonzero(truth)
    middle = int(np.median(xs))
    left = truth.copy()
    left[:, middle:] = False
    yy, xx = np.nonzero(truth & ~left)
    i = len(yy) // 2
    return left, (float(xx[i]) + 0.5, float(yy[i]) + 0.5)


@pytest.fixture(scope="module")
def stream() -> Iterator[tuple[Service, np.ndarray]]:
    """A looping still frame of the scene; object 1 starts from half its mask (the tracker "missed" a part)."""
    frames, truth = _scene()
    start, _ = _halves(truth == 1)
    first = start.astype(np.uint8)
    first[truth == 2] = 2
    config = service_config(source={"pace": "realtime", "fps": 30.0, "loop": True},
                            control={"history": 20, "reply_timeout_s": 20})
    with running(config, ArrayReader(np.repeat(frames, 4, axis=0), mask=first), FakeTracker(delay_s=0.005)) as svc:
        with CommandClient(svc.control.last_endpoint, timeout_s=20) as ctl:
            wait_for(lambda: ctl.stats()["frames_processed"] > 3, timeout_s=20)
        yield svc, truth


def _ctl(service: Service) -> CommandClient:
    return CommandClient(service.control.last_endpoint, timeout_s=20)


def test_a_positive_click_on_a_missed_part_fixes_the_mask_and_the_track_goes_on_from_it(stream) -> None:
    service, truth = stream
    _, click = _halves(truth == 1)
    with _ctl(service) as ctl, Subscriber(service.publisher.last_endpoint, timeout_s=10) as sub:
        reply = ctl.correct(1, [click], [1], method="learned")  # no frame: the latest one tracked
        assert reply["ok"] and reply["corrected"] and reply["id"] == 1
        assert reply["frame"] <= ctl.stats()["recent_frames"][1]
        fixed = correction_mask(reply)
        assert fixed.shape == (H, W) and int(fixed.sum()) == reply["area"]
        assert _iou(fixed, truth == 1) > 0.9  # from half the object (IoU 0.5) to all of it
        # Frames tracked after the correction (the fake tracker holds each object's last prompt mask).
        after = [m for m in masks(sub, 12) if m.header["capture_seq"] > reply["frame"]][:3]
    assert after and all(_iou(m.labels == 1, fixed) > 0.99 for m in after)
    assert all(_iou(m.labels == 2, truth == 2) > 0.99 for m in after)  # the other object is untouched


def test_a_negative_click_starts_from_the_current_mask_and_a_second_from_the_first(stream) -> None:
    service, truth = stream
    with _ctl(service) as ctl:
        first = ctl.correct(1, [_halves(truth == 1)[1]], [1])
        frame = first["frame"]  # from now on this frame, by its capture_seq
        grown = correction_mask(first)
        ys, xs = np.nonzero(grown)
        # A negative click alone is a valid correction: it says where the object is not, the mask says where it is.
        reply = ctl.correct(2, [[float(np.nonzero(truth == 2)[1].mean()), float(np.nonzero(truth == 2)[0].mean())]],
                            [0], frame=frame, method="grabcut")
        assert reply["ok"]
        # A second correction on the same frame starts from the first one's result, not from the tracked mask.
        again = ctl.correct(1, [[float(xs[0]) + 0.5, float(ys[0]) + 0.5]], [1], frame=frame)
        assert _iou(correction_mask(again), grown) > 0.9


def test_corrections_keep_the_apis_bad_input_errors(stream) -> None:
    service, _ = stream
    with _ctl(service) as ctl:
        first, last = ctl.stats()["recent_frames"]
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({"id": 7, "points": [[10, 10]], "labels": [1]}, "id", "object 7 is not tracked"),
            ({"id": 1, "points": [[10, 10]], "labels": [1], "frame": first - 1 if first else last + 1000}, "frame",
             "not among the recent frames"),
            ({"id": 1}, "points", "needs clicks"),
            ({"id": 1, "points": [[10, 10]], "labels": [1], "polygon": [[0, 0], [9, 0], [9, 9]]}, "polygon",
             "current mask"),
            ({"id": 1, "points": [[10, 10]], "labels": [1], "correct": "yes"}, "correct", "true or false"),
            ({"id": 1, "points": [[10, 10]], "labels": [1, 0]}, "labels", "one label per point"),
            ({"id": 1, "points": [[W + 5, 10]], "labels": [1]}, "points[0]", "outside the 432x240 frame"),
        ]
        for fields, field, message in cases:
            with pytest.raises(CommandFailed) as info:
                ctl.request({"cmd": "add", "correct": True, **fields, "req": "c1"})
            reply = info.value.reply
            assert reply["field"] == field and message in reply["error"] and reply["req"] == "c1", reply
        assert ctl.ping()  # and the service goes on


def test_the_correction_grammar() -> None:
    request = parse_request(json.dumps({"cmd": "add", "id": 3, "correct": True, "points": [[5, 5]],
                                        "labels": [0], "req": 4}).encode(), LIMITS)
    add = request.command
    assert add.correct and add.frame is None and add.prompt is not None and request.req == 4
    assert add.prompt.mask is None and list(add.prompt.labels) == [0]  # the mask comes from the tracker
    with pytest.raises(CommandError, match="no frame has arrived"):
        parse_request(b'{"cmd": "add", "id": 3, "correct": true, "points": [[5, 5]], "labels": [1]}',
                      Limits(frame_hw=None))


def test_the_bundled_network_corrects_from_the_current_mask() -> None:
    """Today's prompt network, given the object's current mask and one click on its error, returns the
    object: a half mask plus a click on the missed half, and a mask grown over the background plus a
    negative click there (synthetic scene, all three objects)."""
    import cv2

    frames, truth = _scene()
    network = PromptMasks(None)
    assert network.load(), network.load_error
    for obj in (1, 2, 3):
        target = truth == obj
        half, inside = _halves(target)
        grown = cv2.dilate(target.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
        yy, xx = np.nonzero(grown & ~target)
        outside = (float(xx[len(xx) // 2]) + 0.5, float(yy[len(yy) // 2]) + 0.5)
        for coarse, click, label in ((half, inside, 1), (grown, outside, 0)):
            prompt = with_coarse_mask(make_prompt((H, W), points=[click], labels=[label], mask_follows=True), coarse)
            out = network(frames[0], prompt, "learned")
            assert _iou(coarse, target) < 0.55 and _iou(out, target) > 0.9, (obj, label)


def test_ctl_correct_prints_the_reply_and_saves_the_mask(stream, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from edge_vos.cli import main

    service, truth = stream
    _, click = _halves(truth == 1)
    rc = main(["ctl", "--endpoint", service.control.last_endpoint, "--timeout", "20", "correct", "1",
               f"{click[0]},{click[1]}", "--save", str(tmp_path / "fixed.png")])
    reply = json.loads(capsys.readouterr().out)
    assert rc == 0 and reply["corrected"] and reply["rle"]["counts"].endswith("runs>")
    saved = np.asarray(Image.open(tmp_path / "fixed.png")) > 0
    assert int(saved.sum()) == reply["area"]
    rc = main(["ctl", "--endpoint", service.control.last_endpoint, "--timeout", "20", "correct", "9", "5,5"])
    assert rc == 1 and "not tracked" in json.loads(capsys.readouterr().out)["error"]

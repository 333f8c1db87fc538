"""Sources under change and failure (issue #13 item 3): a folder whose files disappear, unreadable files,
looping folders, and a back-off that grows when reopening succeeds but delivers nothing."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_vos.client import CommandClient
from edge_vos.service.capture import CaptureThread, FrameQueue
from edge_vos.service.sources import FolderReader, SourceError

from .fakes import FakeTracker
from .service_support import H, W, running, service_config


def _folder(path: Path, n: int) -> Path:
    """n PNG frames whose top-left pixel holds their index."""
    path.mkdir()
    for i in range(n):
        image = np.full((H, W, 3), 40, np.uint8)
        image[0, 0] = i
        cv2.imwrite(str(path / f"{i:05d}.png"), image)
    return path


class IndexRecorder(FakeTracker):
    """Records which file each frame came from; `on_index` runs before the step of that frame."""

    def __init__(self, on_index: dict[int, Any] | None = None) -> None:
        super().__init__()
        self.seen: list[int] = []
        self.on_index = on_index or {}

    def step(self, image: np.ndarray, mask: Any = None, objects: Any = None, **kwargs: Any) -> Any:
        index = int(image[0, 0, 0])
        self.seen.append(index)
        if index in self.on_index:
            self.on_index.pop(index)()
        return super().step(image, mask, objects)


def test_folder_whose_files_disappear_resumes_where_it_was(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "frames", 50)

    def remove() -> None:
        for i in range(20, 35):
            (folder / f"{i:05d}.png").unlink()

    tracker = IndexRecorder({10: remove})
    config = service_config(source={"uri": str(folder), "pace": "fastest", "loop": False})
    with running(config, None, tracker) as service:
        assert service.wait(20)
        state = service.capture.state
    assert tracker.seen == [*range(20), *range(35, 50)]
    assert state == "ended" and service.capture.reconnects == 0 and service.exit_error is None


def test_unreadable_files_are_skipped_with_a_counted_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _folder(tmp_path / "frames", 12)
    (folder / "00004.png").write_bytes(b"not a png at all")
    (folder / "00007.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    tracker = IndexRecorder()
    config = service_config(source={"uri": str(folder), "pace": "fastest"})
    with caplog.at_level(logging.WARNING, "edge_vos.service.sources"), running(config, None, tracker) as service:
        with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            assert service.wait(10)
            stats = ctl.stats()
    assert tracker.seen == [0, 1, 2, 3, 5, 6, 8, 9, 10, 11]
    assert stats["source"]["unreadable"] == 2 and stats["dropped"]["unreadable"] == 2
    assert service.metrics.value("frames_dropped_total", {"reason": "unreadable"}) == 2
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 2 and "00007.png (2 skipped so far)" in warnings[1]


def test_folder_loops_from_its_first_file_and_picks_up_new_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "frames", 6)
    extra = np.full((H, W, 3), 40, np.uint8)
    extra[0, 0] = 99

    def add_file() -> None:
        cv2.imwrite(str(folder / "00099.png"), extra)

    tracker = IndexRecorder({2: add_file})
    config = service_config(source={"uri": str(folder), "pace": "fastest", "loop": True},
                            pipeline={"max_frames": 15})
    with running(config, None, tracker) as service:
        assert service.wait(10)
    assert tracker.seen == [0, 1, 2, 3, 4, 5, 99, 0, 1, 2, 3, 4, 5, 99, 0]


def test_folder_that_vanishes_reconnects_and_resumes(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "frames", 10)
    reader = FolderReader(folder)
    reader.open()
    assert [int(reader.read()[0, 0, 0]) for _ in range(4)] == [0, 1, 2, 3]
    hidden = tmp_path / "hidden"
    folder.rename(hidden)
    with pytest.raises(SourceError, match="cannot list folder"):
        reader.open()
    hidden.rename(folder)
    reader.open()  # a reconnect: rescans and resumes after the last file read
    assert [int(reader.read()[0, 0, 0]) for _ in range(6)] == [4, 5, 6, 7, 8, 9]
    assert reader.read() is None


class OpensButNeverDelivers:
    """A camera whose device node opens but whose first read always fails (a wedged driver)."""

    live = True
    description = "wedged camera"
    unreadable = 0

    def __init__(self) -> None:
        self.opens = 0

    def open(self) -> None:
        self.opens += 1

    def read(self) -> np.ndarray | None:
        raise SourceError("no frame")

    def close(self) -> None:
        pass

    def nominal_fps(self) -> float | None:
        return None

    def initial_mask(self) -> np.ndarray | None:
        return None


def test_back_off_grows_and_gives_up_when_reopening_delivers_nothing() -> None:
    reader = OpensButNeverDelivers()
    config = service_config(source={"reconnect_initial_s": 0.05, "reconnect_max_s": 0.4, "reconnect_attempts": 4})
    stop = threading.Event()
    delays: list[str] = []
    capture = CaptureThread(reader, FrameQueue(2), config.source, "fastest", stop,
                            on_state=lambda state, detail: delays.append(detail) if state == "reconnecting" else None)
    capture.start()
    capture.join(10)
    assert not capture.is_alive() and capture.state == "failed"
    assert reader.opens == 5
    assert [d.rsplit("in ", 1)[1] for d in delays] == ["0.05 s", "0.1 s", "0.2 s", "0.4 s"]


class FakeCapture:
    """Stands in for cv2.VideoCapture of a V4L2 camera that supports 1280x720 MJPG at 30 fps at most."""

    def __init__(self, target: Any, api: int, params: Any = None) -> None:
        self.calls: list[tuple[int, float]] = []
        self.props = {cv2.CAP_PROP_FRAME_WIDTH: 640.0, cv2.CAP_PROP_FRAME_HEIGHT: 480.0, cv2.CAP_PROP_FPS: 30.0,
                      cv2.CAP_PROP_FOURCC: float(cv2.VideoWriter_fourcc(*"YUYV"))}
        FakeCapture.last = self

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def set(self, prop: int, value: float) -> bool:
        self.calls.append((prop, value))
        limits = {cv2.CAP_PROP_FRAME_WIDTH: 1280, cv2.CAP_PROP_FRAME_HEIGHT: 720, cv2.CAP_PROP_FPS: 30}
        self.props[prop] = min(value, limits.get(prop, value))
        return True

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def release(self) -> None:
        pass


def test_camera_settings_are_asked_in_order_and_what_arrives_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from edge_vos.service import sources

    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCapture)
    camera = {"width": 1920, "height": 1080, "fps": 60, "pixel_format": "MJPG"}
    config = service_config(source={"uri": "/dev/video0", "camera": camera})
    reader = sources.open_reader(config.source)
    with caplog.at_level(logging.INFO, "edge_vos.service.sources"):
        reader.open()
    props = [prop for prop, _ in FakeCapture.last.calls]
    order = [cv2.CAP_PROP_FOURCC, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS]
    assert [p for p in props if p in order] == order
    assert dict(FakeCapture.last.calls)[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"MJPG")
    message = next(r for r in caplog.records if "delivers" in r.getMessage())
    assert message.levelno == logging.WARNING  # the camera could not do what was asked
    assert "1280x720 MJPG at 30 fps (asked for 1920x1080, 60 fps, MJPG)" in message.getMessage()
    # Nothing asked: nothing set but the one-frame buffer.
    FakeCapture.last = None
    plain = sources.open_reader(service_config(source={"uri": "/dev/video0"}).source)
    plain.open()
    assert [p for p, _ in FakeCapture.last.calls] == [cv2.CAP_PROP_BUFFERSIZE]


def test_camera_settings_are_validated() -> None:
    from edge_vos.config import ConfigError

    with pytest.raises(ConfigError, match="source.camera.pixel_format: must be one of"):
        service_config(source={"camera": {"pixel_format": "H265"}})
    with pytest.raises(ConfigError, match="source.camera.height: give width and height together"):
        service_config(source={"camera": {"width": 640}})
    assert service_config(source={"camera": {"width": 640, "height": 480, "fps": 15}}).source.camera.fps == 15

"""End to end with the real Tracker (an untrained, seeded network at a 64-pixel working resolution, so
it is fast): a video file made here through `edge-vos run` in a subprocess to a subscriber, SIGTERM with
READY/WATCHDOG/STOPPING on a notify socket, and the judo clip with objects joining through the control
socket at frames 5, 8 and 13 (the 853-pixel mask of frame 5 included)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from edge_vos.client import CommandClient, CommandFailed, MaskResult, Subscriber
from edge_vos.config import load_yaml
from edge_vos.data.davis import write_mask
from edge_vos.service.config import ServiceConfig
from edge_vos.service.pipeline import Service, build_tracker
from edge_vos.service.sources import FolderReader

from .conftest import CUTIE, moving_square_frames, require_data

ROOT = Path(__file__).resolve().parents[1]
TRACKER = {  # a small eager fp32 tracker without the prior: these tests are about the service around it
    "model": {"arch": "stcn-r18-lite", "weights": "random"},
    "readout": {"kind": "tmrn", "tmrn": {"agents": 16, "agents_every": 1}},
    "memory": {"capacity": 4, "mem_every": 3, "max_pinned": 2},
    "prior": {"enabled": False},
    "resolution": 64,
    "device": "cpu",
    "backend": "torch",
    "precision": "fp32",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _notify_socket() -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"@edge-vos-e2e-{os.getpid()}-{time.monotonic_ns()}"
    sock.bind(b"\0" + name[1:].encode())
    sock.settimeout(0.05)
    return sock, name


def _write_config(path: Path, **sections: Any) -> Path:
    data: dict[str, Any] = {"tracker": TRACKER, "pipeline": {"torch_threads": 1, "status_every_s": 1}}
    data.update(sections)
    path.write_text(yaml.safe_dump(data))
    return path


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge_vos.cli", "run", *args], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _collect(sock: socket.socket, into: list[str], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            into.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            continue
        except OSError:
            return


def test_video_file_through_edge_vos_run(tmp_path: Path) -> None:
    frames = moving_square_frames(12, h=120, w=160)
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    prompt = np.zeros((120, 160), np.uint8)
    prompt[16:40, 8:32] = 1
    prompt[60:100, 100:140] = 2
    write_mask(tmp_path / "prompt.png", prompt)
    port = _free_port()
    # STCN readout here: the replay below must reproduce the service's masks bit for bit, and TMRN's SVD agents
    # are sensitive to the summation order of bf16 GEMMs (thread count), which is not what this test is about.
    config = _write_config(tmp_path / "service.yaml", publish={"encoding": "rle", "wait_for_subscriber_s": 60},
                           tracker={**TRACKER, "readout": {"kind": "stcn", "stcn": {"top_k": 20}}})
    notify, name = _notify_socket()
    messages: list[str] = []
    stop = threading.Event()
    collector = threading.Thread(target=_collect, args=(notify, messages, stop), daemon=True)
    collector.start()
    proc = _start(["--config", str(config), "--source", str(video), "--prompt-mask", str(tmp_path / "prompt.png"),
                   "--publish", f"tcp://127.0.0.1:{port}", "--control", "none", "--pace", "fastest"],
                  {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "1000000"})
    try:
        with Subscriber(f"tcp://127.0.0.1:{port}", timeout_s=60) as sub:
            got: list[MaskResult] = []
            for message in sub:
                got.append(message)
                if len(got) == len(frames):
                    break
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stop.set()
        collector.join(2)
        notify.close()
    assert proc.returncode == 0, output
    assert [m.seq for m in got] == list(range(len(frames)))
    assert all(m.header["encoding"] == "rle" and m.header["width"] == 160 for m in got)
    assert got[0].object_ids == [1, 2]
    joined = "\n".join(messages)
    assert "READY=1" in joined and "WATCHDOG=1" in joined and "STOPPING=1" in joined

    # The masks are the tracker's own output: replay the decoded file through the same seeded tracker.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        service_config = load_yaml(ServiceConfig, config)
        tracker = build_tracker(service_config)
        capture = cv2.VideoCapture(str(video))
        for i, message in enumerate(got):
            ok, bgr = capture.read()
            assert ok
            result = tracker.step(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), mask=prompt if i == 0 else None)
            agreement = (result.labels == message.labels).mean()
            assert agreement > 0.999, f"frame {i}: {agreement:.4f}"
        capture.release()
    finally:
        torch.set_num_threads(threads)


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    config = _write_config(tmp_path / "service.yaml",
                           source={"uri": "synthetic:frames=8&size=96x128&objects=1", "pace": "realtime", "fps": 20,
                                   "loop": True})
    notify, name = _notify_socket()
    messages: list[str] = []
    stop = threading.Event()
    collector = threading.Thread(target=_collect, args=(notify, messages, stop), daemon=True)
    collector.start()
    proc = _start(["--config", str(config), "--publish", f"tcp://127.0.0.1:{port}", "--control",
                   f"tcp://127.0.0.1:{_free_port()}"], {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "1000000"})
    try:
        with Subscriber(f"tcp://127.0.0.1:{port}", timeout_s=60) as sub:
            first = sub.recv()
            assert isinstance(first, MaskResult) and first.object_ids == [1]
        deadline = time.monotonic() + 10  # the datagram may still be on its way to the collector thread
        while not any("READY=1" in m for m in messages) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("READY=1" in m for m in messages)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        output, _ = proc.communicate(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stop.set()
        collector.join(2)
        notify.close()
    assert proc.returncode == 0, output
    assert elapsed < 5, f"took {elapsed:.1f} s to stop"
    assert "signal SIGTERM" in output and "stopped cleanly" in output
    assert any("STOPPING=1" in m for m in messages)


class RecordingTracker:
    """The real tracker, recording the label maps it returns (the "tracker's own output")."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.outputs: list[np.ndarray] = []

    @property
    def object_ids(self) -> list[int]:
        return self.inner.object_ids

    def step(
        self, image: np.ndarray, mask: Any = None, objects: Any = None, *, defer_memory_write: bool = False
    ) -> Any:
        result = self.inner.step(image, mask=mask, objects=objects, defer_memory_write=defer_memory_write)
        self.outputs.append(result.labels.copy())
        return result

    def write_deferred_memory(self) -> float:
        return float(self.inner.write_deferred_memory())

    def add_prompt(self, image: np.ndarray, mask: np.ndarray, objects: Any = None) -> None:
        self.inner.add_prompt(image, mask, objects)

    def remove_object(self, obj_id: int) -> None:
        self.inner.remove_object(obj_id)

    def reset(self) -> None:
        self.inner.reset()


class GatedReader(FolderReader):
    """Holds chosen frames back until released, like a camera that has not delivered them yet, so a test
    can add objects on exact past frames while the stream runs (commands apply while inference waits)."""

    def __init__(self, path: Path, gates: dict[int, threading.Event]) -> None:
        super().__init__(path)
        self.gates = gates

    def read(self) -> np.ndarray | None:
        gate = self.gates.get(self._index)
        if gate is not None:
            gate.wait(60)
        return super().read()


def test_judo_objects_join_and_leave_through_the_control_socket() -> None:
    images = require_data(CUTIE / "images" / "judo", "the judo clip")
    masks = CUTIE / "masks" / "judo"
    from edge_vos.config import from_dict
    from edge_vos.data.davis import read_mask

    config = from_dict(ServiceConfig, {
        "source": {"uri": str(images), "pace": "fastest"},
        "prompt": {"mask": str(masks / "00000.png")},
        "tracker": TRACKER,
        "publish": {"endpoint": "tcp://127.0.0.1:*", "wait_for_subscriber_s": 30, "encoding": "png", "hwm": 100},
        "control": {"endpoint": "tcp://127.0.0.1:*", "history": 16, "reply_timeout_s": 30},
    })
    gates = {k: threading.Event() for k in (6, 9, 14)}
    holder: dict[str, RecordingTracker] = {}

    def factory(cfg: ServiceConfig) -> RecordingTracker:
        holder["tracker"] = RecordingTracker(build_tracker(cfg))
        return holder["tracker"]

    service = Service(config, tracker_factory=factory, reader=GatedReader(images, gates))
    service.start()
    got: list[MaskResult] = []
    try:
        with Subscriber(service.publisher.last_endpoint, timeout_s=60) as sub, \
                CommandClient(service.control.last_endpoint, timeout_s=40, retries=0) as ctl:

            def receive_until(seq: int) -> None:
                while len(got) <= seq:
                    message = sub.recv()
                    assert isinstance(message, MaskResult), "stream stalled"
                    got.append(message)

            receive_until(5)
            assert got[0].object_ids == [1]
            mask5 = read_mask(masks / "00005.png")
            assert mask5.shape == (480, 853)
            with pytest.raises(CommandFailed, match="853x480 but the frame is 854x480"):
                ctl.add_mask(2, mask5 == 2, frame=5, encoding="rle")
            assert ctl.add_mask(2, mask5 == 2, frame=5, encoding="rle", resize=True)["frame"] == 5
            gates[6].set()
            receive_until(8)
            assert 2 in got[6].object_ids
            assert ctl.add_mask(3, read_mask(masks / "00008.png") == 3, frame=8)["ok"]
            gates[9].set()
            receive_until(13)
            assert ctl.add_mask(4, read_mask(masks / "00013.png") == 4, frame=13, encoding="png")["ok"]
            assert ctl.remove(1)["objects"] == [2, 3, 4]
            with pytest.raises(CommandFailed, match="unknown object id 1"):
                ctl.remove(1)
            gates[14].set()
            receive_until(15)
        assert service.wait(30)
    finally:
        for gate in gates.values():
            gate.set()
        service.stop(timeout=10)
    assert [m.header["capture_seq"] for m in got] == list(range(16))
    assert got[9].object_ids == [1, 2, 3] and got[14].object_ids == [2, 3, 4]
    assert not (got[15].labels == 1).any()
    tracker = holder["tracker"]
    for message, expected in zip(got, tracker.outputs, strict=True):
        np.testing.assert_array_equal(message.labels, expected)
    assert service.exit_error is None

"""The service's threads, queues and sockets with a fake tracker (fast): every frame in fastest mode,
commands mid-stream, hostile requests over the socket, a failing source, a stalled subscriber, a stalled
inference, CURVE, metrics and sd_notify. Real ZeroMQ sockets on loopback, every wait bounded."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from edge_vos.client import CommandClient, CommandFailed, MaskResult, ServiceUnavailable, Status, Subscriber
from edge_vos.config import ConfigError
from edge_vos.service.notify import Notifier
from edge_vos.service.pipeline import Service

from .fakes import ArrayReader, FakeTracker
from .service_support import WAIT, H, W, running
from .service_support import drain as _drain
from .service_support import first_mask as _first_mask
from .service_support import frames as _frames
from .service_support import masks as _masks
from .service_support import notify_socket as _notify_socket
from .service_support import service_config as _config
from .service_support import wait_for as _wait_for


def test_fastest_every_frame_matches_the_tracker(slowness_s: float = 0.0) -> None:
    """Independent of the machine's load: no rate is assumed (the stream is read until its `ended` status,
    which follows the last mask; only each message has a bound), and the queues on both sides hold the whole
    stream, so a subscriber that reads late loses nothing. `slowness_s` makes each step that slow."""
    frames = _frames(25)
    config = _config(publish={**WAIT, "hwm": 100})
    with running(config, ArrayReader(frames, mask=_first_mask()), FakeTracker(delay_s=slowness_s)) as service:
        with Subscriber(service.publisher.last_endpoint, topics=("masks", "status"), timeout_s=60, hwm=100) as sub:
            got = []
            while True:
                message = sub.recv()
                assert message is not None, f"silent for 60 s after {len(got)} masks"
                if isinstance(message, MaskResult):
                    got.append(message)
                elif message.header["state"] == "ended":
                    break
        assert service.wait(5)
    assert [m.seq for m in got] == list(range(25))
    assert [m.header["capture_seq"] for m in got] == list(range(25))
    tracker = service.tracker  # type: ignore[attr-defined]
    for message, expected in zip(got, tracker.outputs, strict=True):
        np.testing.assert_array_equal(message.labels, expected)
        assert message.header["objects"][0]["bbox"] == [20, 10, 40, 30]
        assert message.header["t_capture_ns"] <= message.header["t_publish_ns"]
    assert service.exit_error is None


@pytest.mark.parametrize("encoding", ["raw", "rle"])
def test_other_encodings_and_preview(encoding: str) -> None:
    config = _config(publish={"encoding": encoding, "preview": True, "preview_max_side": 80, **WAIT})
    with running(config, ArrayReader(_frames(4), mask=_first_mask())) as service:
        with Subscriber(service.publisher.last_endpoint, topics=("masks", "preview"), timeout_s=5) as sub:
            messages = [sub.recv(timeout_s=5) for _ in range(8)]
    kinds = [type(m).__name__ for m in messages]
    assert kinds.count("MaskResult") == 4 and kinds.count("Preview") == 4
    preview = next(m for m in messages if type(m).__name__ == "Preview")
    assert preview.image.shape == (60, 80, 3)
    mask = next(m for m in messages if isinstance(m, MaskResult))
    np.testing.assert_array_equal(mask.labels, _first_mask())


def test_commands_mid_stream() -> None:
    frames = _frames(400)
    tracker = FakeTracker(delay_s=0.01)
    config = _config(control={"history": 50}, publish=WAIT)
    with running(config, ArrayReader(frames, mask=_first_mask()), tracker) as service:
        with Subscriber(service.publisher.last_endpoint, timeout_s=5) as sub, \
                CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            assert _masks(sub, 3)[0].object_ids == [1]
            reply = ctl.add_polygon(2, [[100, 60], [150, 60], [150, 110], [100, 110]])
            assert reply["ok"] and reply["area"] > 2000
            applied_at = reply["frame"]
            mask3 = np.zeros((H, W), bool)
            mask3[80:100, 10:40] = True
            assert ctl.add_mask(3, mask3, encoding="rle")["area"] == mask3.sum()
            box = ctl.add_box(4, [60, 60, 90, 100], method="grabcut")
            assert box["ok"]
            # A past frame: written to memory through add_prompt.
            recent = ctl.stats()["recent_frames"]
            past = ctl.add_mask(5, mask3, frame=recent[0])
            assert past["frame"] == recent[0]
            assert (-1, [5]) in tracker.prompts
            _wait_for(lambda: ctl.stats()["recent_frames"][0] > 0)
            with pytest.raises(CommandFailed, match="not among the recent frames"):
                ctl.add_mask(6, mask3, frame=0)
            with pytest.raises(CommandFailed, match="unknown object id 9"):
                ctl.remove(9)
            assert ctl.remove(2)["objects"] == [1, 3, 4, 5]
            deadline = time.monotonic() + 5  # the subscriber's queue holds older frames first (HWM)
            while time.monotonic() < deadline:
                latest = sub.recv(timeout_s=2)
                if isinstance(latest, MaskResult) and latest.object_ids == [1, 3, 4, 5]:
                    break
            assert latest.object_ids == [1, 3, 4, 5]
            assert not (latest.labels == 2).any()
            first_with_2 = next(f for f, ids in tracker.prompts if 2 in ids)
            assert first_with_2 >= 0 and applied_at >= 3
            stats = ctl.stats()
            assert stats["objects"] == [1, 3, 4, 5] and stats["pace"] == "fastest"
            assert ctl.config()["tracker"]["max_objects"] == 8
            assert ctl.reset()["ok"]
            assert ctl.stats()["objects"] == []


def test_box_and_click_prompts_over_the_socket(tmp_path: Path) -> None:
    """Clicks and boxes through both methods; the learned one with a small random network (prompt.weights):
    this tests the plumbing, not the trained network's quality (tests/test_prompt_model.py does that)."""
    import torch

    from edge_vos.prompt.model import PromptNet, PromptNetConfig, save_weights

    weights, nothing = tmp_path / "prompt.safetensors", tmp_path / "nothing.safetensors"
    for path, bias in ((weights, 5.0), (nothing, -5.0)):  # says "object" / "background" everywhere it looks
        torch.manual_seed(0)
        net = PromptNet(PromptNetConfig(crop_size=64))
        torch.nn.init.zeros_(net.head.weight)
        torch.nn.init.constant_(net.head.bias, bias)
        save_weights(net, path)
    frames = _frames(400)
    frames[:, 60:100, 70:130] = (230, 40, 40)  # a red object on noise
    tracker = FakeTracker(delay_s=0.01)
    config = _config(control={"history": 50}, prompt={"weights": str(weights)})
    with running(config, ArrayReader(frames), tracker) as service:
        with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            _wait_for(lambda: ctl.stats()["frames_processed"] > 0)
            clicks = ctl.add_prompt(1, points=[[100, 80]], labels=[1], method="grabcut")
            assert clicks["ok"] and 0.8 * 2400 < clicks["area"] < 1.3 * 2400
            past = ctl.stats()["recent_frames"][1]
            both = ctl.add_prompt(2, box=[60, 50, 140, 110], points=[[65, 55]], labels=[0], frame=past,
                                  method="grabcut")
            assert both["ok"] and both["frame"] == past and 0.8 * 2400 < both["area"] < 1.3 * 2400
            learned = ctl.add_prompt(3, box=[60, 50, 140, 110], points=[[100, 80]], labels=[1])  # default method
            assert learned["ok"] and learned["area"] == 112 * 82  # the box's window (1.4x the box) in the frame
            # Clicks alone: the surest first look (a tie: the square of 0.8 of the frame's long side around the
            # click, clipped to [0, 74)) grown by the box window's 40 % context at each of the three later passes.
            assert ctl.add_prompt(4, points=[[10, 10]], labels=[1], method="learned")["area"] == 129 * H
            with pytest.raises(CommandFailed, match=r"points\[0\].*outside the 160x120 frame"):
                ctl.add_prompt(5, points=[[400, 10]], labels=[1])
            with pytest.raises(CommandFailed, match="2 labels for 1 points"):
                ctl.add_prompt(5, points=[[10, 10]], labels=[1, 0])
            _wait_for(lambda: sorted(ctl.stats()["objects"]) == [1, 2, 3, 4])
    with running(_config(prompt={"weights": str(nothing)}), ArrayReader(frames), FakeTracker(delay_s=0.01)) as service:
        with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            _wait_for(lambda: ctl.stats()["frames_processed"] > 0)
            with pytest.raises(CommandFailed, match="learned found no object for this prompt"):
                ctl.add_box(1, [60, 50, 140, 110])


def test_missing_prompt_weights() -> None:
    """Configured weights that do not exist stop the start-up; without the bundled file only learned
    prompts fail, with a message that names the file and the way out."""
    config = _config(prompt={"weights": "/nonexistent/prompt.safetensors"})
    with pytest.raises(ConfigError, match="prompt.weights.*nonexistent"):
        Service(config, tracker_factory=lambda _: FakeTracker(), reader=ArrayReader(_frames(3)))
    for field in ("box_weights", "correction_weights"):
        config = _config(prompt={field: f"/nonexistent/{field}.safetensors"})
        with pytest.raises(ConfigError, match=f"prompt.{field}.*nonexistent/{field}"):
            Service(config, tracker_factory=lambda _: FakeTracker(), reader=ArrayReader(_frames(3)))


def test_object_limit_and_overlaps() -> None:
    tracker = FakeTracker(max_objects=2, delay_s=0.01)
    with running(_config(tracker={"max_objects": 2}), ArrayReader(_frames(300), mask=_first_mask()),
                 tracker) as service:
        with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            _wait_for(lambda: ctl.stats()["frames_processed"] > 0)
            assert ctl.add_box(2, [60, 60, 90, 100], method="grabcut")["ok"]
            with pytest.raises(CommandFailed, match="cannot track more than 2"):
                ctl.add_box(3, [100, 60, 140, 100], method="grabcut")
            # Re-prompting a tracked id is a correction, not a new object.
            assert ctl.add_box(1, [0, 0, 50, 50], method="grabcut")["ok"]


def test_hostile_requests_over_the_socket_do_not_hurt_the_service() -> None:
    rng = np.random.default_rng(1)
    config = _config(control={"max_message_bytes": 200_000})
    with running(config, ArrayReader(_frames(2000), mask=_first_mask()), FakeTracker(delay_s=0.005)) as service:
        endpoint = service.control.last_endpoint
        with CommandClient(endpoint, timeout_s=3, retries=0) as ctl:
            _wait_for(lambda: ctl.stats()["frames_processed"] > 0)
            for _ in range(20):
                reply = ctl.send_raw(rng.bytes(int(rng.integers(1, 300))))
                assert reply["ok"] is False and reply["error"]
            bad = [b"", b"null", b"{}", b'{"cmd": "add", "id": 1, "mask": "' + b"A" * 150_000 + b'"}',
                   json.dumps({"cmd": "remove", "id": 10**30}).encode(),
                   json.dumps({"cmd": "add", "id": 1, "rle": {"size": [H, W], "counts": "!!!!"}}).encode()]
            for body in bad:
                reply = ctl.send_raw(body)
                assert reply["ok"] is False, body[:40]
        # Larger than max_message_bytes: libzmq drops it and disconnects that peer; no reply, no harm.
        with CommandClient(endpoint, timeout_s=0.5, retries=0) as big:
            with pytest.raises(ServiceUnavailable):
                big.send_raw(b"x" * 300_000)
        # A DEALER client (no empty delimiter) and a raw multipart burst are answered too.
        context = zmq.Context()
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(endpoint)
        dealer.send_multipart([b"a", b"b", b'{"cmd": "ping"}'])
        assert dealer.poll(3000)
        assert json.loads(dealer.recv_multipart()[-1])["pong"] is True
        dealer.close()
        context.term()
        with CommandClient(endpoint, timeout_s=3, retries=0) as ctl:
            assert ctl.ping()
            assert ctl.stats()["frames_processed"] > 0
        assert service.worker.is_alive() and service.control.is_alive()


def test_source_lost_mid_stream_reconnects_and_reports() -> None:
    frames = _frames(30)
    reader = ArrayReader(frames, fail_at=(10, 20), mask=_first_mask())
    with running(_config(publish=WAIT), reader) as service:
        with Subscriber(service.publisher.last_endpoint, topics=("masks", "status"), timeout_s=5) as sub:
            masks, states = [], []
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not (states and states[-1] == "ended"):
                message = sub.recv(timeout_s=1)
                if isinstance(message, MaskResult):
                    masks.append(message)
                elif isinstance(message, Status):
                    states.append(message.header["state"])
        assert service.wait(5)
    assert len(masks) == 30  # the array reader resumes where it lost the stream
    assert states.count("reconnecting") == 2 and states[-1] == "ended"
    assert service.capture.reconnects == 2 and reader.opens == 3
    assert service.metrics.value("source_reconnects_total") == 2


def test_source_absent_at_start_keeps_retrying_and_gives_up_when_told() -> None:
    reader = ArrayReader(_frames(5), fail_open=100)
    notify_sock, env = _notify_socket()
    config = _config(source={"reconnect_attempts": 3})
    with notify_sock, running(config, reader, notifier=Notifier(env)) as service:
        assert service.wait(5)
        assert service.exit_error and "gave up after 3 reconnects" in service.exit_error
        messages = _drain(notify_sock)
    assert any("READY=1" in m for m in messages)  # start-up is over; the lost source is reported
    assert any("STATUS=source reconnecting" in m for m in messages)


def test_realtime_subscriber_that_stops_reading_does_not_stall_the_service() -> None:
    config = _config(source={"pace": "realtime", "fps": 200, "loop": True}, publish={"hwm": 2, "encoding": "raw"})
    # Large raw messages (300 kB) so a 1 s stall overflows the kernel's socket buffers as well.
    frames = np.zeros((8, 480, 640, 3), np.uint8)
    with running(config, ArrayReader(frames)) as service:
        with Subscriber(service.publisher.last_endpoint, timeout_s=5, hwm=2) as stalled:
            assert _masks(stalled, 1)
            before = service.worker.frames
            time.sleep(1.0)  # the subscriber reads nothing; PUB drops for it, the pipeline keeps going
            assert service.worker.frames > before + 20
            # What was buffered (HWM plus kernel socket buffers) arrives first, then a gap in seq.
            deadline = time.monotonic() + 5
            while stalled.gaps == 0 and time.monotonic() < deadline:
                stalled.recv(timeout_s=1)
            assert stalled.gaps > 0
        with Subscriber(service.publisher.last_endpoint, latest_only=True, timeout_s=5) as fresh:
            time.sleep(0.3)
            newest = fresh.recv(timeout_s=2)
            assert isinstance(newest, MaskResult)
        assert service.worker.is_alive()


def test_slow_inference_realtime_skips_frames_and_counts_them() -> None:
    config = _config(source={"pace": "realtime", "fps": 100})
    with running(config, ArrayReader(_frames(60), mask=_first_mask()), FakeTracker(delay_s=0.05)) as service:
        assert service.wait(10)
    skipped = service.buffer.skipped
    assert skipped > 10 and service.worker.frames + skipped == 60
    assert service.metrics.value("frames_dropped_total", {"reason": "capture_skipped"}) == skipped


def test_stalled_inference_times_out_commands_and_stops_watchdog() -> None:
    tracker = FakeTracker(delay_s=0.01)
    notify_sock, env = _notify_socket(watchdog_usec=200_000)
    config = _config(control={"reply_timeout_s": 0.5})
    with notify_sock, running(config, ArrayReader(_frames(1000), mask=_first_mask()), tracker,
                              notifier=Notifier(env)) as service:
        with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            _wait_for(lambda: ctl.stats()["frames_processed"] > 2)
            assert any("WATCHDOG=1" in m for m in _drain(notify_sock, 0.3))
            tracker.block.set()  # inference hangs inside step()
            time.sleep(0.3)
            _drain(notify_sock, 0.05)
            with pytest.raises(CommandFailed, match="not applied within"):
                ctl.remove(1)
            timed_out = ctl.request({"cmd": "remove", "id": 1, "req": "r-77"}, check=False)
            assert "not applied within" in timed_out["error"] and timed_out["req"] == "r-77"  # names its request
            assert ctl.ping()  # the control thread still answers
            assert not any("WATCHDOG=1" in m for m in _drain(notify_sock, 0.4))
            tracker.block.clear()
            time.sleep(0.2)
            assert 1 in ctl.stats()["objects"]  # the timed-out remove was cancelled, not applied late
            assert any("WATCHDOG=1" in m for m in _drain(notify_sock, 0.4))


def test_tracker_errors_stop_the_service_after_a_limit() -> None:
    class Broken(FakeTracker):
        def step(self, image: np.ndarray, mask: Any = None, objects: Any = None, **_: Any) -> Any:
            raise RuntimeError("CUDA error: device lost")

    with running(_config(pipeline={"max_consecutive_errors": 3}), ArrayReader(_frames(10)), Broken()) as service:
        assert service.wait(5)
    assert "failed 3 times" in (service.exit_error or "")
    assert service.metrics.value("frames_dropped_total", {"reason": "tracker_error"}) == 3


def test_max_frames_and_prompt_size_policy(tmp_path: Path) -> None:
    from edge_vos.data.davis import write_mask

    narrow = np.zeros((H, W - 1), np.uint8)
    narrow[10:40, 20:60] = 2
    write_mask(tmp_path / "prompt.png", narrow)
    config = _config(pipeline={"max_frames": 5}, prompt={"mask": str(tmp_path / "prompt.png"), "resize": True})
    with running(config, ArrayReader(_frames(50))) as service:
        assert service.wait(5)
    assert service.worker.frames == 5
    assert service.tracker.outputs[0][20, 30] == 2  # type: ignore[attr-defined]
    # Without resize the prompt is refused with both sizes named; the stream goes on without it.
    config = _config(pipeline={"max_frames": 3}, prompt={"mask": str(tmp_path / "prompt.png")})
    with running(config, ArrayReader(_frames(50))) as service:
        assert service.wait(5)
    assert service.worker.frames == 0 and "159x120 but the frame is 160x120" in (service.exit_error or "")


def test_start_up_errors_leave_nothing_running() -> None:
    with pytest.raises(ConfigError, match="source.uri"):
        Service(_config(source={"uri": "/nonexistent/video.mp4"}), tracker_factory=lambda _: FakeTracker()).start()
    with pytest.raises(ConfigError, match="unknown field"):
        _config(publish={"colour": "red"})
    with pytest.raises(ConfigError, match="publish.encoding"):
        _config(publish={"encoding": "bmp"})
    # An endpoint another socket holds: the service names it and starts nothing.
    holder = zmq.Context.instance().socket(zmq.PUB)
    try:
        port = holder.bind_to_random_port("tcp://127.0.0.1")
        second = Service(_config(publish={"endpoint": f"tcp://127.0.0.1:{port}"}),
                         tracker_factory=lambda _: FakeTracker(), reader=ArrayReader(_frames(2)))
        with pytest.raises(ConfigError, match="publish.endpoint: cannot bind"):
            second.start()
        assert not second.worker.is_alive() and not second.publisher.is_alive()
    finally:
        holder.close(linger=0)


def test_curve_allow_list(tmp_path: Path) -> None:
    import zmq.auth

    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    zmq.auth.create_certificates(keys, "server")
    zmq.auth.create_certificates(keys, "client")
    zmq.auth.create_certificates(keys, "stranger")
    (allowed / "client.key").write_bytes((keys / "client.key").read_bytes())
    config = _config(security={"curve": True, "server_secret_key": str(keys / "server.key_secret"),
                               "allowed_clients_dir": str(allowed)}, source={"pace": "realtime", "loop": True})
    with running(config, ArrayReader(_frames(20), mask=_first_mask())) as service:
        ok = {"server_public_key": keys / "server.key", "client_secret_key": keys / "client.key_secret"}
        with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0, **ok) as ctl:
            assert ctl.ping()
        with Subscriber(service.publisher.last_endpoint, timeout_s=3, **ok) as sub:
            assert _masks(sub, 2, timeout_s=5)
        bad = {"server_public_key": keys / "server.key", "client_secret_key": keys / "stranger.key_secret"}
        with CommandClient(service.control.last_endpoint, timeout_s=0.5, retries=1, **bad) as ctl:
            with pytest.raises(ServiceUnavailable):
                ctl.ping()
        with Subscriber(service.publisher.last_endpoint, timeout_s=0.5, **bad) as sub:
            assert sub.recv(timeout_s=1) is None
        with CommandClient(service.control.last_endpoint, timeout_s=0.5, retries=0) as plain:
            with pytest.raises(ServiceUnavailable):
                plain.ping()


def test_metrics_endpoint() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = _config(metrics={"enabled": True, "port": port}, publish=WAIT)
    with running(config, ArrayReader(_frames(10), mask=_first_mask())) as service:
        with Subscriber(service.publisher.last_endpoint, timeout_s=5) as sub:
            assert len(_masks(sub, 10)) == 10
        service.wait(5)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for name in ('edge_vos_frames_processed_total{stream="cam0"} 10.0', "edge_vos_capture_to_publish_seconds_bucket",
                 'edge_vos_stage_latency_seconds_count{stage="step",stream="cam0"}',
                 'edge_vos_frames_dropped_total{reason=', 'edge_vos_queue_depth{queue="frames",stream="cam0"}',
                 'edge_vos_objects{stream="cam0"} 1.0', "edge_vos_build_info{"):
        assert name in text, name


def test_ended_follows_the_last_mask_and_names_its_seq() -> None:
    """The capture thread reaches the end of the file frames before inference does: `ended` must still
    come after the last mask (issue #13 item 6)."""
    config = _config(publish={**WAIT, "hwm": 100}, pipeline={"frame_queue": 4})
    with running(config, ArrayReader(_frames(12), mask=_first_mask()), FakeTracker(delay_s=0.05)) as service:
        with Subscriber(service.publisher.last_endpoint, topics=("masks", "status"), timeout_s=5, hwm=100) as sub:
            messages = []
            while True:
                message = sub.recv(timeout_s=5)
                assert message is not None, "stream went silent before `ended`"
                messages.append(message)
                if isinstance(message, Status) and message.header["state"] == "ended":
                    break
        assert service.wait(5)
    seqs = [m.seq for m in messages if isinstance(m, MaskResult)]
    assert seqs == list(range(12))
    assert isinstance(messages[-1], Status) and messages[-1].header["last_seq"] == 11
    assert messages[-1].header["detail"] == "end of source"


def test_a_status_subscriber_is_told_the_current_state_when_it_joins() -> None:
    config = _config(source={"pace": "realtime", "fps": 50, "loop": True})
    with running(config, ArrayReader(_frames(10), mask=_first_mask())) as service:
        _wait_for(lambda: service.worker.frames > 3)  # "streaming" went out long ago
        with Subscriber(service.publisher.last_endpoint, topics=("status",), timeout_s=3) as sub:
            message = sub.recv()
        assert isinstance(message, Status) and message.header["state"] == "streaming"
        assert message.header["last_seq"] >= 0


def test_subscribers_counts_connected_sockets_not_topic_subscriptions() -> None:
    config = _config(source={"pace": "realtime", "fps": 50, "loop": True})
    with running(config, ArrayReader(_frames(10), mask=_first_mask())) as service:
        endpoint = service.publisher.last_endpoint
        with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            with Subscriber(endpoint, topics=("masks", "status", "preview")), Subscriber(endpoint, topics=("",)):
                _wait_for(lambda: ctl.stats()["subscribers"] == 2)
                assert service.metrics.value("subscribers") == 2
            _wait_for(lambda: ctl.stats()["subscribers"] == 0)


def test_stats_shows_the_initial_prompt_while_its_frame_is_tracked() -> None:
    tracker = FakeTracker()
    tracker.block.set()  # the first step (the one with the initial prompt) hangs until released
    config = _config(source={"pace": "realtime", "fps": 50, "loop": True})
    with running(config, ArrayReader(_frames(10), mask=_first_mask()), tracker) as service:
        with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            _wait_for(lambda: service.capture.frames > 1)
            time.sleep(0.2)  # inside the first step now
            assert ctl.stats()["objects"] == [1]
            tracker.block.clear()
            _wait_for(lambda: ctl.stats()["frames_processed"] > 2)
            assert ctl.reset()["ok"]
            assert ctl.stats()["objects"] == []  # at once, not after the next frame


class FailsOnce(FakeTracker):
    """A tracker whose next prompted step fails with a plain ValueError (a bug, not bad input)."""

    def __init__(self) -> None:
        super().__init__(delay_s=0.01)
        self.fail = True

    def step(self, image: np.ndarray, mask: Any = None, objects: Any = None, **kwargs: Any) -> Any:
        if mask is not None and self.fail:
            self.fail = False
            raise ValueError("shapes do not broadcast (a bug in a backend)")
        return super().step(image, mask, objects)


def test_a_tracker_failure_on_a_prompted_frame_is_not_called_a_refused_prompt() -> None:
    tracker = FailsOnce()
    config = _config(source={"pace": "realtime", "fps": 50, "loop": True})
    with running(config, ArrayReader(_frames(10), mask=_first_mask()), tracker) as service:
        with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            _wait_for(lambda: ctl.stats()["frames_processed"] > 2)
            # The initial prompt's frame failed: it is counted as a tracker error and the prompt waits.
            assert service.metrics.value("frames_dropped_total", {"reason": "tracker_error"}) == 1
            assert ctl.stats()["objects"] == [1]
            tracker.fail = True
            reply = ctl.request({"cmd": "add", "id": 2, "box": [60, 60, 100, 100], "method": "grabcut"}, check=False)
            assert reply["ok"] is False and "the tracker failed on frame" in reply["error"]
            assert "shapes do not broadcast" in reply["error"]
            assert service.metrics.value("frames_dropped_total", {"reason": "tracker_error"}) == 2
            assert ctl.add_box(2, [60, 60, 100, 100], method="grabcut")["ok"]  # and the next add goes through


def test_the_tracker_refusing_a_prompt_is_answered_and_the_frame_still_tracked() -> None:
    tracker = FakeTracker(max_objects=2, delay_s=0.01)
    config = _config(source={"pace": "realtime", "fps": 50, "loop": True})  # the service allows 8
    with running(config, ArrayReader(_frames(10), mask=_first_mask()), tracker) as service:
        with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            _wait_for(lambda: ctl.stats()["frames_processed"] > 0)
            assert ctl.add_box(2, [60, 60, 100, 100], method="grabcut")["ok"]
            reply = ctl.request({"cmd": "add", "id": 3, "box": [100, 20, 140, 60], "method": "grabcut"}, check=False)
            assert reply["ok"] is False and "cannot track more than 2" in reply["error"]
            frames = ctl.stats()["frames_processed"]
            _wait_for(lambda: ctl.stats()["frames_processed"] > frames)
        assert service.metrics.value("frames_dropped_total", {"reason": "tracker_error"}) == 0


def test_metrics_name_commands_as_the_protocol_does_and_show_threads_and_the_process() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = _config(metrics={"enabled": True, "port": port}, source={"pace": "realtime", "fps": 50, "loop": True})
    with running(config, ArrayReader(_frames(10), mask=_first_mask())) as service:
        with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            _wait_for(lambda: ctl.stats()["frames_processed"] > 0)
            ctl.add_box(2, [60, 60, 100, 100], method="grabcut")
            ctl.remove(2)
            ctl.reset()
            ctl.send_raw(b"{")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for name in ('edge_vos_commands_total{cmd="add",result="ok"} 1.0',
                 'edge_vos_commands_total{cmd="remove",result="ok"} 1.0',
                 'edge_vos_commands_total{cmd="reset",result="ok"} 1.0',
                 'edge_vos_commands_total{cmd="stats",result="ok"}',
                 'edge_vos_commands_total{cmd="invalid",result="error"} 1.0',
                 'edge_vos_thread_alive{stream="",thread="control"} 1.0',
                 'edge_vos_thread_alive{stream="",thread="inference"} 1.0',
                 'edge_vos_thread_alive{stream="cam0",thread="capture"} 1.0',
                 "process_resident_memory_bytes", "process_cpu_seconds_total", "python_gc_objects_collected_total",
                 'edge_vos_control_replies_undelivered_total{reason="not_read"} 0.0'):
        assert name in text, name
    assert "addobject" not in text and "removeobject" not in text


def test_config_reply_hides_the_view_token() -> None:
    """The `config` command answers anyone on the control socket: the web view's token (in the config of
    `edge-vos run`, which the service is given) must not be in it."""
    from edge_vos.program import RunConfig

    secret = "do-not-leak-this-token"
    config = _config(RunConfig, view={"token": secret})
    with running(config, ArrayReader(_frames(300), mask=_first_mask()), FakeTracker(delay_s=0.01)) as service:
        with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            reply = ctl.config()
    assert secret not in json.dumps(reply)
    assert reply["view"]["token"] == "<redacted>"
    assert reply["control"]["history"] == config.control.history

"""The web view of a service with several streams (issue #22), without a browser: the feed keeps each
stream's newest frame, state and rate (topics `masks/<id>` or the single-camera `masks`); /api/state lists
the streams; a viewer is sent only the streams it shows (every frame of the one it watches, a thumbnail a
second of those it asks for, nothing else); commands name their stream; hostile watch messages change
nothing. Fed by tests/two_streams.py: a two-camera publisher and control replier written for these tests
(the real multi-stream service's wire, as docs/protocol.md describes it)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_vos.view.config import ViewConfig
from edge_vos.view.feed import MAX_STREAMS, unpack_frame
from edge_vos.view.server import ViewServer
from edge_vos.view.streams import MIN_STALL_S
from edge_vos.view.viewers import MAX_WATCHED
from edge_vos.wire.protocol import PROTOCOL_VERSION, dumps_header, encode_labels

from .service_support import wait_until as _wait
from .two_streams import TwoStreams


def _get(view: ViewServer, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{view.port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _post(view: ViewServer, command: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{view.port}/api/command", json.dumps(command).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _streaming(view: ViewServer, names: set[str]) -> bool:
    return {s["stream"] for s in view.state()["streams"] if s["state"] == "streaming"} >= names


@pytest.fixture(scope="module", params=[True, False], ids=["masks/<id>", "masks"])
def cameras(request: pytest.FixtureRequest) -> Iterator[tuple[TwoStreams, ViewServer]]:
    """Two streams (front 320x180, back 240x160, 10 fps each) and a view of them."""
    with TwoStreams(topic_suffix=request.param) as fake:
        view = ViewServer(ViewConfig(listen="127.0.0.1:0", stats_every_s=0.2), fake.masks_endpoint,
                          fake.control_endpoint)
        view.start()
        try:
            _wait(lambda: _streaming(view, {"front", "back"}), "both streams streaming")
            yield fake, view
        finally:
            view.stop()


Seen = tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]


async def _viewer(port: int, seconds: float, query: str = "", messages: tuple[dict[str, Any], ...] = ()) -> Seen:
    """A viewer for `seconds` after sending `messages`: its state texts, and per stream the frames and bytes
    it was sent once the messages had time to take effect (after 0.5 s)."""
    texts: list[dict[str, Any]] = []
    frames: dict[str, int] = {}
    sizes: dict[str, int] = {}
    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"http://127.0.0.1:{port}/api/stream{query}") as ws:
        for message in messages:
            await ws.send_str(json.dumps(message))
        t0 = time.monotonic()
        while (now := time.monotonic()) - t0 < seconds:
            try:
                msg = await ws.receive(timeout=max(0.05, seconds - (now - t0)))
            except asyncio.TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.TEXT:
                texts.append(json.loads(msg.data))
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_str('{"type": "ack"}')
                header, _, _ = unpack_frame(msg.data)
                if time.monotonic() - t0 > 0.5:
                    frames[header["stream"]] = frames.get(header["stream"], 0) + 1
                    sizes[header["stream"]] = sizes.get(header["stream"], 0) + len(msg.data)
            else:
                break
    return texts, frames, sizes


def test_state_lists_every_stream_in_the_services_order(cameras: tuple[TwoStreams, ViewServer]) -> None:
    fake, view = cameras
    _wait(lambda: [s["stream"] for s in _get(view, "/api/state")[1]["streams"]] == ["front", "back"],
          "the service's order (its `streams` command)")
    # Until the view has the service's order it shows the stream whose frame came first; then the first.
    status, state = _get(view, "/api/state")
    assert status == 200 and state["stream"] == "front" and state["frame_size"] == [320, 180]
    status, back = _get(view, "/api/state?stream=back")
    assert status == 200 and back["stream"] == "back" and back["frame_size"] == [240, 160]
    _wait(lambda: all(5 < s["fps"] < 15 for s in _get(view, "/api/state")[1]["streams"]), "each stream's rate")
    # The service's stats are asked per stream (`stream` named: two run) and answered for that stream.
    _wait(lambda: _get(view, "/api/state?stream=back")[1]["recent_frames"] is not None, "back's stats")
    assert fake.asked(cmd="stats", stream="back")
    assert _get(view, "/api/state?stream=back")[1]["history"] == 64
    status, error = _get(view, "/api/state?stream=side")
    assert status == 404 and error["ok"] is False and "unknown stream 'side'" in error["error"]


def test_a_viewer_is_sent_only_the_streams_it_shows(cameras: tuple[TwoStreams, ViewServer]) -> None:
    _, view = cameras
    port = view.port
    # Saying nothing: the first stream, as a single-camera page; both streams' states come as texts.
    texts, frames, _ = asyncio.run(_viewer(port, 2.0))
    assert {t["stream"] for t in texts if t["type"] == "state"} == {"front", "back"}
    assert set(frames) == {"front"} and frames["front"] >= 8
    # Watching the other one (a message, or the query at connect): only its frames.
    _, frames, _ = asyncio.run(_viewer(port, 2.0, messages=({"type": "watch", "watch": ["back"]},)))
    assert set(frames) == {"back"} and frames["back"] >= 8
    _, frames, _ = asyncio.run(_viewer(port, 2.0, query="?watch=back"))
    assert set(frames) == {"back"}
    # One large and a thumbnail of the other: the thumbnail at most about once a second.
    _, frames, sizes = asyncio.run(_viewer(port, 3.5, messages=(
        {"type": "watch", "watch": ["front"], "thumbs": ["back"]},)))
    assert frames["front"] >= 18 and 1 <= frames.get("back", 0) <= 4, frames
    assert sizes["back"] < sizes["front"] / 3  # what a phone showing one camera is spared
    _, frames, _ = asyncio.run(_viewer(port, 2.0, messages=({"type": "watch", "watch": ["front", "back"]},)))
    assert frames["front"] >= 8 and frames["back"] >= 8


def test_hostile_watch_messages_change_nothing(cameras: tuple[TwoStreams, ViewServer],
                                               caplog: pytest.LogCaptureFixture) -> None:
    _, view = cameras
    bad = ({"type": "watch", "watch": "back"}, {"type": "watch", "watch": [1, 2]},
           {"type": "watch", "watch": ["back"] * (MAX_WATCHED + 1)}, {"type": "watch", "watch": ["x" * 200]},
           {"type": "watch", "watch": [["back"]]}, {"type": "watch", "thumbs": {"back": 1}},
           {"type": "watch", "watch": ["back", None]}, {"type": "watch", "watch": None, "thumbs": 7})
    with caplog.at_level(logging.WARNING):
        texts, frames, _ = asyncio.run(_viewer(view.port, 2.0, query="?watch=front", messages=bad))
        _, nothing, _ = asyncio.run(_viewer(view.port, 1.5, query="?watch=" + "a," * 2000))
    assert set(frames) == {"front"} and frames["front"] >= 8  # the choice made at connect stands
    assert set(nothing) == {"front"}  # a query that is not a list of names leaves the default
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert _get(view, "/api/state")[0] == 200


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=200),
                     lambda inner: st.lists(inner, max_size=80)
                     | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=100)
_names = st.lists(st.sampled_from(["front", "back", "side", "", "x" * 129]) | st.text(max_size=20), max_size=70)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(choices=st.lists(st.tuples(_names | _json, _names | _json), min_size=1, max_size=8))
def test_any_watch_message_is_ignored_or_obeyed(cameras: tuple[TwoStreams, ViewServer],
                                                 choices: list[tuple[Any, Any]]) -> None:
    """hypothesis's `watch` messages (lists of names of any length, any JSON): the viewer stays connected (a
    ping after them is answered), each one is obeyed when it is two lists of names and ignored otherwise."""
    _, view = cameras

    async def run() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{view.port}/api/stream?watch=front") as ws:
            for watch, thumbs in choices:
                message = json.dumps({"type": "watch", "watch": watch, "thumbs": thumbs})
                if len(message) < 4000:  # longer messages close the connection (MAX_MESSAGE), tested by aiohttp
                    await ws.send_str(message)
            await ws.send_str('{"type": "ping", "t": 1}')
            while True:
                msg = await ws.receive(timeout=10)
                assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
                if msg.type == aiohttp.WSMsgType.BINARY:
                    await ws.send_str('{"type": "ack"}')
                elif json.loads(msg.data)["type"] == "pong":
                    break
            for viewer in list(view.viewers.connected):  # this one (watch set at connect), maybe one closing
                names = (viewer.watch or ()) + viewer.thumbs
                assert len(names) <= 2 * 64 and all(isinstance(name, str) and 0 < len(name) <= 128 for name in names)

    asyncio.run(run())
    assert view.feed.is_alive() and _get(view, "/api/state")[0] == 200


def test_commands_name_their_stream(cameras: tuple[TwoStreams, ViewServer]) -> None:
    fake, view = cameras
    seq = _get(view, "/api/state?stream=back")[1]["capture_seq"]
    reply = _post(view, {"cmd": "add", "id": 4, "box": [20, 20, 90, 80], "frame": seq, "stream": "back"})
    assert reply["ok"] and reply["id"] == 4 and fake.commands[-1]["stream"] == "back"
    _wait(lambda: [o["id"] for o in _get(view, "/api/state?stream=back")[1]["objects"]] == [4], "4 on back")
    assert _get(view, "/api/state?stream=front")[1]["objects"] == []  # not on the other camera
    # Without `stream` while two run: the service's own error, passed on unchanged.
    reply = _post(view, {"cmd": "remove", "id": 4})
    assert not reply["ok"] and reply["field"] == "stream"
    assert _post(view, {"cmd": "remove", "id": 4, "stream": "back"})["ok"]
    _wait(lambda: not _get(view, "/api/state?stream=back")[1]["objects"], "4 removed from back")


def test_a_stream_that_stops_does_not_stop_the_other(cameras: tuple[TwoStreams, ViewServer]) -> None:
    fake, view = cameras
    fake.paused.add("back")
    try:
        back = _wait(lambda: (s := view.feed.stream("back")) and s.snapshot["state"] == "reconnecting" and s,
                     "back reconnecting", timeout=MIN_STALL_S + 10)
        assert "no frames" in back.snapshot["detail"]
        front = view.feed.stream("front")
        assert front is not None and front.snapshot["state"] == "streaming" and front.fps() > 7
    finally:
        fake.paused.clear()
    _wait(lambda: _streaming(view, {"front", "back"}), "back streaming again")


def test_one_stream_on_suffixed_topics_is_the_single_camera_view() -> None:
    """A single-camera service on `masks/<id>` topics: one stream, commands without `stream`, frames to a viewer
    that says nothing."""
    with TwoStreams(streams=(("cam0", 160, 120),)) as fake:
        view = ViewServer(ViewConfig(listen="127.0.0.1:0", stats_every_s=0.2), fake.masks_endpoint,
                          fake.control_endpoint)
        view.start()
        try:
            _wait(lambda: view.feed.snapshot["state"] == "streaming", "streaming")
            state = _get(view, "/api/state")[1]
            assert state["stream"] == "cam0" and [s["stream"] for s in state["streams"]] == ["cam0"]
            _wait(lambda: _get(view, "/api/state")[1]["recent_frames"] is not None, "stats")
            # One stream: asked as a single-camera service is asked.
            assert fake.asked(cmd="stats") and not fake.asked(cmd="stats", stream="cam0")
            assert _post(view, {"cmd": "add", "id": 1, "box": [10, 10, 60, 60]})["ok"]
            _, frames, _ = asyncio.run(_viewer(view.port, 1.5))
            assert set(frames) == {"cam0"} and frames["cam0"] >= 5
        finally:
            view.stop()


def test_the_feed_follows_at_most_max_streams(caplog: pytest.LogCaptureFixture) -> None:
    """A publisher naming more streams than the view follows (or names that are not names): the extra ones
    are ignored with rate-limited warnings, the others shown."""
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    view = ViewServer(ViewConfig(listen="127.0.0.1:0"), f"tcp://127.0.0.1:{port}")
    stop = threading.Event()
    labels = encode_labels(__import__("numpy").zeros((8, 8), "uint8"), "png")

    def send() -> None:
        seq = 0
        while not stop.is_set():
            for name in [f"cam{i}" for i in range(MAX_STREAMS + 6)] + ["", "x" * 500, 7]:
                header = {"v": PROTOCOL_VERSION, "kind": "mask", "stream": name, "seq": seq, "frame": seq,
                          "capture_seq": seq, "t_capture_ns": time.monotonic_ns(), "t_capture_unix_ns": time.time_ns(),
                          "t_publish_ns": time.monotonic_ns(), "width": 8, "height": 8, "encoding": "png",
                          "objects": []}
                pub.send_multipart([b"masks/x", dumps_header(header), labels])
            seq += 1
            time.sleep(0.05)

    thread = threading.Thread(target=send, daemon=True)
    with caplog.at_level(logging.WARNING, logger="edge_vos.view"):
        view.start()
        thread.start()
        try:
            _wait(lambda: len(view.feed.streams) == MAX_STREAMS and view.feed.counters.invalid > 20, "streams")
            time.sleep(1.0)
            assert len(view.feed.streams) == MAX_STREAMS and view.feed.is_alive()
            assert len(_get(view, "/api/state")[1]["streams"]) == MAX_STREAMS
        finally:
            stop.set()
            thread.join(2)
            view.stop()
            pub.close(linger=0)
            context.term()
    assert 0 < len(caplog.records) <= 21  # 20 lines per 10 s, then one that counts the rest


def test_the_view_of_the_service_running_two_streams() -> None:
    """The service itself (`streams:`, fake trackers on synthetic scenes of two sizes and a camera that never
    opens) with its view, as `edge-vos run --view` composes them: every stream listed in the service's order
    (the dead one too, reconnecting), stats per stream, an object added on one stream through the view appears
    on that stream only, a viewer watching one is sent that one."""
    from edge_vos.config import from_dict
    from edge_vos.program import Program
    from edge_vos.run_config import RunConfig

    from .fakes import FakeTracker

    config = from_dict(RunConfig, {
        "source": {"loop": True, "fps": 10.0, "pace": "realtime"},
        "publish": {"endpoint": "tcp://127.0.0.1:*", "preview": True},
        "control": {"endpoint": "tcp://127.0.0.1:*", "history": 64},
        "view": {"listen": "127.0.0.1:0", "stats_every_s": 0.2},
        "streams": [{"id": "front", "source": "synthetic:seed=1&frames=40&size=120x160&objects=2"},
                    {"id": "back", "source": "synthetic:seed=2&frames=40&size=96x128&objects=1"},
                    {"id": "dead", "source": {"uri": "http://127.0.0.1:9/none.mjpg", "reconnect_max_s": 0.5}}]})
    program = Program(config, tracker_factory=lambda _: FakeTracker(delay_s=0.01))
    program.start()
    view = program.view
    assert view is not None
    try:
        _wait(lambda: _streaming(view, {"front", "back"}), "both streams streaming")
        _wait(lambda: [s["stream"] for s in _get(view, "/api/state")[1]["streams"]] == ["front", "back", "dead"],
              "the service's order, the camera that never opened included")
        dead = _get(view, "/api/state?stream=dead")[1]  # known from its status alone: no frame, no size
        assert dead["state"] in ("connecting", "reconnecting") and dead["frame_size"] is None, dead
        back = _wait(lambda: (s := _get(view, "/api/state?stream=back")[1])["recent_frames"] and s, "back's stats")
        assert back["frame_size"] == [128, 96] and back["history"] == 64 and back["service_fps"] > 0
        assert _get(view, "/api/state")[1]["frame_size"] == [160, 120]  # the first stream's
        reply = _post(view, {"cmd": "add", "id": 7, "box": [10, 10, 60, 60], "frame": back["capture_seq"],
                             "stream": "back"})
        assert reply["ok"] and reply["id"] == 7, reply
        _wait(lambda: 7 in [o["id"] for o in _get(view, "/api/state?stream=back")[1]["objects"]], "7 on back")
        assert 7 not in [o["id"] for o in _get(view, "/api/state?stream=front")[1]["objects"]]
        reply = _post(view, {"cmd": "remove", "id": 7})  # two streams: the service wants to know which
        assert not reply["ok"] and reply["field"] == "stream"
        _, frames, _ = asyncio.run(_viewer(view.port, 2.0, messages=({"type": "watch", "watch": ["back"]},)))
        assert set(frames) == {"back"} and frames["back"] >= 8
        assert _post(view, {"cmd": "remove", "id": 7, "stream": "back"})["ok"]
    finally:
        program.stop()

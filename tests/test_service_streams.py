"""Several cameras in one service (`streams:`): the config's validation, one set of engines for every
stream's tracker, round-robin fairness, a dying source that the other streams do not notice, topics and
`seq` per stream, commands and `stats` per stream, the `streams` query and the metrics' `stream` label.
Fake trackers and readers (fast), real ZeroMQ sockets on loopback, every wait bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from edge_vos.client import CommandClient, CommandFailed, MaskResult, Status, Subscriber
from edge_vos.config import ConfigError, from_dict
from edge_vos.service.config import ServiceConfig
from edge_vos.service.pipeline import Service
from edge_vos.service.sources import SourceError

from .fakes import ArrayReader, FakeTracker
from .service_support import CHEAP_TRACKER, WAIT, H, W, first_mask, frames, wait_for
from .service_support import service_config as _config

TWO = [{"id": "front"}, {"id": "back", "tracker": {"max_objects": 2}}]


# ---- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("streams", "field", "text"), [
    ([{"id": "front"}, {"id": "front"}], "streams[1].id", 'duplicate "front"'),
    ([{"id": "a/b"}], "streams[0].id", "letters, digits"),
    ([{"source": "synthetic:"}], "streams[0].id", "required"),
    ([{"id": "a", "tracker": {"backend": "torch"}}], "streams[0].tracker.backend", "shared by every stream"),
    ([{"id": "a", "tracker": {"model": {"arch": "stcn-r18"}}}], "streams[0].tracker.model", "shared"),
    ([{"id": "a", "tracker": {"max_objects": 0}}], "streams[0].tracker.max_objects", "> 0"),
    ([{"id": "a", "source": {"fps": -1}}], "streams[0].source.fps", "> 0"),
    ([{"id": "a", "camera": 0}], "streams[0]", "unknown field"),
    (["front"], "streams[0]", "expected a mapping"),
])
def test_bad_streams_are_refused_naming_the_field(streams: list[Any], field: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(ServiceConfig, {"streams": streams})
    assert info.value.field == field and text in info.value.message


def test_a_stream_lays_its_sections_over_the_top_level_ones() -> None:
    config = from_dict(ServiceConfig, {
        "source": {"pace": "realtime", "fps": 7}, "tracker": {"resolution": 240, "memory": {"capacity": 5}},
        "streams": [{"id": "front", "source": "synthetic:seed=1"},
                    {"id": "back", "source": {"uri": "synthetic:seed=2", "fps": 3},
                     "tracker": {"max_objects": 2, "memory": {"mem_every": 3}}, "prompt": {"resize": True}}]})
    front, back = config.stream_configs
    assert (front.id, front.source.uri, front.source.fps, front.source.pace) == ("front", "synthetic:seed=1", 7,
                                                                                 "realtime")
    assert (back.source.uri, back.source.fps, back.prompt.resize, back.tracker.max_objects) == ("synthetic:seed=2", 3,
                                                                                              True, 2)
    assert back.tracker.memory.capacity == 5 and back.tracker.memory.mem_every == 3  # merged, not replaced
    assert front.tracker == config.tracker and config.stream_ids == ["front", "back"]


def test_without_streams_the_service_is_one_stream_named_stream_id() -> None:
    config = from_dict(ServiceConfig, {"stream_id": "door"})
    assert [(s.id, s.source, s.tracker) for s in config.stream_configs] == [("door", config.source, config.tracker)]


def test_trackers_of_all_streams_share_one_network_and_its_runners() -> None:
    from edge_vos.service.trackers import shared_trackers

    config = from_dict(ServiceConfig, {"tracker": {**CHEAP_TRACKER, "backend": "torch"}, "streams": TWO})
    make = shared_trackers(config)
    front, back = (make(s) for s in config.stream_configs)
    assert front.engines is back.engines and front.network is back.network  # type: ignore[attr-defined]
    assert front.engines.max_objects == 8  # type: ignore[attr-defined]  # built for the largest max_objects
    image = frames(1)[0]
    for tracker in (front, back):
        tracker.step(image, first_mask())
    assert front.engines.sizes == [(64, 96)]  # type: ignore[attr-defined]  # one runner serves both
    assert front.memory is not back.memory  # type: ignore[attr-defined]  # each stream its own state
    crowded = np.zeros((H, W), np.uint8)
    crowded[:10, :10], crowded[20:30, :10], crowded[40:50, :10] = 1, 2, 3
    from edge_vos.tracker import TrackerInputError

    with pytest.raises(TrackerInputError, match="2 objects"):
        back.step(image, crowded)  # its own max_objects on the shared engines
    assert front.step(image, crowded).object_ids == [1, 2, 3]


# ---- the running service ---------------------------------------------------------------------------


@contextmanager
def running(config: ServiceConfig, readers: dict[str, Any], trackers: dict[str, FakeTracker] | None = None
            ) -> Iterator[tuple[Service, dict[str, FakeTracker]]]:
    trackers = trackers or {sid: FakeTracker() for sid in readers}
    service = Service(config, tracker_factory=lambda s: trackers[s.id], readers=readers)
    service.start()
    try:
        yield service, trackers
    finally:
        service.stop(timeout=3)
        assert not service.worker.is_alive() and not service.publisher.is_alive()


def _two(**sections: Any) -> ServiceConfig:
    """The test service config (service_support) with the two streams of TWO."""
    return from_dict(ServiceConfig, {**_as_data(_config(**sections)), "streams": TWO})


def test_each_stream_has_its_topics_and_seq_and_every_header_names_it() -> None:
    config = _two(publish={**WAIT, "hwm": 100, "preview": True}, pipeline={"max_frames": 12})
    readers = {"front": ArrayReader(frames(12, seed=1), mask=first_mask()), "back": ArrayReader(frames(12, seed=2))}
    topics = ("masks", "status", "preview")
    with running(config, readers) as (service, _), \
            Subscriber(service.publisher.last_endpoint, topics, timeout_s=10, hwm=100) as everything, \
            Subscriber(service.publisher.last_endpoint, topics[:2], timeout_s=10, stream="back") as back:
        got: dict[str, list[int]] = {"front": [], "back": []}
        previews: set[str] = set()
        ended: set[str] = set()
        while ended != {"front", "back"}:
            message = everything.recv()
            assert message is not None, f"silent after {got}"
            if isinstance(message, MaskResult):
                got[message.header["stream"]].append(message.seq)
            elif isinstance(message, Status) and message.header["state"] == "ended":
                ended.add(message.header["stream"])
                assert message.header["last_seq"] == 11
            elif not isinstance(message, Status):
                previews.add(message.header["stream"])
        assert got == {"front": list(range(12)), "back": list(range(12))} and previews == {"front", "back"}
        only_back = [back.recv() for _ in range(5)]
        assert {m.header["stream"] for m in only_back if m is not None} == {"back"}
    assert service.publisher.seqs == {"front": 12, "back": 12}


def _as_data(config: ServiceConfig) -> dict[str, Any]:
    from edge_vos.config import to_dict

    data = to_dict(config)
    data.pop("streams")
    return data


def test_round_robin_serves_every_stream_in_turn() -> None:
    """Both streams always have a frame waiting (fastest; reading a frame costs nothing next to a 10 ms step):
    once both have started, the tracker alternates between them, so neither runs ahead of the other."""
    order: list[str] = []

    class Recording(FakeTracker):
        def __init__(self, name: str) -> None:
            super().__init__(delay_s=0.01)
            self.name = name

        def step(self, image: Any, mask: Any = None, objects: Any = None, *, defer_memory_write: bool = False) -> Any:
            order.append(self.name)
            return super().step(image, mask, objects, defer_memory_write=defer_memory_write)

    readers = {"front": ArrayReader(frames(40, seed=1)), "back": ArrayReader(frames(40, seed=2))}
    trackers = {"front": Recording("front"), "back": Recording("back")}
    config = _two(pipeline={"frame_queue": 4}, publish={"hwm": 1000})
    with running(config, readers, trackers) as (service, _):
        assert service.wait(30)
    assert order.count("front") == order.count("back") == 40
    started = max(order.index("front"), order.index("back"))
    repeats = sum(a == b for a, b in zip(order[started:], order[started + 1:], strict=False))
    assert repeats <= 3, order  # a repeat only where a capture thread was descheduled (a loaded machine)


class DyingReader(ArrayReader):
    """A camera paced like a live one; while `dead` is set every read and open fails (unplugged)."""

    def __init__(self, seed: int) -> None:
        super().__init__(frames(20, seed=seed))
        self.dead = threading.Event()

    def open(self) -> None:
        if self.dead.is_set():
            raise SourceError("camera unplugged")
        super().open()

    def read(self) -> np.ndarray | None:
        if self.dead.is_set():
            raise SourceError("camera unplugged")
        frame = super().read()
        if frame is None:
            self.index = 0
            frame = super().read()
        return frame


def test_a_dying_source_reconnects_on_its_own_and_the_other_stream_does_not_notice() -> None:
    """Both cameras run at 20 fps (realtime pacing bounds the rate, not the CPU); while `front` is unplugged
    `back` keeps its rate, and `front` comes back by itself."""
    readers = {"front": DyingReader(1), "back": DyingReader(2)}
    config = _two(source={"pace": "realtime", "fps": 20, "loop": True})
    with running(config, readers) as (service, _):
        front, back = service.by_id["front"], service.by_id["back"]
        with Subscriber(service.publisher.last_endpoint, ("status",), timeout_s=0.1, hwm=1000) as statuses:
            wait_for(lambda: back.frames >= 5 and front.frames >= 5)
            t0, n0 = time.monotonic(), back.frames
            time.sleep(1.5)
            healthy_rate = (back.frames - n0) / (time.monotonic() - t0)
            readers["front"].dead.set()
            wait_for(lambda: front.capture.state == "reconnecting")
            t0, n0, f0 = time.monotonic(), back.frames, front.frames
            time.sleep(1.5)
            dead_rate = (back.frames - n0) / (time.monotonic() - t0)
            assert front.frames - f0 <= 1 and front.capture.reconnects >= 1
            readers["front"].dead.clear()
            wait_for(lambda: front.capture.state == "streaming" and front.frames > f0 + 3)
            seen = []
            while (message := statuses.recv()) is not None:
                seen.append((message.header["stream"], message.header["state"]))
        assert healthy_rate > 10 and dead_rate >= 0.85 * healthy_rate, (healthy_rate, dead_rate)
        assert ("front", "reconnecting") in seen and all(state == "streaming" for s, state in seen if s == "back")
        assert service.exit_error is None and back.capture.reconnects == 0


def test_commands_name_their_stream_and_stats_answer_per_stream_and_overall() -> None:
    readers = {"front": ArrayReader(frames(3000)), "back": ArrayReader(frames(3000))}
    config = _two(source={"pace": "realtime", "fps": 30}, metrics={"enabled": False})
    with running(config, readers) as (service, trackers):
        endpoint = service.control.last_endpoint  # type: ignore[union-attr]
        wait_for(lambda: all(s.snapshot.frame_hw for s in service.streams))
        with CommandClient(endpoint, timeout_s=5) as ctl:
            with pytest.raises(CommandFailed) as info:
                ctl.add_box(3, (40, 30, 120, 110), method="grabcut")
            assert info.value.reply["field"] == "stream" and "front" in info.value.reply["error"]
            with pytest.raises(CommandFailed) as info:
                ctl.request({"cmd": "reset", "stream": "side"})
            assert info.value.reply["field"] == "stream" and "unknown stream" in info.value.reply["error"]
            assert [s["id"] for s in ctl.streams()] == ["front", "back"]
            overall = ctl.stats()
            assert set(overall["streams"]) == {"front", "back"} and "objects" not in overall
        with CommandClient(endpoint, timeout_s=5, stream="back") as back:
            reply = back.add_polygon(4, [[10, 10], [60, 10], [60, 50]])
            assert reply["ok"] and reply["area"] > 0
            assert back.stats()["stream"] == "back" and back.stats()["objects"] == [4]
            with pytest.raises(CommandFailed, match="cannot track more than 2 objects"):  # back's own limit
                for obj_id in (5, 6):
                    back.add_polygon(obj_id, [[10, 60], [60, 60], [60, 100]])
        assert 4 in trackers["back"].object_ids and trackers["front"].object_ids == []
        with CommandClient(endpoint) as ctl:
            per_stream = {s["id"]: s for s in ctl.streams()}
        assert per_stream["back"]["max_objects"] == 2 and per_stream["front"]["frame_size"] == [W, H]
        m = service.metrics
        assert m.value("frames_processed_total", {"stream": "front"}) > 0
        assert m.value("frames_processed_total", {"stream": "back"}) > 0
        assert m.value("objects", {"stream": "back"}) >= 1 and m.value("objects", {"stream": "front"}) == 0


def test_one_stream_ending_leaves_the_other_running() -> None:
    readers = {"front": ArrayReader(frames(5)), "back": ArrayReader(frames(3000))}
    config = _two(source={"pace": "realtime", "fps": 30})
    with running(config, readers) as (service, _):
        with Subscriber(service.publisher.last_endpoint, ("status",), timeout_s=5, stream="front") as sub:
            wait_for(lambda: service.by_id["front"].done)
            states = []
            while (message := sub.recv(timeout_s=1)) is not None:
                states.append(message.header["state"])
        n = service.by_id["back"].frames
        wait_for(lambda: service.by_id["back"].frames > n + 5)
        assert "ended" in states and not service.done.is_set()


class HangingReader(DyingReader):
    """A grabber stuck in a driver call while `hang` is set."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.hang = threading.Event()

    def read(self) -> np.ndarray | None:
        while self.hang.is_set():
            time.sleep(0.01)
        return super().read()


def test_the_watchdog_pings_only_while_every_stream_is_healthy() -> None:
    from edge_vos.service.notify import Notifier

    from .service_support import drain, notify_socket

    readers = {"front": HangingReader(1), "back": HangingReader(2)}
    notify_sock, env = notify_socket(watchdog_usec=400_000)
    config = _two(source={"pace": "realtime", "fps": 30, "loop": True})
    trackers = {sid: FakeTracker() for sid in readers}
    with notify_sock:
        service = Service(config, tracker_factory=lambda s: trackers[s.id], readers=readers, notifier=Notifier(env))
        service.start()
        try:
            wait_for(lambda: all(s.frames > 3 for s in service.streams))
            assert any("WATCHDOG=1" in m for m in drain(notify_sock, 0.5))
            readers["back"].hang.set()  # back's grabber hangs; front goes on
            time.sleep(0.5)
            drain(notify_sock, 0.05)
            n = service.by_id["front"].frames
            assert not any("WATCHDOG=1" in m for m in drain(notify_sock, 0.6))
            assert service.by_id["front"].frames > n + 5
            readers["back"].hang.clear()
            assert any("WATCHDOG=1" in m for m in drain(notify_sock, 0.6))
        finally:
            readers["back"].hang.clear()
            service.stop(timeout=3)


def test_ctl_and_subscribe_take_stream(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from edge_vos.cli import main

    readers = {"front": ArrayReader(frames(3000)), "back": ArrayReader(frames(3000))}
    config = _two(source={"pace": "realtime", "fps": 30})
    with running(config, readers) as (service, trackers):
        endpoint = ["ctl", "--endpoint", service.control.last_endpoint, "--timeout", "3"]  # type: ignore[union-attr]

        def ctl(*argv: str) -> tuple[int, dict[str, Any]]:
            rc = main([*endpoint, *argv])
            return rc, json.loads(capsys.readouterr().out)

        wait_for(lambda: all(s.snapshot.frame_hw for s in service.streams))
        rc, reply = ctl("add-polygon", "4", "10,10", "60,10", "60,50")
        assert rc == 1 and reply["field"] == "stream"
        rc, reply = ctl("--stream", "back", "add-polygon", "4", "10,10", "60,10", "60,50")
        assert rc == 0 and reply["id"] == 4 and trackers["back"].object_ids == [4]
        rc, reply = ctl("streams")
        assert rc == 0 and [s["id"] for s in reply["streams"]] == ["front", "back"]
        assert ctl("--stream", "back", "stats")[1]["stats"]["objects"] == [4]
        rc = main(["subscribe", "--endpoint", service.publisher.last_endpoint, "--stream", "back", "--count", "3",
                   "--timeout", "10"])
        lines = capsys.readouterr().out.strip().splitlines()
        assert rc == 0 and len(lines) == 3 and all("stream back" in line and "4:" in line for line in lines)

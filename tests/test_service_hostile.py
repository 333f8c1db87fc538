"""Hostile control traffic, generated: no request may end a thread, every request gets exactly one reply,
and a thread that dies anyway stops the watchdog and the service (issue #13, items 1 and 7)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_vos.client import CommandClient
from edge_vos.service.commands import Command, CommandError, Limits, parse_request
from edge_vos.service.notify import Notifier
from edge_vos.service.pipeline import Service

from .fakes import ArrayReader, FakeTracker
from .service_support import Dealer, drain, first_mask, frames, notify_socket, running, service_config, wait_for
from .strategies import command_objects, huge_number_requests, requests

LIMITS = Limits(frame_hw=(120, 160), max_polygon_points=100)


def parse_command(raw: bytes, limits: Limits) -> Command:
    """The command of a valid request (the request id is the control thread's and tested there)."""
    return parse_request(raw, limits).command


def _parse_or_refuse(raw: bytes) -> None:
    try:
        command = parse_command(raw, LIMITS)
    except CommandError as exc:
        reply = exc.to_reply()
        assert reply["ok"] is False and reply["error"]
        json.dumps(reply)  # the reply itself can always be sent
        assert len(reply["error"]) < 1000  # client text is quoted cut short
        return
    assert isinstance(command, Command.__args__)  # type: ignore[attr-defined]


def test_the_two_messages_that_killed_the_control_thread() -> None:
    with pytest.raises(CommandError, match="not valid JSON"):
        parse_command(b'{"cmd": "ping", "req": ' + b"9" * 5000 + b"}", LIMITS)
    with pytest.raises(CommandError, match="finite numbers"):
        parse_command(b'{"cmd": "add", "id": 1, "box": [0, 0, ' + b"9" * 400 + b", 10]}", LIMITS)
    with pytest.raises(CommandError, match="finite numbers"):
        parse_command(b'{"cmd": "add", "id": 1, "polygon": [[0, 0], [9, 0], [' + b"9" * 400 + b", 9]]}", LIMITS)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_any_request_parses_or_is_refused_with_a_command_error(raw: bytes) -> None:
    _parse_or_refuse(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_objects())
def test_command_shaped_objects_parse_or_are_refused(data: dict[str, Any]) -> None:
    _parse_or_refuse(json.dumps(data).encode())


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    config = service_config(source={"pace": "realtime", "fps": 50, "loop": True},
                            control={"max_message_bytes": 400_000, "reply_timeout_s": 5})
    with running(config, ArrayReader(frames(20), mask=first_mask()), FakeTracker(delay_s=0.005)) as svc:
        with CommandClient(svc.control.last_endpoint, timeout_s=3, retries=0) as ctl:
            wait_for(lambda: ctl.stats()["frames_processed"] > 0)
        yield svc


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(body=requests | huge_number_requests())
def test_generated_requests_over_the_socket_get_exactly_one_reply(service: Service, body: bytes) -> None:
    client = Dealer(service.control.last_endpoint)
    try:
        client.send(body)
        reply = client.recv(timeout_s=5)
        assert reply is not None, f"no reply to {body[:80]!r}"
        assert isinstance(reply.get("ok"), bool)
        assert client.recv(timeout_s=0.02) is None  # and only one
    finally:
        client.close()
    assert service.control.is_alive() and service.worker.is_alive() and service.dead_thread() is None


def test_a_pipelined_flood_gets_one_reply_per_request(service: Service) -> None:
    client = Dealer(service.control.last_endpoint)
    n = 3000
    try:
        for i in range(n):
            body = {"cmd": "add", "id": 2, "box": [10, 10, 50, 50], "req": i} if i % 3 else {"cmd": "ping", "req": i}
            client.send(json.dumps(body).encode())
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while len(seen) < n and time.monotonic() < deadline:
            reply = client.recv(timeout_s=1)
            if reply is not None:
                seen[reply["req"]] = seen.get(reply["req"], 0) + 1
        assert client.recv(timeout_s=0.2) is None
    finally:
        client.close()
    assert sorted(seen) == list(range(n)) and set(seen.values()) == {1}
    assert service.metrics.value("control_replies_undelivered_total", {"reason": "not_read"}) == 0


def test_a_client_that_reads_replies_late_still_gets_them_all(service: Service) -> None:
    """Replies beyond the socket's high-water mark wait in the outbox instead of being dropped."""
    client = Dealer(service.control.last_endpoint)
    client.socket.setsockopt(zmq.RCVHWM, 10)  # a small client-side queue: the service's side fills up
    n = 20000  # 1.4 kB replies: 28 MB, more than the socket buffers and the high-water marks hold
    try:
        for i in range(n):
            client.send(json.dumps({"cmd": "config", "req": i}).encode())
        time.sleep(0.5)  # not reading meanwhile
        got = 0
        # until all came or a generous deadline: a loaded machine may pause the service for over a second
        deadline = time.monotonic() + 120
        while got < n and time.monotonic() < deadline:
            if client.recv(timeout_s=1) is not None:
                got += 1
        extra = client.recv(timeout_s=0.5)
    finally:
        client.close()
    assert got == n
    assert extra is None


def test_exceptions_from_one_request_become_error_replies(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> Any:
        raise TypeError("a bug")

    monkeypatch.setattr(service.control, "_limits", broken)
    with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
        reply = ctl.request({"cmd": "ping", "req": 5}, check=False)
        assert reply == {"ok": False, "error": "internal error while handling the request: TypeError", "req": 5}
    monkeypatch.undo()
    with CommandClient(service.control.last_endpoint, timeout_s=3, retries=0) as ctl:
        assert ctl.ping()
    assert service.control.is_alive()


class _Fatal(BaseException):
    """Stands for whatever could still end a thread (not an Exception: the handlers do not catch it)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_control_thread_that_dies_stops_the_watchdog_and_the_service() -> None:
    sock, env = notify_socket(watchdog_usec=200_000)
    config = service_config(source={"pace": "realtime", "fps": 50, "loop": True})
    with sock, running(config, ArrayReader(frames(20), mask=first_mask()), notifier=Notifier(env)) as svc:
        wait_for(lambda: svc.worker.frames > 2)
        assert any("WATCHDOG=1" in m for m in drain(sock, 0.3))

        def fatal(*_: Any) -> Any:
            raise _Fatal("simulated")

        svc.control._handle = fatal  # type: ignore[method-assign]
        client = Dealer(svc.control.last_endpoint)
        client.send(b'{"cmd": "ping"}')
        try:
            wait_for(lambda: not svc.control.is_alive(), 5)
        finally:
            client.close()
        assert svc.metrics.value("edge_vos_thread_alive".removeprefix("edge_vos_"), {"thread": "control"}) == 0
        drain(sock, 0.15)
        assert not any("WATCHDOG=1" in m for m in drain(sock, 0.5))
        assert svc.wait(5)
        assert "control thread died" in (svc.exit_error or "")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from([b"{}", b"\xff", b'{"cmd":"reset"}', b'{"cmd":"add","id":3,"box":[0,0,40,40]}',
                                 b'{"cmd":"add","id":4,"polygon":[[0,0],[30,0],[30,30]],"frame":0}',
                                 b'{"cmd":"remove","id":3}', b'{"cmd":"stats"}']), min_size=1, max_size=30))
def test_pipelined_command_sequences_get_one_reply_each(service: Service, sequence: list[bytes]) -> None:
    """Adds, removes and resets as the inference thread applies them between frames: one reply each."""
    client = Dealer(service.control.last_endpoint)
    try:
        for body in sequence:
            client.send(body)
        replies = []
        while len(replies) < len(sequence):
            # Generous: each add runs the prompt network, slow on a loaded 2-core machine; this is about
            # one reply per request, not speed.
            reply = client.recv(timeout_s=30)
            assert reply is not None, f"{len(replies)} replies to {len(sequence)} requests"
            replies.append(reply)
        assert client.recv(timeout_s=0.05) is None
    finally:
        client.close()
    assert service.control.is_alive() and service.worker.is_alive()

"""The web view under hostile clients (issue #24), on real sockets on 127.0.0.1: no input gets a 500 or logs a
traceback, every error is JSON, every refusal is one rate-limited WARNING line, a client that stops reading
is cut off after `view.send_timeout_s` and its connection or viewer slot freed. A service with the fake
tracker on a synthetic scene feeds the view; tools/hostile_view.py runs the same attacks at scale."""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge_vos.ratelog import RateLimitedLog
from edge_vos.service.pipeline import Service

from .service_support import running, wait_for
from .strategies import requests as command_bodies
from .view_attacks import (
    BAD_AUTHORIZATIONS,
    BAD_ORIGINS,
    MALFORMED,
    LogTally,
    authorizations,
    exchange,
    origins,
    request,
    view_config,
    ws_handshake,
    ws_text_frame,
    ws_texts,
)

TOKEN = "s3cret-token-for-tests"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with running(view_config(), None) as svc:
        wait_for(lambda: svc.view.feed.snapshot["state"] == "streaming", 20)
        yield svc


@pytest.fixture(scope="module")
def guarded() -> Iterator[Service]:
    with running(view_config(token=TOKEN), None) as svc:
        wait_for(lambda: svc.view.feed.snapshot["state"] == "streaming", 20)
        yield svc


@pytest.fixture(scope="module")
def tally() -> Iterator[LogTally]:
    handler = LogTally()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


def _assert_json_4xx_and_quiet(reply: Any, tally: LogTally, ok_statuses: tuple[int, ...] = ()) -> None:
    assert reply.status is not None, "no answer"
    assert reply.status in ok_statuses or 400 <= reply.status < 500, (reply.status, reply.body[:200])
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    if reply.status >= 400:
        assert reply.json()["ok"] is False and reply.json()["error"]
    assert not tally.errors and not tally.tracebacks, [r.getMessage() for r in tally.errors + tally.tracebacks]


# ---- 1: no 500, no traceback ---------------------------------------------------------------------------


@FUZZ
@given(body=command_bodies)
@example(body=b'{"cmd": "ping", "req": ' + b"1" * 5000 + b"}")
@example(body=b'{"cmd": "ping", "req": NaN}')
def test_any_command_body_gets_json_and_never_a_500(service: Service, tally: LogTally, body: bytes) -> None:
    tally.clear()
    reply = request(service.view.port, "POST", "/api/command", body, {"Content-Type": "application/json"})
    _assert_json_4xx_and_quiet(reply, tally, ok_statuses=(200,))


def test_a_5000_digit_integer_is_a_400(service: Service) -> None:
    reply = request(service.view.port, "POST", "/api/command", b'{"cmd": "ping", "req": ' + b"1" * 5000 + b"}")
    assert reply.status == 400 and "not valid JSON" in reply.json()["error"]


@FUZZ
@given(origin=origins)
def test_any_origin_is_answered_without_a_500(service: Service, tally: LogTally, origin: str) -> None:
    tally.clear()
    reply = request(service.view.port, "POST", "/api/command", b'{"cmd": "ping"}', {"Origin": origin})
    _assert_json_4xx_and_quiet(reply, tally, ok_statuses=(200,))


@pytest.mark.parametrize("origin", BAD_ORIGINS)
def test_an_origin_that_is_no_url_is_refused_403(service: Service, tally: LogTally, origin: str) -> None:
    tally.clear()
    reply = request(service.view.port, "POST", "/api/command", b'{"cmd": "ping"}', {"Origin": origin})
    assert reply.status in (400, 403) and reply.json()["ok"] is False  # 400: a NUL the parser refuses
    assert not tally.errors


@FUZZ
@given(auth=authorizations, path=st.sampled_from(["/api/state", "/api/command", "/api/stream"]))
def test_any_authorization_is_answered_without_a_500(guarded: Service, tally: LogTally, auth: str, path: str) -> None:
    tally.clear()
    reply = request(guarded.view.port, "POST" if path == "/api/command" else "GET", path, b"{}",
                    {"Authorization": auth})
    _assert_json_4xx_and_quiet(reply, tally)


@pytest.mark.parametrize("auth", BAD_AUTHORIZATIONS)
def test_a_non_ascii_token_is_a_401(guarded: Service, auth: str) -> None:
    reply = request(guarded.view.port, "GET", "/api/state", headers={"Authorization": auth})
    assert reply.status == 401 and "token" in reply.json()["error"]
    good = request(guarded.view.port, "GET", "/api/state", headers={"Authorization": f"Bearer {TOKEN}"})
    assert good.status == 200


# ---- 2: malformed messages and refusals: JSON, one WARNING line each, rate-limited ------------------------


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_message_gets_a_json_400_and_one_warning(service: Service, tally: LogTally, name: str) -> None:
    tally.clear()
    before = service.view.refusals.total
    reply = exchange(service.view.port, MALFORMED[name])
    _assert_json_4xx_and_quiet(reply, tally)
    wait_for(lambda: service.view.refusals.total > before, 5)
    time.sleep(0.1)
    assert service.view.refusals.total == before + 1  # one line (unless the rate limit holds it back)
    lines = [r.getMessage() for r in tally.records if r.levelno >= logging.WARNING]
    assert all(line.startswith("view: refused: ") and "\n" not in line for line in lines), lines


def test_refusals_are_one_warning_line_each_then_rate_limited(tally: LogTally) -> None:
    with running(view_config(), None) as svc:  # its own view: a fresh rate-limit window
        port = svc.view.port
        tally.clear()
        for _ in range(3):
            assert request(port, "POST", "/api/command", b"{}", {"Origin": "http://evil.example"}).status == 403
        lines = [r.getMessage() for r in tally.records if r.levelno == logging.WARNING]
        assert len(lines) == 3 and all("403 POST '/api/command'" in line and "evil.example" in line
                                       for line in lines), lines
        for i in range(150):
            data = MALFORMED["bad Content-Length"] if i % 2 else MALFORMED["HTTP/2 preface"]
            assert exchange(port, data).status == 400
        assert tally.count(logging.WARNING) == svc.view.refusals.burst  # the burst, then silence in this window
        assert svc.view.refusals.total == 153
        assert not tally.errors and not tally.tracebacks
        assert request(port, "GET", "/api/state").status == 200


def test_rate_limited_log_counts_what_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.ratelog")
    limited = RateLimitedLog(logger, "refused", period_s=0.2, burst=3, level=logging.WARNING)
    with caplog.at_level(logging.WARNING, "test.ratelog"):
        for i in range(10):
            limited.log("request %d", i)
        time.sleep(0.25)
        limited.log("request %d", 10)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused: request 0", "refused: request 1", "refused: request 2",
                     "refused: 7 more not logged in the last 0 s", "refused: request 10"]
    assert limited.total == 11


# ---- 3: a client that never reads is cut off -----------------------------------------------------------------


def test_a_client_that_pipelines_and_never_reads_is_cut_off() -> None:
    """GET /static/app.js (no token needed) pipelined and never read: the answers fill the socket and the
    connection would be held for ever; the write deadline cuts it after send_timeout_s."""
    with running(view_config(send_timeout_s=1.0, idle_timeout_s=30.0), None) as svc:
        view = svc.view
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", view.port))
        try:
            wait_for(lambda: view.connections.open == 1, 5)
            sock.setblocking(False)
            burst = b"GET /static/app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 50
            sent, last_sent = 0, time.monotonic()
            while time.monotonic() - last_sent < 1 and sent < 20000:  # until the server stops reading them
                try:
                    sock.send(burst)
                    sent, last_sent = sent + 50, time.monotonic()
                except BlockingIOError:
                    time.sleep(0.05)
                except OSError:
                    break
            wait_for(lambda: view.connections.open == 0, view.config.send_timeout_s + 10)
        finally:
            sock.close()
        assert view.connections.aborted == 1
        assert request(view.port, "GET", "/api/state").status == 200


def test_one_address_cannot_take_every_connection() -> None:
    with running(view_config(max_connections=8, max_connections_per_client=4), None) as svc:
        view = svc.view
        idle = [socket.create_connection(("127.0.0.1", view.port)) for _ in range(8)]
        try:
            wait_for(lambda: view.connections.open == 8 or view.connections.refused == 4, 5)
            refused = [sock.recv(1024) for sock in idle[4:]]
            assert all(reply.startswith(b"HTTP/1.1 503") and b"from this address" in reply for reply in refused)
            assert request(view.port, "GET", "/api/state", source="127.0.0.2").status == 200  # another client
        finally:
            for sock in idle:
                sock.close()
        wait_for(lambda: view.connections.open == 0 and not view.connections.by_client, 5)


# ---- 4: stalled viewers free their slots ---------------------------------------------------------------


def test_viewers_that_ack_but_never_read_are_cut_off_and_free_their_slots() -> None:
    # Large frames fill the socket buffers fast.
    with running(view_config("synthetic:seed=1&frames=20&size=480x640&objects=2", send_timeout_s=1.0,
                             max_viewers=2), None) as svc:
        view = svc.view
        wait_for(lambda: view.feed.snapshot["state"] == "streaming", 20)
        stalled = [ws_handshake(view.port) for _ in range(2)]
        try:
            with pytest.raises(ConnectionError, match="503"):
                ws_handshake(view.port).close()
            t0 = time.monotonic()
            ack = ws_text_frame('{"type": "ack"}')
            while view.viewers.connected and time.monotonic() - t0 < 30:
                for sock in stalled:
                    try:
                        sock.sendall(ack)
                    except OSError:
                        pass
                time.sleep(0.1)
            assert not view.viewers.connected, "stalled viewers still hold their slots"
            ws_handshake(view.port).close()  # a newcomer gets in
        finally:
            for sock in stalled:
                sock.close()


# ---- also: JSON pongs, the command slot -------------------------------------------------------------------


def test_a_pong_never_echoes_nan_or_infinity(service: Service) -> None:
    sock = ws_handshake(service.view.port, rcvbuf=1 << 20)
    try:
        for t in ("NaN", "Infinity", "-Infinity", "1e999", "1" * 4000, "true", "1234.5"):
            sock.sendall(ws_text_frame(f'{{"type": "ping", "t": {t}}}'))
        texts = ws_texts(sock, until=lambda text: '"pong"' in text and "1234.5" in text)
    finally:
        sock.close()

    def strict(constant: str) -> Any:
        raise AssertionError(f"not JSON: {constant}")

    pongs = [m for m in (json.loads(t, parse_constant=strict) for t in texts) if m["type"] == "pong"]
    assert [p["t"] for p in pongs] == [1234.5] and all(math.isfinite(p["server_ms"]) for p in pongs)


def test_a_slow_body_holds_no_command_slot(tally: LogTally) -> None:
    with running(view_config(command_queue=1, send_timeout_s=5.0), None) as svc:
        port = svc.view.port
        slow = socket.create_connection(("127.0.0.1", port))
        try:
            slow.sendall(b"POST /api/command HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.3)
            assert request(port, "POST", "/api/command", b'{"cmd": "ping"}').json() == {"ok": True, "pong": True}
            tally.clear()
        finally:
            slow.close()  # halfway through its body: one refusal line, no traceback
        wait_for(lambda: svc.view.refusals.total >= 1, 5)
        assert not tally.errors and not tally.tracebacks

"""The live web view without a browser: configuration, the HTTP API, the WebSocket frame stream, security
and hostile clients, `edge-vos view` on the public protocol. A service with the fake tracker (objects do
not move; milliseconds per frame) on a synthetic scene feeds it. Browser tests: test_view_browser.py."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
import zmq

from edge_vos.client import CommandClient, MaskResult, Subscriber
from edge_vos.config import ConfigError, from_dict, load_yaml
from edge_vos.program import Program, RunConfig
from edge_vos.service.config import ServiceConfig
from edge_vos.service.pipeline import Service
from edge_vos.view.config import ViewConfig, parse_listen
from edge_vos.view.feed import ClientKeys, pack_frame, same_host, unpack_frame
from edge_vos.view.server import ViewServer
from edge_vos.view.viewers import MAX_IN_FLIGHT

from .fakes import FakeTracker
from .service_support import wait_until as _wait

ROOT = Path(__file__).resolve().parents[1]
SCENE = "synthetic:seed=1&frames=40&size=120x160&objects=2&distractors=1"


def _service(**overrides: Any) -> Program:
    settings = {
        "source.uri": SCENE, "source.loop": True, "source.fps": 20.0, "source.pace": "realtime",
        "publish.endpoint": "tcp://127.0.0.1:*", "control.endpoint": "tcp://127.0.0.1:*", "publish.preview": True,
        "control.history": 64, "view.listen": "127.0.0.1:0", "view.send_timeout_s": 2.0,
        "view.stats_every_s": 0.2, **overrides,
    }
    config = load_yaml(RunConfig, None, settings)
    program = Program(config, tracker_factory=lambda c: FakeTracker(delay_s=0.01))
    program.start()
    return program


@pytest.fixture(scope="module")
def service() -> Iterator[Program]:
    svc = _service()
    try:
        _wait(lambda: svc.view.feed.snapshot["state"] == "streaming", "the view sees frames")
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def guarded() -> Iterator[Program]:
    """A service whose view demands a token."""
    svc = _service(**{"view.token": "s3cret-token-for-tests"})
    try:
        _wait(lambda: svc.view.feed.snapshot["state"] == "streaming", "the view sees frames")
        yield svc
    finally:
        svc.stop()


def _png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def _request(view: ViewServer, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", view.port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _api(view: ViewServer, path: str, command: Any = None, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, Any]]:
    body = None if command is None else json.dumps(command).encode()
    status, _, data = _request(view, "GET" if command is None else "POST", path, body,
                               {"Content-Type": "application/json", **(headers or {})})
    return status, json.loads(data)


# ---- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "host", "port"), [
    ("8081", "127.0.0.1", 8081), (":8081", "127.0.0.1", 8081), ("0.0.0.0:9000", "0.0.0.0", 9000),
    ("[::1]:8082", "::1", 8082), ("localhost", "localhost", 8080), ("cam.local:80", "cam.local", 80),
])
def test_listen_addresses(text: str, host: str, port: int) -> None:
    address = parse_listen(text)
    assert (address.host, address.port) == (host, port)


@pytest.mark.parametrize("text", ["", "host:99999", "host:http", "[::1", "a b:80", "x/y:1"])
def test_bad_listen_addresses_name_the_field(text: str) -> None:
    with pytest.raises(ConfigError, match=r"view\.listen"):
        from_dict(ViewConfig, {"listen": text or " "}, "view")


def test_view_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"view\.token:"):
        from_dict(ViewConfig, {"listen": "8080", "token": "short"}, "view")
    with pytest.raises(ConfigError, match=r"view\.token_file:.*not found"):
        from_dict(ViewConfig, {"listen": "8080", "token_file": str(tmp_path / "missing")}, "view")
    with pytest.raises(ConfigError, match=r"view\.max_viewers"):
        from_dict(ViewConfig, {"max_viewers": 0}, "view")
    assert not ViewConfig().enabled  # off by default
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file-123\n")
    assert ViewConfig(listen="0.0.0.0:8080", token_file=str(token_file)).resolve_token() == ("from-a-file-123", False)
    assert ViewConfig(listen="127.0.0.1:8080").resolve_token() == ("", False)
    token, generated = ViewConfig(listen="0.0.0.0:8080").resolve_token()  # beyond loopback: never tokenless
    assert generated and len(token) >= 20


def test_run_config_needs_the_preview_for_the_view() -> None:
    with pytest.raises(ConfigError, match=r"publish\.preview"):
        load_yaml(RunConfig, None, {"view.listen": "8080", "publish.preview": False})
    with pytest.raises(ConfigError, match=r"view\.listen"):
        load_yaml(RunConfig, None, {"view.listen": "8080:x"})
    with pytest.raises(ConfigError, match=r"unknown field.*view"):  # the service itself has no view section
        load_yaml(ServiceConfig, None, {"view.listen": "8080"})


def test_run_view_option_sets_listen_and_preview() -> None:
    import argparse

    from edge_vos import run_cli as cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.overrides_from_args(parser.parse_args(["--view"])) == {"view.listen": "127.0.0.1:8080",
                                                                       "publish.preview": True}
    assert cli.overrides_from_args(parser.parse_args(["--view", "0.0.0.0:9000"]))["view.listen"] == "0.0.0.0:9000"
    assert "view.listen" not in cli.overrides_from_args(parser.parse_args([]))


def test_view_imports_no_torch() -> None:
    code = ("import sys, edge_vos.view.server, edge_vos.view.cli, edge_vos.view.feed; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert not any(m.startswith('edge_vos.tracker') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_frame_packet_round_trip() -> None:
    header = {"type": "frame", "seq": 3, "objects": []}
    assert unpack_frame(pack_frame(header, b"\xff\xd8jpeg", b"png")) == (header, b"\xff\xd8jpeg", b"png")
    assert unpack_frame(pack_frame(header, b"", b"png")) == (header, b"", b"png")
    assert same_host("tcp://127.0.0.1:5555") and same_host("ipc:///tmp/x") and not same_host("tcp://jetson:5555")


# ---- the API ----------------------------------------------------------------------------------------


def test_page_and_static_files(service: Program) -> None:
    status, headers, body = _request(service.view, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"static/app.js" in body and b"http" not in body.split(b"<body>")[0].replace(b"http-equiv", b"")
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert b'<script type="module" src="static/app.js">' in body  # plain ES modules, no build step
    static = ROOT / "edge_vos" / "view" / "static"
    scripts = sorted(p.name for p in static.glob("*.js"))
    imported = {name for p in static.glob("*.js") for name in re.findall(r'from "\./([\w-]+\.js)"', p.read_text())}
    assert imported and imported <= set(scripts)  # every module a module imports is in the folder...
    for name, kind in (*((s, "text/javascript") for s in scripts), ("style.css", "text/css")):
        status, headers, body = _request(service.view, "GET", f"/static/{name}")  # ...and served
        assert status == 200 and headers["Content-Type"].startswith(kind) and len(body) > 500, name
    assert _request(service.view, "GET", "/static/../config.py")[0] == 404
    assert _request(service.view, "GET", "/static/nothing.js")[0] == 404


def test_state_describes_the_stream(service: Program) -> None:
    _wait(lambda: _api(service.view, "/api/state")[1]["recent_frames"] is not None, "stats polled")
    status, state = _api(service.view, "/api/state")
    assert status == 200
    assert state["state"] == "streaming" and state["stream"] == "cam0"
    assert state["frame_size"] == [160, 120] and state["fps"] > 0 and state["preview"] is True
    assert isinstance(state["seq"], int) and state["history"] == 64 and state["control"] is True
    assert {o["id"] for o in state["objects"]} >= {1, 2}
    for obj in state["objects"]:
        assert set(obj) == {"id", "area", "bbox", "score"}


def test_command_reply_is_the_control_sockets_reply(service: Program) -> None:
    bad = {"cmd": "remove", "id": 77, "req": "x1"}
    status, via_http = _api(service.view, "/api/command", bad)
    with CommandClient(service.service.control.last_endpoint) as ctl:
        direct = ctl.request(bad, check=False)
    assert status == 200 and via_http == direct and via_http["ok"] is False and via_http["field"] == "id"
    status, reply = _api(service.view, "/api/command", {"cmd": "ping"})
    assert reply == {"ok": True, "pong": True}  # no `req` appears that the caller did not send
    status, reply = _api(service.view, "/api/command", {"cmd": "dance"})
    assert status == 200 and reply["ok"] is False and reply["field"] == "cmd"


def test_add_and_remove_through_the_api(service: Program) -> None:
    with Subscriber(service.service.publisher.last_endpoint, timeout_s=10) as sub:
        seq = service.view.feed.snapshot["capture_seq"]
        status, reply = _api(service.view, "/api/command", {"cmd": "add", "id": 9, "box": [20, 20, 70, 80],
                                                            "frame": seq})
        assert status == 200 and reply["ok"] and reply["id"] == 9 and reply["frame"] == seq and reply["area"] > 0
        got: list[MaskResult] = []
        for message in sub:
            got.append(message)
            if 9 in message.object_ids:
                break
        assert 9 in got[-1].object_ids
    _wait(lambda: 9 in [o["id"] for o in _api(service.view, "/api/state")[1]["objects"]], "id 9 in /api/state")
    status, reply = _api(service.view, "/api/command", {"cmd": "remove", "id": 9})
    assert reply["ok"] and 9 not in reply["objects"]
    _wait(lambda: 9 not in [o["id"] for o in _api(service.view, "/api/state")[1]["objects"]], "id 9 gone")


def test_bad_bodies_are_refused_with_json_errors(service: Program) -> None:
    view = service.view
    for body, fragment in ((b"{not json", "not valid JSON"), (b"\xff\xfe", "not valid JSON"),
                           (b"[1, 2]", "one JSON object"), (b"[" * 100000, "")):
        status, _, data = _request(view, "POST", "/api/command", body, {"Content-Type": "application/json"})
        reply = json.loads(data)
        assert status == 400 and reply["ok"] is False and fragment in reply["error"], (body[:10], reply)
    huge = b'{"cmd": "ping", "pad": "' + b"x" * (view.config.max_body_bytes + 10) + b'"}'
    status, _, data = _request(view, "POST", "/api/command", huge)
    assert status == 413 and "max_body_bytes" in json.loads(data)["error"]
    # The same without a Content-Length (chunked): refused while reading, not after buffering it all.
    conn = http.client.HTTPConnection("127.0.0.1", view.port, timeout=15)
    conn.request("POST", "/api/command", body=iter([huge[i : i + 65536] for i in range(0, len(huge), 65536)]),
                 encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    assert response.status == 413
    conn.close()
    assert _request(view, "GET", "/api/command")[0] == 405
    assert _api(view, "/api/state")[0] == 200  # and it still answers


def test_cross_origin_and_foreign_hosts_are_refused(service: Program) -> None:
    view = service.view
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        status, reply = _api(view, "/api/command", {"cmd": "reset"}, headers)
        assert status == 403 and "cross-origin" in reply["error"]
    same = {"Origin": f"http://127.0.0.1:{view.port}", "Sec-Fetch-Site": "same-origin"}
    assert _api(view, "/api/command", {"cmd": "ping"}, same) == (200, {"ok": True, "pong": True})
    # DNS rebinding: a page of evil.example that resolves to 127.0.0.1 sends Host: evil.example.
    status, reply = _api(view, "/api/state", headers={"Host": "evil.example"})
    assert status == 403 and "loopback" in reply["error"]
    assert _request(view, "GET", "/", headers={"Host": f"localhost:{view.port}"})[0] == 200


def test_token_is_checked_on_every_api_call_and_the_stream(guarded: Program) -> None:
    view = guarded.view
    assert _request(view, "GET", "/")[0] == 200  # the page itself holds nothing; it asks for the token
    for headers in ({}, {"Authorization": "Bearer wrong-token-123"}):
        status, reply = _api(view, "/api/state", headers=headers)
        assert status == 401 and "token" in reply["error"]
        assert _api(view, "/api/command", {"cmd": "ping"}, headers)[0] == 401
    assert _api(view, "/api/state?token=wrong")[0] == 401
    good = {"Authorization": "Bearer s3cret-token-for-tests"}
    assert _api(view, "/api/state", headers=good)[0] == 200
    assert _api(view, "/api/state?token=s3cret-token-for-tests")[0] == 200
    assert _api(view, "/api/command", {"cmd": "ping"}, good) == (200, {"ok": True, "pong": True})
    # With a token the Host may be any name (the view can be reached by its address or host name).
    assert _api(view, "/api/state", headers={**good, "Host": "jetson.local:8080"})[0] == 200

    async def stream(query: str) -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(f"http://127.0.0.1:{view.port}/api/stream{query}") as ws:
                    message = await ws.receive(timeout=10)
                    return 101 if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY) else 0
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(stream("")) == 401
    assert asyncio.run(stream("?token=wrong")) == 401
    assert asyncio.run(stream("?token=s3cret-token-for-tests")) == 101


# ---- the frame stream --------------------------------------------------------------------------------


async def _receive_frames(port: int, count: int, headers: dict[str, str] | None = None
                          ) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], bytes, bytes]]]:
    texts: list[dict[str, Any]] = []
    frames: list[tuple[dict[str, Any], bytes, bytes]] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{port}/api/stream", headers=headers) as ws:
            await ws.send_str(json.dumps({"type": "ping", "t": 1234.5}))
            while len(frames) < count:
                message = await ws.receive(timeout=10)
                if message.type == aiohttp.WSMsgType.TEXT:
                    texts.append(json.loads(message.data))
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await ws.send_str('{"type": "ack"}')
                    frames.append(unpack_frame(message.data))
                else:
                    raise AssertionError(f"stream ended: {message}")
    return texts, frames


def test_stream_sends_frames_with_their_label_maps(service: Program) -> None:
    texts, frames = asyncio.run(_receive_frames(service.view.port, 6))
    assert texts[0]["type"] == "state" and texts[0]["state"] == "streaming"
    assert any(t["type"] == "pong" and t["t"] == 1234.5 and t["server_ms"] > 0 for t in texts)
    seqs = [h["seq"] for h, _, _ in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    header, jpeg, png = frames[-1]
    assert header["type"] == "frame" and header["width"] == 160 and header["height"] == 120
    assert header["view"]["preview"] is True and header["view"]["age_ms"] >= 0 and header["view"]["fps"] > 0
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (120, 160, 3)
    labels = _png(png)
    assert labels.shape == (120, 160)
    ids = {o["id"] for o in header["objects"] if o["area"]}
    assert set(np.unique(labels).tolist()) - {0} == ids
    for obj in header["objects"]:
        assert int((labels == obj["id"]).sum()) == obj["area"]


def test_stream_refuses_cross_origin_and_too_many_viewers(service: Program) -> None:
    port = service.view.port

    async def handshake(headers: dict[str, str]) -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(f"http://127.0.0.1:{port}/api/stream", headers=headers):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(handshake({"Origin": "http://evil.example"})) == 403
    assert asyncio.run(handshake({"Origin": f"http://127.0.0.1:{port}"})) == 101

    async def crowd() -> list[int]:
        async with aiohttp.ClientSession() as session:
            held = []
            statuses = []
            for _ in range(service.view.config.max_viewers + 2):
                try:
                    held.append(await session.ws_connect(f"http://127.0.0.1:{port}/api/stream"))
                    statuses.append(101)
                except aiohttp.WSServerHandshakeError as exc:
                    statuses.append(exc.status)
            for ws in held:
                await ws.close()
            return statuses

    statuses = asyncio.run(crowd())
    assert statuses.count(101) == service.view.config.max_viewers and statuses[-2:] == [503, 503]


def test_a_viewer_that_reads_nothing_loses_frames_and_never_holds_up_anyone(service: Program) -> None:
    """A raw WebSocket client that completes the handshake and then never reads: the view keeps only the
    newest frame for it (nothing queues), the service keeps publishing, another viewer keeps getting fresh
    frames, and after send_timeout_s the stuck viewer is disconnected."""
    view = service.view
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", view.port))
    stuck.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    try:
        _wait(lambda: len(view.viewers.connected) >= 1, "the stuck viewer joined")
        stuck_viewer = next(iter(view.viewers.connected))
        frames_before, published_before = view.viewers.frames_in, service.service.publisher.seq
        time.sleep(1.0)
        assert stuck_viewer.sent <= MAX_IN_FLIGHT  # unacknowledged: nothing more is sent, nothing queues
        _, frames = asyncio.run(_receive_frames(view.port, 5))  # a healthy viewer meanwhile
        assert service.service.publisher.seq - published_before >= 10  # 20 fps source: the service did not wait
        assert view.viewers.frames_in - frames_before >= 10
        assert frames[-1][0]["seq"] >= service.service.publisher.seq - 3  # fresh frames, not a backlog
        _wait(lambda: not view.viewers.connected, "the stuck viewer disconnected",
              timeout=view.config.send_timeout_s + 10)
    finally:
        stuck.close()


def test_thousands_of_connections_are_capped_and_the_service_keeps_running(service: Program) -> None:
    view = service.view
    n = 1500
    conns: list[socket.socket] = []
    published_before = service.service.publisher.seq
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", view.port))
            except BlockingIOError:
                pass
            conns.append(s)
        _wait(lambda: view.connections.refused >= n - view.config.max_connections - 50, "connections refused")
        assert view.connections.open <= view.config.max_connections
        time.sleep(0.5)
        assert service.service.publisher.seq - published_before >= 5  # frames kept flowing
    finally:
        for s in conns:
            s.close()
    _wait(lambda: view.connections.open == 0, "connections closed")
    assert _api(view, "/api/state")[0] == 200


def test_idle_and_slow_connections_are_closed() -> None:
    svc = _service(**{"view.idle_timeout_s": 1.0})
    try:
        sock = socket.create_connection(("127.0.0.1", svc.view.port))
        sock.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers that never end
        sock.settimeout(0.3)
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 10 and not closed:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed and time.monotonic() - t0 < 5
        sock.close()
    finally:
        svc.stop()


# ---- without a control channel, against a service that goes away, as `edge-vos view` -------------------


def test_view_without_control_is_read_only() -> None:
    svc = _service(**{"control.endpoint": ""})
    try:
        status, reply = _api(svc.view, "/api/command", {"cmd": "ping"})
        assert status == 503 and "no control endpoint" in reply["error"]
        assert _api(svc.view, "/api/state")[1]["control"] is False
    finally:
        svc.stop()


def test_remote_view_reports_the_end_of_the_stream_and_a_dead_control_socket() -> None:
    config = load_yaml(ServiceConfig, None, {
        "source.uri": "synthetic:frames=30&size=64x96", "source.pace": "realtime", "source.fps": 30.0,
        "publish.endpoint": "tcp://127.0.0.1:*", "control.endpoint": "tcp://127.0.0.1:*", "publish.preview": True,
    })
    svc = Service(config, tracker_factory=lambda c: FakeTracker())
    svc.start()
    view = ViewServer(from_dict(ViewConfig, {"listen": "127.0.0.1:0", "command_timeout_s": 0.5}, "view"),
                      svc.publisher.last_endpoint, svc.control.last_endpoint)
    view.start()
    try:
        _wait(lambda: view.feed.snapshot["state"] == "streaming", "streaming")
        svc.wait(timeout=20)
        svc.stop()
        _wait(lambda: _api(view, "/api/state")[1]["state"] == "ended", "ended")
        assert "source ended" in _api(view, "/api/state")[1]["detail"]
        status, reply = _api(view, "/api/command", {"cmd": "stats"})
        assert status == 200 and reply["ok"] is False and "did not answer" in reply["error"]
    finally:
        view.stop()
        svc.stop()


def test_port_in_use_fails_start_up_naming_the_field() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=r"view\.listen: cannot listen"):
            _service(**{"view.listen": f"127.0.0.1:{port}"})


def test_edge_vos_view_command_serves_a_remote_service(service: Program, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token_file = tmp_path / "token"
    token_file.write_text("remote-view-token\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_vos.cli", "view", "--masks", service.service.publisher.last_endpoint,
         "--control", service.service.control.last_endpoint, "--listen", f"127.0.0.1:{port}",
         "--token-file", str(token_file)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"})
    try:
        def state() -> dict[str, Any]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/api/state", headers={"Authorization": "Bearer remote-view-token"})
                return json.loads(conn.getresponse().read())
            except OSError:
                return {}
            finally:
                conn.close()

        _wait(lambda: state().get("state") == "streaming", "edge-vos view streaming", timeout=30)
        assert state()["frame_size"] == [160, 120]
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert "view stopped" in output


def test_edge_vos_view_bad_options_exit_2() -> None:
    result = subprocess.run([sys.executable, "-m", "edge_vos.cli", "view", "--listen", "host:http"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "view.listen" in result.stderr


def test_curve_view_uses_the_service_key(tmp_path: Path) -> None:
    import zmq.auth

    if not zmq.has("curve"):
        pytest.skip("this libzmq has no CURVE")
    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    zmq.auth.create_certificates(str(keys), "server")
    public, _ = zmq.auth.create_certificates(str(keys), "view")
    Path(public).rename(allowed / "view.key")
    with pytest.raises(ConfigError, match=r"view\.client_secret_key"):
        load_yaml(RunConfig, None, {"view.listen": "0", "publish.preview": True, "security.curve": True,
                                        "security.server_secret_key": str(keys / "server.key_secret")})
    svc = _service(**{"security.curve": True, "security.server_secret_key": str(keys / "server.key_secret"),
                      "security.allowed_clients_dir": str(allowed),
                      "view.client_secret_key": str(keys / "view.key_secret")})
    try:
        _wait(lambda: svc.view.feed.snapshot["state"] == "streaming", "frames over CURVE")
        assert _api(svc.view, "/api/command", {"cmd": "ping"}) == (200, {"ok": True, "pong": True})
    finally:
        svc.stop()


def test_client_keys_default_to_none() -> None:
    assert ClientKeys() == ClientKeys("", "")


def test_feed_survives_garbage_on_the_stream() -> None:
    """A publisher sending malformed messages next to good ones: the view ignores the bad ones."""
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    view = ViewServer(ViewConfig(listen="127.0.0.1:0"), f"tcp://127.0.0.1:{port}")
    view.start()
    stop = threading.Event()

    def send() -> None:
        from edge_vos.wire.protocol import PROTOCOL_VERSION, dumps_header, encode_labels

        labels = np.zeros((32, 48), np.uint8)
        labels[4:10, 4:12] = 3
        seq = 0
        while not stop.is_set():
            pub.send_multipart([b"masks", b"{not json", b""])
            pub.send_multipart([b"masks"])
            pub.send_multipart([b"masks", dumps_header({"v": 1, "kind": "mask"}), b""])
            header = {"v": PROTOCOL_VERSION, "kind": "mask", "stream": "x", "seq": seq, "frame": seq,
                      "capture_seq": seq, "t_capture_ns": time.monotonic_ns(), "t_capture_unix_ns": time.time_ns(),
                      "t_publish_ns": time.monotonic_ns(), "width": 48, "height": 32, "encoding": "raw",
                      "objects": [{"id": 3, "area": 48, "bbox": [4, 4, 8, 6], "score": 1.0}]}
            pub.send_multipart([b"masks", dumps_header(header), encode_labels(labels, "raw")])
            seq += 1
            time.sleep(0.02)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        _wait(lambda: view.feed.snapshot["state"] == "streaming", "good frames shown")
        _, frames = asyncio.run(_receive_frames(view.port, 2))
        assert (_png(frames[-1][2]) == 3).sum() == 48  # raw label maps reach the page as PNG
        assert view.feed.counters.invalid > 0 and view.feed.is_alive()
    finally:
        stop.set()
        thread.join(2)
        view.stop()
        pub.close(linger=0)
        context.term()


def test_stop_is_prompt_while_a_command_waits_for_its_reply() -> None:
    """A service that never answers: a command waits (command_timeout_s is long), yet stop() returns at once."""
    context = zmq.Context()
    silent = context.socket(zmq.ROUTER)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    view = ViewServer(from_dict(ViewConfig, {"listen": "127.0.0.1:0", "command_timeout_s": 60}, "view"),
                      "tcp://127.0.0.1:1", f"tcp://127.0.0.1:{port}")
    view.start()
    replies: list[Any] = []

    def post() -> None:
        try:
            replies.append(_api(view, "/api/command", {"cmd": "stats"}))
        except OSError as exc:
            replies.append(exc)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    try:
        assert silent.poll(10_000), "the command did not reach the (silent) service"
        t0 = time.monotonic()
        view.stop()
        assert time.monotonic() - t0 < 3
        thread.join(5)
        assert replies and not view.commands.is_alive() and not view.feed.is_alive()
    finally:
        view.stop()
        silent.close(linger=0)
        context.term()


def test_beyond_loopback_a_token_is_generated_and_shown(caplog: pytest.LogCaptureFixture) -> None:
    view = ViewServer(ViewConfig(listen="0.0.0.0:0"), "tcp://127.0.0.1:1")
    with caplog.at_level("WARNING", logger="edge_vos.view.server"):
        view.start()
    try:
        assert view.token_generated and len(view.token) >= 20
        assert f"?token={view.token}" in caplog.text
        assert _api(view, "/api/state")[0] == 401
        assert _api(view, "/api/state", headers={"Authorization": f"Bearer {view.token}"})[0] == 200
    finally:
        view.stop()

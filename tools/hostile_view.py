"""Attacks the web view the way issue #24 did (hostile bodies, headers and framings, refusal floods, clients
that stop reading, stalled WebSocket viewers, hostile pings) and prints what happened as a table; `--doc`
also writes it into docs/view.md (section `hostile-view`).

    .venv/bin/python tools/hostile_view.py                       # every group; prints the table
    .venv/bin/python tools/hostile_view.py --doc docs/view.md    # and writes the section
    .venv/bin/python tools/hostile_view.py --only bodies,tokens --examples 2000

Each group runs its own service in this process (the tests' fake tracker on a synthetic scene at 20 fps:
the attacks are on the view, not on the model) with the view on a free 127.0.0.1 port, and counts what the
process logged meanwhile. Every attack is bounded in count and time. The hostile clients and inputs are the
tests' (tests/view_attacks.py, tests/strategies.py); needs the dev extras (hypothesis).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.service_support import running, wait_for  # noqa: E402
from tests.strategies import numbers  # noqa: E402
from tests.strategies import requests as command_bodies  # noqa: E402
from tests.view_attacks import (  # noqa: E402
    MALFORMED,
    LogTally,
    Reply,
    authorizations,
    exchange,
    origins,
    request,
    view_config,
    ws_handshake,
    ws_text_frame,
    ws_texts,
)
from tools.doc_tables import markdown_table, write_section  # noqa: E402

log = logging.getLogger("hostile_view")
TOKEN = "hostile-view-token-1"
LARGE_SCENE = "synthetic:seed=1&frames=20&size=480x640&objects=2"  # frames that fill socket buffers fast
Row = tuple[str, str, str]


def _fuzz(strategy: Any, examples: int, attack: Callable[[Any], None]) -> None:
    """Runs `attack` on `examples` values hypothesis generates (no shrinking, no database: a measurement)."""
    given(strategy)(settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                             suppress_health_check=list(HealthCheck))(attack))()


def _statuses(replies: Counter[Any]) -> str:
    return ", ".join(f"{count} x {status or 'no answer'}" for status, count in sorted(replies.items(), key=str))


def _logged(tally: LogTally) -> str:
    text = "".join(logging.Formatter().format(r) + "\n" for r in tally.records)
    return (f"log: {tally.count(logging.WARNING)} WARNING, {len(tally.errors)} ERROR, {len(tally.tracebacks)} "
            f"tracebacks ({text.count(chr(10))} lines, {len(text) / 1000:.1f} kB)")


def _answered(reply: Reply, replies: Counter[Any], not_json: list[int]) -> None:
    replies[reply.status] += 1
    if reply.status is not None and not reply.headers.get("content-type", "").startswith("application/json"):
        not_json.append(reply.status)


def bodies(tally: LogTally, examples: int) -> list[Row]:
    replies: Counter[Any] = Counter()
    not_json: list[int] = []
    with running(view_config(), None) as svc:
        port, seq = svc.view.port, svc.publisher.seq
        body = b'{"cmd": "ping", "req": ' + b"1" * 5000 + b"}"
        _answered(request(port, "POST", "/api/command", body), replies, not_json)
        _fuzz(command_bodies, examples,
              lambda body: _answered(request(port, "POST", "/api/command", body), replies, not_json))
        frames = svc.publisher.seq - seq
    return [("command bodies", f"{sum(replies.values())} POST /api/command: a 5000-digit integer, then "
             "hypothesis's (raw bytes, any JSON, wrong types, huge and non-finite numbers, 4000-6000-digit "
             "integers, mutated, nested 100,000 deep)",
             f"{_statuses(replies)}; {len(not_json)} not JSON; {frames} frames published meanwhile; "
             f"{_logged(tally)}")]


def origins_and_tokens(tally: LogTally, examples: int) -> list[Row]:
    return [_header_attack(tally, view_config(), "Origin", origins, examples),
            _header_attack(tally, view_config(token=TOKEN), "Authorization", authorizations, examples)]


def _header_attack(tally: LogTally, config: Any, header: str, values: Any, examples: int) -> Row:
    tally.clear()
    replies: Counter[Any] = Counter()
    not_json: list[int] = []
    with running(config, None) as svc:
        port = svc.view.port
        _fuzz(values, examples, lambda value: _answered(
            request(port, "POST", "/api/command", b'{"cmd": "ping"}', {header: value}), replies, not_json))
        good = request(port, "GET", "/api/state", headers={"Authorization": f"Bearer {TOKEN}"}).status
    kinds = ("`http://[`, `http://[::1`, NUL, lone surrogates, any text" if header == "Origin" else
             "on a view with a token: bytes 0x80-0xff, lone surrogates, 5000 characters, any text")
    return (f"{header} values", f"{sum(replies.values())} POST /api/command with hypothesis's {header} ({kinds})",
            f"{_statuses(replies)}; {len(not_json)} not JSON; then GET /api/state {good}; {_logged(tally)}")


def malformed(tally: LogTally, repeats: int) -> list[Row]:
    replies: Counter[Any] = Counter()
    not_json: list[int] = []
    with running(view_config(), None) as svc:
        for _ in range(repeats):
            for data in MALFORMED.values():
                _answered(exchange(svc.view.port, data), replies, not_json)
        refusals = svc.view.refusals.total
    return [("malformed HTTP messages", f"{sum(replies.values())}: {len(MALFORMED)} kinds x {repeats} "
             f"({', '.join(MALFORMED)})",
             f"{_statuses(replies)}; {len(not_json)} not JSON; {refusals} refusals; {_logged(tally)}")]


def flood(tally: LogTally, count: int) -> list[Row]:
    replies: Counter[Any] = Counter()
    t0 = time.monotonic()
    with running(view_config(), None) as svc:
        for i in range(count):
            if i % 2:
                replies[exchange(svc.view.port, MALFORMED["HTTP/2 preface"]).status] += 1
            else:
                replies[request(svc.view.port, "POST", "/api/command", b"{}", {"Origin": "http://[::1"}).status] += 1
        seconds = time.monotonic() - t0
    return [("refusal flood", f"{count} in {seconds:.1f} s, one connection each: bad Origin (`http://[::1`) and "
             "HTTP/2 preface, alternating", f"{_statuses(replies)}; {_logged(tally)}")]


def slow_readers(tally: LogTally, connections: int) -> list[Row]:
    config = view_config(send_timeout_s=10.0, idle_timeout_s=15.0, max_connections=connections,
                         max_connections_per_client=connections)  # one address may take them all, as in #24
    with running(config, None) as svc:
        view = svc.view
        socks = []
        t0 = time.monotonic()
        for _ in range(connections):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", view.port))
            sock.setblocking(False)
            socks.append(sock)
        wait_for(lambda: view.connections.open == connections, 10)
        burst = b"GET /static/app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 50
        for sock in socks:  # until the server stops reading, at most 2,000 requests a connection
            for _ in range(40):
                try:
                    sock.send(burst)
                except OSError:
                    break
        held = request(view.port, "GET", "/api/state").status
        try:
            wait_for(lambda: view.connections.open == 0, 60)
            freed = f"all {connections} cut after {time.monotonic() - t0:.1f} s"
        except AssertionError:
            freed = f"{view.connections.open} STILL OPEN after 60 s"
        after = request(view.port, "GET", "/api/state").status
        aborted = view.connections.aborted
        for sock in socks:
            sock.close()
    return [("slow readers", f"{connections} connections (view.max_connections) pipeline GET /static/app.js and "
             "never read; view.send_timeout_s 10, idle_timeout_s 15",
             f"GET /api/state meanwhile: {held}; {freed} ({aborted} aborted by the write deadline); GET "
             f"/api/state then: {after}; {_logged(tally)}")]


def one_address(tally: LogTally, connections: int) -> list[Row]:
    with running(view_config(max_connections=connections), None) as svc:
        view = svc.view
        socks = [socket.create_connection(("127.0.0.1", view.port)) for _ in range(connections)]
        wait_for(lambda: view.connections.open + view.connections.refused >= connections, 10)
        time.sleep(0.5)
        refused = view.connections.refused
        other = request(view.port, "GET", "/api/state", source="127.0.0.2").status
        same = request(view.port, "GET", "/api/state").status
        for sock in socks:
            sock.close()
        per_client = view.config.max_connections_per_client
    return [("one address", f"{connections} idle connections from 127.0.0.1 (view.max_connections {connections}, "
             f"max_connections_per_client {per_client})",
             f"{connections - refused} admitted, {refused} answered 503; GET /api/state from 127.0.0.2: {other}, "
             f"from 127.0.0.1: {same}; {_logged(tally)}")]


def stalled_viewers(tally: LogTally, viewers: int) -> list[Row]:
    with running(view_config(LARGE_SCENE, send_timeout_s=10.0, max_viewers=viewers), None) as svc:
        view = svc.view
        wait_for(lambda: view.feed.snapshot["state"] == "streaming", 20)
        socks = [ws_handshake(view.port) for _ in range(viewers)]
        t0 = time.monotonic()
        try:
            ws_handshake(view.port).close()
            refused = "accepted (cap NOT enforced)"
        except ConnectionError as exc:
            refused = "503" if "503" in str(exc) else str(exc)
        ack = ws_text_frame('{"type": "ack"}')
        while view.viewers.connected and time.monotonic() - t0 < 120:
            for sock in socks:
                try:
                    sock.sendall(ack)
                except OSError:
                    pass
            time.sleep(0.2)
        freed = time.monotonic() - t0
        left = len(view.viewers.connected)
        try:
            ws_handshake(view.port).close()
            newcomer = "101"
        except ConnectionError as exc:
            newcomer = str(exc)
        for sock in socks:
            sock.close()
    result = f"all {viewers} slots free after {freed:.1f} s" if not left else f"{left} STILL HELD after {freed:.0f} s"
    return [("stalled viewers", f"{viewers} WebSocket viewers (view.max_viewers) at 640x480 acknowledge every "
             "0.2 s and never read; view.send_timeout_s 10",
             f"one more meanwhile: {refused}; {result}; a newcomer then: {newcomer}; {_logged(tally)}")]


def pings(tally: LogTally, examples: int) -> list[Row]:
    values = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "9" * 4000, "true", "null", '"x"']) \
        | numbers.map(lambda n: json.dumps(n))
    sent = finite = 0
    with running(view_config(), None) as svc:
        sock = ws_handshake(svc.view.port, rcvbuf=1 << 20)
        ack = ws_text_frame('{"type": "ack"}')

        def ping(value: str) -> None:
            nonlocal sent
            nonlocal finite
            sock.sendall(ws_text_frame(f'{{"type": "ping", "t": {value}}}') + ack)  # acks keep it connected
            sent += 1
            finite += _is_finite_number(value)

        _fuzz(values, examples, ping)
        sock.sendall(ws_text_frame('{"type": "ping", "t": -1}'))  # the last one: wait for its pong
        texts = ws_texts(sock, lambda text: '"t": -1,' in text)
        sock.close()
    pongs, bad = 0, 0
    for text in texts:
        try:
            message = json.loads(text, parse_constant=_refuse_constant)
            pongs += message.get("type") == "pong"
            bad += message.get("type") == "pong" and not math.isfinite(message["t"])
        except ValueError:
            bad += 1
    return [("WebSocket pings", f"{sent + 1} pings: NaN, Infinity, 1e999, 4000-digit integers, non-numbers and "
             "hypothesis's numbers", f"{pongs} pongs for {finite + 1} pings with a finite number (a viewer's oldest "
             f"waiting texts beyond 8 are dropped), {bad} not strict JSON or not finite; {_logged(tally)}")]


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def _is_finite_number(text: str) -> bool:
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    except (ValueError, OverflowError):
        return False


def slow_bodies(tally: LogTally, count: int) -> list[Row]:
    with running(view_config(command_queue=count, send_timeout_s=10.0), None) as svc:
        socks = []
        for _ in range(count + 2):
            sock = socket.create_connection(("127.0.0.1", svc.view.port))
            sock.sendall(b"POST /api/command HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
            socks.append(sock)
        time.sleep(0.5)
        reply = request(svc.view.port, "POST", "/api/command", b'{"cmd": "ping"}')
        for sock in socks:
            sock.close()
    return [("slow bodies", f"{count + 2} command bodies that never finish (view.command_queue {count})",
             f"a command meanwhile: {reply.status} {reply.body.decode()[:40]}; {_logged(tally)}")]


GROUPS: dict[str, tuple[Callable[[LogTally, int], list[Row]], str]] = {
    "bodies": (bodies, "examples"), "headers": (origins_and_tokens, "examples"),
    "malformed": (malformed, "repeats"), "flood": (flood, "flood"), "slow-readers": (slow_readers, "connections"),
    "one-address": (one_address, "connections"),
    "stalled-viewers": (stalled_viewers, "viewers"), "pings": (pings, "examples"),
    "slow-bodies": (slow_bodies, "queue"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma list of: {', '.join(GROUPS)}")
    parser.add_argument("--examples", type=int, default=1000, help="generated inputs per fuzzed group")
    parser.add_argument("--repeats", type=int, default=30, help="rounds of every malformed message")
    parser.add_argument("--flood", type=int, default=2000, help="refusals in the flood")
    parser.add_argument("--connections", type=int, default=64, help="slow readers (= view.max_connections)")
    parser.add_argument("--viewers", type=int, default=8, help="stalled viewers (= view.max_viewers)")
    parser.add_argument("--queue", type=int, default=4, help="view.command_queue for the slow bodies")
    parser.add_argument("--doc", type=Path, help="write the table into this Markdown file (section `hostile-view`)")
    args = parser.parse_args()
    chosen = [g.strip() for g in args.only.split(",") if g.strip()]
    if unknown := [g for g in chosen if g not in GROUPS]:
        parser.error(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)  # the tally sees INFO and up; the console shows errors only
    root.handlers[0].setLevel(logging.ERROR)
    tally = LogTally()
    root.addHandler(tally)
    rows: list[Row] = []
    errors = tracebacks = 0
    started = time.monotonic()
    for group in chosen:
        print(f"group {group}", file=sys.stderr)  # noqa: T201 - progress
        tally.clear()
        attack, size = GROUPS[group]
        rows += attack(tally, getattr(args, size))
        errors, tracebacks = errors + len(tally.errors), tracebacks + len(tally.tracebacks)
    table = markdown_table(["attack", "what", "result"], rows)
    internal = sum(" x 500" in result for _, _, result in rows)
    summary = (f"In all: {internal} attacks answered 500 at least once, {errors} ERROR lines, {tracebacks} "
               "tracebacks logged.")
    print(table + "\n\n" + summary)  # noqa: T201 - the tool's output
    if args.doc:
        command = " ".join(["python tools/hostile_view.py", *sys.argv[1:]])
        body = "\n".join([
            f"`{command}` ({time.monotonic() - started:.0f} s; {os.cpu_count()} CPUs shared with other jobs; the "
            "attacking clients in the same process as the view). `log` counts every line the process logged during "
            "the attack, `500` would be an internal error.",
            "",
            table,
            "",
            summary,
        ])
        write_section(args.doc, "hostile-view", body, title="# The live web view\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

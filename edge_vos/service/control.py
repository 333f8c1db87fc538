"""The control thread: owns the ROUTER socket, validates requests and answers every one of them.

Queries (stats, streams, config, ping) are answered here from a snapshot. Commands that change tracking
(add, remove, reset) name their stream (required when several run: `commands.parse_request`) and go to the
inference thread through a bounded queue and are applied between frames; the
inference thread posts the reply back through `replies`, and this thread, the socket's only user, sends
it. A command the inference thread does not answer within `reply_timeout_s` gets an error reply and is
cancelled, so a stalled pipeline cannot stall clients; a full queue answers "busy" at once. Requests
larger than `max_message_bytes` are refused by libzmq (ZMQ_MAXMSGSIZE) before they reach Python.

This thread alone handles request ids: it reads a request's `req`, keeps it with the pending command and
puts it on the reply; the inference thread answers by token and never sees it.

Exactly one reply per request: nothing a request contains can end this thread (any exception while
handling one becomes an error reply and a log line), and replies are never dropped silently. The socket
is ROUTER_MANDATORY, so a reply for a client whose queue is full waits in an outbox instead of vanishing;
while many replies wait, no new request is read (TCP back-pressure on the flooding client). A reply a
client leaves unread for `reply_timeout_s`, or whose client has gone, is dropped and counted.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from edge_vos.ratelog import RateLimitedLog
from edge_vos.service.commands import CommandError, Limits, PendingCommand, Query, parse_request, valid_req
from edge_vos.service.config import ControlConfig
from edge_vos.service.metrics import ServiceMetrics
from edge_vos.service.security import ServerKeys, make_server_socket

log = logging.getLogger(__name__)

# Replies queued per client in libzmq before ROUTER_MANDATORY reports the client as full.
REPLY_HWM = 1000
# While this many replies wait in the outbox, no new request is read.
OUTBOX_PAUSE = 1000


class ControlServer(threading.Thread):
    def __init__(
        self,
        context: zmq.Context,
        config: ControlConfig,
        keys: ServerKeys | None,
        metrics: ServiceMetrics,
        limits: Callable[[str | None], Limits],
        query: Callable[[str, str | None], dict[str, Any]],
        stop: threading.Event,
        streams: Sequence[str] = ("cam0",),
    ) -> None:
        """`limits(stream)`: what decoding a command for that stream needs; `query(what, stream)`: the reply
        to a query (stream None: about the whole service)."""
        super().__init__(name="control", daemon=True)
        self.context, self.config, self.keys, self.metrics = context, config, keys, metrics
        self._limits, self._query, self.stop_event = limits, query, stop
        self.streams = tuple(streams)
        self.commands: queue.Queue[PendingCommand] = queue.Queue(config.queue)
        self.replies: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.bound = threading.Event()
        self.error: BaseException | None = None
        self.last_endpoint = ""
        self._tokens = itertools.count()
        # Commands waiting for the inference thread: token -> (envelope, reply deadline, name, cancelled, req).
        self._pending: dict[int, tuple[list[bytes], float, str, threading.Event, Any]] = {}
        # Replies a full client could not take yet: (give-up time, envelope + body), oldest first.
        self._outbox: collections.deque[tuple[float, list[bytes]]] = collections.deque()
        self.last_loop = time.monotonic()
        self._refusals = RateLimitedLog(log, "refused command", period_s=10.0, burst=20)

    def reply(self, token: int, body: dict[str, Any]) -> None:
        """Called by the inference thread when it applied (or refused) a command."""
        self.replies.put((token, body))

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # never silent: the service's supervisor sees `error` and stops
            self.error = exc
            log.critical("control thread died: %r", exc, exc_info=True)
            raise

    def _run(self) -> None:
        sock = None
        try:
            sock = self.context.socket(zmq.ROUTER)
            sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, REPLY_HWM)
            sock.setsockopt(zmq.RCVHWM, 100)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full client raises EAGAIN instead of losing the reply
            make_server_socket(sock, self.keys)
            sock.bind(self.config.endpoint)
            self.last_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException as exc:
            self.error = exc
            self.bound.set()
            if sock is not None:
                sock.close(linger=0)
            return
        self.bound.set()
        log.info("control channel on %s", self.last_endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self.stop_event.is_set():
                self.last_loop = time.monotonic()
                try:
                    if len(self._outbox) < OUTBOX_PAUSE and dict(poller.poll(20)).get(sock):
                        self._receive(sock)
                    elif self._outbox:
                        time.sleep(0.005)
                    self._send_replies(sock)
                    self._expire(sock)
                    self._flush(sock)
                except Exception:  # a bug here must not end the thread: log, breathe, go on
                    log.exception("control loop error; continuing")
                    time.sleep(0.05)
            # Stopping: tell whoever still waits.
            for token in list(self._pending):
                self._answer(sock, token, {"ok": False, "error": "the service is stopping"})
            self._flush(sock)
        finally:
            sock.close(linger=0)

    def _receive(self, sock: zmq.Socket) -> None:
        for _ in range(100):  # bounded burst, then serve replies
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue  # no routing id + body: nothing we can answer
            envelope, body = frames[:-1], frames[-1]
            try:
                reply = self._handle(body, envelope)
            except Exception as exc:  # a bug met by one request: answer it, log it, keep serving
                log.exception("internal error handling a request")
                self.metrics.commands.labels("invalid", "error").inc()
                reply = _with_req({"ok": False, "error": "internal error while handling the request: "
                                                         f"{type(exc).__name__}"}, _req_of(body))
            if reply is not None:
                self._send(sock, envelope, reply)

    def _handle(self, body: bytes, envelope: list[bytes]) -> dict[str, Any] | None:
        try:
            request = parse_request(body, self._limits, self.streams)
        except CommandError as exc:
            self.metrics.commands.labels("invalid", "error").inc()
            self._refusals.log("%s", exc)
            return _with_req(exc.to_reply(), exc.req)
        command, req = request.command, request.req
        name = command.name
        if isinstance(command, Query):
            try:
                reply = {"ok": True, **self._query(command.what, request.stream)}
            except Exception as exc:
                log.exception("query %s failed", command.what)
                reply = {"ok": False, "error": f"{command.what} failed: {exc}"}
            self.metrics.commands.labels(name, "ok" if reply["ok"] else "error").inc()
            return _with_req(reply, req)
        token = next(self._tokens)
        cancelled = threading.Event()
        try:
            self.commands.put_nowait(PendingCommand(token, command, cancelled, request.stream or ""))
        except queue.Full:
            self.metrics.commands.labels(name, "busy").inc()
            return _with_req({"ok": False, "error": "busy: too many commands waiting; retry later"}, req)
        self._pending[token] = (envelope, time.monotonic() + self.config.reply_timeout_s, name, cancelled, req)
        return None

    def _send_replies(self, sock: zmq.Socket) -> None:
        while True:
            try:
                token, body = self.replies.get_nowait()
            except queue.Empty:
                return
            if token in self._pending:
                self._answer(sock, token, body)

    def _expire(self, sock: zmq.Socket) -> None:
        now = time.monotonic()
        for token, (_, deadline, name, cancelled, _) in list(self._pending.items()):
            if now > deadline:
                cancelled.set()
                self._answer(sock, token, {
                    "ok": False, "error": f"{name} not applied within {self.config.reply_timeout_s:g} s "
                                          "(inference is busy or stalled); it was cancelled"})

    def _answer(self, sock: zmq.Socket, token: int, body: dict[str, Any]) -> None:
        envelope, _, name, _, req = self._pending.pop(token)
        body = _with_req(body, req)  # the inference thread's replies, timeouts and "stopping" alike
        self.metrics.commands.labels(name, "ok" if body.get("ok") else "error").inc()
        self._send(sock, envelope, body)

    def _send(self, sock: zmq.Socket, envelope: list[bytes], body: dict[str, Any]) -> None:
        message = [*envelope, json.dumps(body).encode()]
        if self._outbox:  # keep the order: older replies first
            self._outbox.append((time.monotonic() + self.config.reply_timeout_s, message))
            return
        if not self._try_send(sock, message):
            self._outbox.append((time.monotonic() + self.config.reply_timeout_s, message))

    def _try_send(self, sock: zmq.Socket, message: list[bytes]) -> bool:
        """True when sent or undeliverable (the client is gone); False when its queue is full."""
        try:
            sock.send_multipart(message, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the client disconnected; nobody to answer
            self.metrics.replies_undelivered.labels("client_gone").inc()
            log.debug("reply not sent: %s", exc)
            return True

    def _flush(self, sock: zmq.Socket) -> None:
        """Retries replies held for full clients; drops (and counts) those left unread too long."""
        now = time.monotonic()
        kept: collections.deque[tuple[float, list[bytes]]] = collections.deque()
        while self._outbox:
            deadline, message = self._outbox.popleft()
            if self._try_send(sock, message):
                continue
            if now > deadline:
                self.metrics.replies_undelivered.labels("not_read").inc()
                log.warning("a client left a reply unread for %.0f s: dropped", self.config.reply_timeout_s)
                continue
            kept.append((deadline, message))
        self._outbox = kept


def _with_req(reply: dict[str, Any], req: Any) -> dict[str, Any]:
    """The reply as sent: with the request's id when it gave one."""
    return reply if req is None else {**reply, "req": req}


def _req_of(body: bytes) -> Any:
    """The request id of a request whose handling failed unexpectedly, when it can be read safely."""
    try:
        data = json.loads(body)
        req = data.get("req") if isinstance(data, dict) else None
        return req if valid_req(req) else None
    except Exception:
        return None

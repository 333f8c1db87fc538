"""The control thread: owns the ROUTER socket, validates requests and answers every one of them.

Queries (stats, config, ping) are answered here from a snapshot. Commands that change tracking (add,
remove, reset) go to the inference thread through a bounded queue and are applied between frames; the
inference thread posts the reply back through `replies`, and this thread, the socket's only user, sends
it. A command the inference thread does not answer within `reply_timeout_s` gets an error reply and is
cancelled, so a stalled pipeline cannot stall clients; a full queue answers "busy" at once. Requests
larger than `max_message_bytes` are refused by libzmq (ZMQ_MAXMSGSIZE) before they reach Python.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from edge_vos.service.commands import Command, CommandError, Limits, Query, parse_command
from edge_vos.service.config import ControlConfig
from edge_vos.service.metrics import ServiceMetrics
from edge_vos.service.security import ServerKeys, make_server_socket

log = logging.getLogger(__name__)


@dataclass
class PendingCommand:
    """A command on its way to the inference thread; `cancelled` is set when its reply timed out."""

    token: int
    command: Command
    cancelled: threading.Event


class ControlServer(threading.Thread):
    def __init__(
        self,
        context: zmq.Context,
        config: ControlConfig,
        keys: ServerKeys | None,
        metrics: ServiceMetrics,
        limits: Callable[[], Limits],
        query: Callable[[str], dict[str, Any]],
        stop: threading.Event,
    ) -> None:
        super().__init__(name="control", daemon=True)
        self.context, self.config, self.keys, self.metrics = context, config, keys, metrics
        self._limits, self._query, self.stop_event = limits, query, stop
        self.commands: queue.Queue[PendingCommand] = queue.Queue(config.queue)
        self.replies: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.bound = threading.Event()
        self.error: BaseException | None = None
        self.last_endpoint = ""
        self._tokens = itertools.count()
        # token -> (envelope, deadline, command name, cancelled flag)
        self._pending: dict[int, tuple[list[bytes], float, str, threading.Event]] = {}

    def reply(self, token: int, body: dict[str, Any]) -> None:
        """Called by the inference thread when it applied (or refused) a command."""
        self.replies.put((token, body))

    def run(self) -> None:
        sock = None
        try:
            sock = self.context.socket(zmq.ROUTER)
            sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 100)
            sock.setsockopt(zmq.RCVHWM, 100)
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
                if dict(poller.poll(20)).get(sock):
                    self._receive(sock)
                self._send_replies(sock)
                self._expire(sock)
            # Stopping: tell whoever still waits.
            for token in list(self._pending):
                self._answer(sock, token, {"ok": False, "error": "the service is stopping"})
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
            reply = self._handle(body, envelope)
            if reply is not None:
                self._send(sock, envelope, reply)

    def _handle(self, body: bytes, envelope: list[bytes]) -> dict[str, Any] | None:
        try:
            command = parse_command(body, self._limits())
        except CommandError as exc:
            self.metrics.commands.labels("invalid", "error").inc()
            log.info("refused command: %s", exc)
            return exc.to_reply(_req_of(body))
        name = _name(command)
        if isinstance(command, Query):
            try:
                reply = {"ok": True, **self._query(command.what)}
            except Exception as exc:
                log.exception("query %s failed", command.what)
                reply = {"ok": False, "error": f"{command.what} failed: {exc}"}
            if command.req is not None:
                reply["req"] = command.req
            self.metrics.commands.labels(name, "ok" if reply["ok"] else "error").inc()
            return reply
        token = next(self._tokens)
        cancelled = threading.Event()
        try:
            self.commands.put_nowait(PendingCommand(token, command, cancelled))
        except queue.Full:
            self.metrics.commands.labels(name, "busy").inc()
            return {"ok": False, "error": "busy: too many commands waiting; retry later",
                    **({"req": command.req} if command.req is not None else {})}
        self._pending[token] = (envelope, time.monotonic() + self.config.reply_timeout_s, name, cancelled)
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
        for token, (_, deadline, name, cancelled) in list(self._pending.items()):
            if now > deadline:
                cancelled.set()
                self._answer(sock, token, {
                    "ok": False, "error": f"{name} not applied within {self.config.reply_timeout_s:g} s "
                                          "(inference is busy or stalled); it was cancelled"})

    def _answer(self, sock: zmq.Socket, token: int, body: dict[str, Any]) -> None:
        envelope, _, name, _ = self._pending.pop(token)
        self.metrics.commands.labels(name, "ok" if body.get("ok") else "error").inc()
        self._send(sock, envelope, body)

    def _send(self, sock: zmq.Socket, envelope: list[bytes], body: dict[str, Any]) -> None:
        try:
            sock.send_multipart([*envelope, json.dumps(body).encode()], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or its queue full: the client retries (Lazy Pirate)
            log.debug("reply not sent: %s", exc)


def _name(command: Command) -> str:
    return command.what if isinstance(command, Query) else type(command).__name__.lower()


def _req_of(body: bytes) -> Any:
    """The request id of a request that failed validation, when it can be read safely."""
    try:
        data = json.loads(body)
        req = data.get("req") if isinstance(data, dict) else None
        return req if isinstance(req, (int, str)) and not isinstance(req, bool) and len(str(req)) <= 64 else None
    except Exception:
        return None

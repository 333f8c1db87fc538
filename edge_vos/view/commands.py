"""The view's control channel: a thread that owns the REQ socket of an `edge_vos.client.CommandClient`.

HTTP handlers hand it commands through a bounded queue and await the reply (a full queue is `Busy`);
between commands it fetches the service's `stats` (of each stream someone asked about, when the service runs
several) when someone asked for the state, and once per connection its `config` (how many recent frames the
service keeps, which bounds how long a frozen frame is usable) and its `streams` (their order).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from typing import Any

import zmq

from edge_vos.client import CommandClient, ServiceUnavailable
from edge_vos.view.feed import NO_KEYS, ClientKeys, connectable

log = logging.getLogger(__name__)


class Busy(RuntimeError):
    """Too many commands are already waiting for the service."""


class CommandWorker(threading.Thread):
    """Owns the control socket (a CommandClient with no retries: an `add` must never be sent twice)."""

    def __init__(self, endpoint: str, stop: threading.Event, *, timeout_s: float, queue_size: int,
                 stats_every_s: float, keys: ClientKeys = NO_KEYS,
                 context: zmq.Context | None = None) -> None:
        super().__init__(name="view-commands", daemon=True)
        self.endpoint = connectable(endpoint)
        self.stop_event, self.timeout_s, self.stats_every_s, self.keys = stop, timeout_s, stats_every_s, keys
        self._stats_wanted = threading.Event()
        self.context = context or zmq.Context.instance()
        self.jobs: queue.Queue[tuple[dict[str, Any], concurrent.futures.Future[dict[str, Any]]]] = queue.Queue(
            queue_size)
        # The service's last `stats` reply per stream asked about (None: asked without a stream), each replaced
        # whole; with one stream, `stats` is that one.
        self.stats_by_stream: dict[str | None, dict[str, Any]] = {}
        self.stream_order: tuple[str, ...] | None = None  # the service's streams, as its `streams` lists them
        self._wanted: set[str | None] = set()
        self._wanted_lock = threading.Lock()
        self.history: int | None = None  # how many recent frames the service keeps (its control.history)
        self.reachable: bool | None = None
        self._next_poll = 0.0

    @property
    def stats(self) -> dict[str, Any] | None:
        return self.stats_by_stream.get(None)

    def want_stats(self, stream: str | None = None) -> None:
        """Someone looks at the state (of `stream`, when the service runs several): refresh the service's stats
        (at most every `stats_every_s`). Polled on demand only, since answering `stats` costs the service's
        control thread a little every time."""
        with self._wanted_lock:
            if len(self._wanted) < 64:  # the server asks only about streams the feed knows
                self._wanted.add(stream)
        self._stats_wanted.set()

    def submit(self, command: dict[str, Any]) -> concurrent.futures.Future[dict[str, Any]]:
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        try:
            self.jobs.put_nowait((command, future))
        except queue.Full:
            raise Busy(f"{self.jobs.maxsize} commands are already waiting for the service") from None
        return future

    def run(self) -> None:
        client = CommandClient(self.endpoint, timeout_s=self.timeout_s, retries=0, context=self.context,
                               server_public_key=self.keys.server_public_key or None,
                               client_secret_key=self.keys.client_secret_key or None)
        try:
            self._serve(client)
        except zmq.ContextTerminated:  # the view is stopping
            pass
        finally:
            while True:
                try:
                    _, future = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if future.set_running_or_notify_cancel():
                    future.set_result({"ok": False, "error": "the view is stopping"})
            client.close()

    def _serve(self, client: CommandClient) -> None:
        while not self.stop_event.is_set():
            try:
                command, future = self.jobs.get(timeout=0.25)
            except queue.Empty:
                self._poll_stats(client)
                continue
            if not future.set_running_or_notify_cancel():
                continue
            client.timeout_s = self.timeout_s
            try:
                reply = client.request(command, check=False)
                if "req" not in command:  # CommandClient numbers requests; answer exactly as the socket would
                    reply.pop("req", None)
                self.reachable = True
            except ServiceUnavailable:
                self.reachable = False
                reply = {"ok": False, "error": f"the service at {self.endpoint} did not answer within "
                                               f"{self.timeout_s:.0f} s (the command may still apply)"}
            except zmq.ContextTerminated:
                future.set_result({"ok": False, "error": "the view is stopping"})
                break
            except Exception as exc:  # a reply that is not JSON, a closed context: never kill the thread
                log.exception("view: command failed")
                reply = {"ok": False, "error": f"view: command failed: {exc}"}
            future.set_result(reply)
            if command.get("cmd") in ("add", "remove", "reset"):
                self._next_poll = 0.0  # the next state shows the change at once

    def _poll_stats(self, client: CommandClient) -> None:
        """Once per connection, at once: the service's `config` (its history bounds how long a frozen frame
        stays usable) and its `streams` (their order); then `stats` when wanted, at most every stats_every_s."""
        now = time.monotonic()
        if now < self._next_poll or (not self._stats_wanted.is_set() and self.history is not None):
            return
        self._stats_wanted.clear()
        with self._wanted_lock:
            wanted, self._wanted = self._wanted, set()
        client.timeout_s = min(self.timeout_s, 2.0)
        try:
            if self.history is None:
                reply = client.request({"cmd": "config"}, check=False)
                history = (reply.get("config") or {}).get("control", {}).get("history") if reply.get("ok") else None
                self.history = int(history) if isinstance(history, int) else 0
                reply = client.request({"cmd": "streams"}, check=False)  # a single-stream service may not know it
                self.stream_order = stream_ids(reply.get("streams")) if reply.get("ok") else ()
            for stream in sorted(wanted, key=lambda name: name or ""):
                reply = client.request({"cmd": "stats"} if stream is None else {"cmd": "stats", "stream": stream},
                                       check=False)
                if reply.get("ok") and isinstance(reply.get("stats"), dict):
                    self.stats_by_stream[stream] = reply["stats"]
            self.reachable = True
            self._next_poll = now + self.stats_every_s
        except ServiceUnavailable:
            self.reachable = False
            self.stats_by_stream = {}
            self.history = None  # it may come back with another configuration
            self._next_poll = now + 5.0  # the service is away; do not hammer it (or the log)
        except zmq.ContextTerminated:
            raise
        except Exception:
            log.exception("view: stats poll failed")
            self._next_poll = now + 5.0


def stream_ids(listing: Any) -> tuple[str, ...]:
    """The stream names of a `streams` reply: a list of objects with an `id` (or of names), or an object keyed
    by name; anything else names none."""
    if isinstance(listing, dict):
        listing = list(listing)
    if not isinstance(listing, list):
        return ()
    names = (item.get("id", item.get("stream")) if isinstance(item, dict) else item for item in listing[:64])
    return tuple(name for name in names if isinstance(name, str))

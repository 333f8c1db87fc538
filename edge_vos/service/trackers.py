"""The streams' trackers: each stream's Tracker on one set of engines shared by all of them (one network, one
runner per working size), or one stream's on its own. The service reaches the network only through these
(tracker.build_engines / build_tracker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_vos.config import ConfigError
from edge_vos.service.config import ServiceConfig, StreamConfig
from edge_vos.service.prompts import TrackerLike


def build_tracker(config: ServiceConfig | StreamConfig) -> TrackerLike:
    """The configured Tracker of one stream, on its own engines (tracker.build_tracker); what cannot run here
    is a ConfigError naming the field under `tracker.`."""
    from edge_vos.tracker import build_tracker as build

    try:
        return build(config.tracker)
    except ConfigError as exc:
        raise exc.under("tracker") from None


def shared_trackers(config: ServiceConfig) -> Callable[[StreamConfig], TrackerLike]:
    """A factory of every stream's Tracker on one set of engines (one network, one runner per working size,
    built for the largest `max_objects` of the streams): the engines are loaded on the first call."""
    from edge_vos.tracker import build_engines
    from edge_vos.tracker import build_tracker as build

    streams = config.stream_configs
    engines: list[Any] = []

    def make(stream: StreamConfig) -> TrackerLike:
        try:
            if not engines:
                engines.append(build_engines(config.tracker, max_objects=max(s.tracker.max_objects for s in streams),
                                             streams=len(streams)))
            return build(stream.tracker, engines[0])
        except ConfigError as exc:
            raise exc.under("tracker") from None

    return make

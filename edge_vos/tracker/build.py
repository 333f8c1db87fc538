"""`build_tracker(config)`: the one way the applications (service, eval, bench) make a Tracker, with one error
handling: whatever in the config cannot run here becomes a ConfigError naming the field. `build_engines` makes
the network and runners that several streams' trackers share (the service's `streams:`)."""

from __future__ import annotations

import logging

from edge_vos.config import ConfigError
from edge_vos.model.checkpoint import CheckpointError
from edge_vos.tracker.config import TrackerConfig
from edge_vos.tracker.engines import RUNNER_SIZES_KEPT, TrackerEngines, resolve_device
from edge_vos.tracker.tracker import Tracker

log = logging.getLogger(__name__)


def build_engines(config: TrackerConfig, *, max_objects: int | None = None, streams: int = 1) -> TrackerEngines:
    """The network and runners for `streams` trackers of `config`'s device, precision, backend and weights
    (each with at most `max_objects` objects, default the config's). Errors as `build_tracker`'s."""
    try:
        resolve_device(config.device)
    except RuntimeError as exc:
        raise ConfigError("device", str(exc)) from None
    try:
        return TrackerEngines(config, max_objects=max_objects, sizes_kept=RUNNER_SIZES_KEPT + max(0, streams - 1))
    except FileNotFoundError as exc:
        raise ConfigError("model.weights", f"{exc}. For a pipeline check without trained weights use --weights "
                                           "random (model.weights: random; an untrained network, masks are "
                                           "meaningless)") from None
    except CheckpointError as exc:
        first, _, details = str(exc).partition("\n")
        if details:
            log.info("checkpoint details:\n%s", details)
        raise ConfigError("model.weights", first) from None


def build_tracker(config: TrackerConfig, engines: TrackerEngines | None = None) -> Tracker:
    """The configured Tracker, on `engines` shared with other streams (from `build_engines`) or its own. A
    device this machine lacks, or a weights file that is missing or unusable, is a ConfigError naming the field
    (relative to the tracker section: callers add their prefix with `ConfigError.under`); a checkpoint's details
    go to the log at INFO."""
    if engines is None:
        engines = build_engines(config)
    try:
        return Tracker(config, engines=engines)
    except ValueError as exc:  # engines.check_compatible: a field that must be the same for every stream
        field, _, message = str(exc).partition(": ")
        raise ConfigError(field, message) from None

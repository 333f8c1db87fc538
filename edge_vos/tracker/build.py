"""`build_tracker(config)`: the one way the applications (service, eval, bench) make a Tracker, with one error
handling: whatever in the config cannot run here becomes a ConfigError naming the field."""

from __future__ import annotations

import logging

from edge_vos.config import ConfigError
from edge_vos.model.checkpoint import CheckpointError
from edge_vos.tracker.config import TrackerConfig
from edge_vos.tracker.tracker import Tracker, resolve_device

log = logging.getLogger(__name__)


def build_tracker(config: TrackerConfig) -> Tracker:
    """The configured Tracker. A device this machine lacks, or a weights file that is missing or unusable, is a
    ConfigError naming the field (relative to the tracker section: callers add their prefix with
    `ConfigError.under`); a checkpoint's details go to the log at INFO."""
    try:
        resolve_device(config.device)
    except RuntimeError as exc:
        raise ConfigError("device", str(exc)) from None
    try:
        return Tracker(config)
    except FileNotFoundError as exc:
        raise ConfigError("model.weights", f"{exc}. For a pipeline check without trained weights use --weights "
                                           "random (model.weights: random; an untrained network, masks are "
                                           "meaningless)") from None
    except CheckpointError as exc:
        first, _, details = str(exc).partition("\n")
        if details:
            log.info("checkpoint details:\n%s", details)
        raise ConfigError("model.weights", first) from None

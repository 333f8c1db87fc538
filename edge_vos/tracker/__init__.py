"""Streaming tracker: `Tracker.step()` per frame over a fixed-size ring memory; `build_tracker(TrackerConfig)`
makes one. Importing the package imports no torch (the config classes are plain data); the tracker itself is
loaded on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_vos.tracker.config import MemoryConfig, ModelConfig, ReadoutConfig, TrackerConfig
from edge_vos.tracker.errors import TrackerInputError

if TYPE_CHECKING:
    from edge_vos.model.checkpoint import CheckpointError
    from edge_vos.tracker.build import build_engines, build_tracker
    from edge_vos.tracker.engines import TrackerEngines, resolve_device
    from edge_vos.tracker.tracker import StepResult, Tracker


def __getattr__(name: str) -> object:
    """The tensor code, imported when first asked for (a config loader never asks)."""
    if name in ("StepResult", "Tracker"):
        from edge_vos.tracker import tracker

        return getattr(tracker, name)
    if name in ("TrackerEngines", "resolve_device"):
        from edge_vos.tracker import engines

        return getattr(engines, name)
    if name in ("build_tracker", "build_engines"):
        from edge_vos.tracker import build

        return getattr(build, name)
    if name == "CheckpointError":  # what Tracker() raises for an unusable weights file
        from edge_vos.model.checkpoint import CheckpointError

        return CheckpointError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CheckpointError", "MemoryConfig", "ModelConfig", "ReadoutConfig", "StepResult", "Tracker", "TrackerConfig",
    "TrackerEngines", "TrackerInputError", "build_engines", "build_tracker", "resolve_device",
]

"""Streaming tracker: `Tracker.step()` per frame over a fixed-size ring memory."""

from edge_vos.model.checkpoint import CheckpointError  # what Tracker() raises for an unusable weights file
from edge_vos.tracker.config import MemoryConfig, ModelConfig, ReadoutConfig, TrackerConfig
from edge_vos.tracker.errors import TrackerInputError
from edge_vos.tracker.tracker import StepResult, Tracker, resolve_device

__all__ = [
    "CheckpointError", "MemoryConfig", "ModelConfig", "ReadoutConfig", "StepResult", "Tracker", "TrackerConfig",
    "TrackerInputError", "resolve_device",
]

"""Streaming tracker: `Tracker.step()` per frame over a fixed-size ring memory."""

from edge_vos.tracker.config import MemoryConfig, ModelConfig, ReadoutConfig, TrackerConfig
from edge_vos.tracker.tracker import StepResult, Tracker

__all__ = ["MemoryConfig", "ModelConfig", "ReadoutConfig", "StepResult", "Tracker", "TrackerConfig"]

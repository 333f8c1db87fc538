"""The `model:` section of a tracker config: which architecture and which weights (`model/weights.py` loads them)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_vos.config import one_of
from edge_vos.model.archs import ARCHS


@dataclass
class ModelConfig:
    # The bundled weights' arch (tests/test_model.py keeps the two in step). A checkpoint's own header wins
    # over it; it decides the network for `weights: random`.
    arch: str = "stcn-effl0"
    # Checkpoint file (.safetensors or a torch state dict). Empty: the bundled default weights. "random":
    # a seeded untrained network (pipeline tests and speed checks only).
    weights: str = ""

    def __post_init__(self) -> None:
        one_of("arch", self.arch, ARCHS)

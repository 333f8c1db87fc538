"""The STCN network: pure tensors in, tensors out; knows nothing of streams, memory policy or I/O.

Importing the package imports no torch (`ModelConfig` and `ARCHS` are what config modules need); the
network code is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_vos.model.archs import ARCHS, KEY_DIM, VALUE_DIM
from edge_vos.model.config import ModelConfig

if TYPE_CHECKING:
    from edge_vos.model.checkpoint import (
        CheckpointError,
        init_trunks_from_torchvision,
        load_network,
        read_state_dict,
        save_network,
    )
    from edge_vos.model.network import STCN, build_network
    from edge_vos.model.weights import DEFAULT_WEIGHTS, RANDOM_WEIGHTS, load_configured_network, random_network

_CHECKPOINT = ("CheckpointError", "init_trunks_from_torchvision", "load_network", "read_state_dict", "save_network")
_WEIGHTS = ("DEFAULT_WEIGHTS", "RANDOM_WEIGHTS", "load_configured_network", "random_network")


def __getattr__(name: str) -> object:
    """The network code, imported when first asked for (a config loader never asks)."""
    if name in _CHECKPOINT:
        from edge_vos.model import checkpoint

        return getattr(checkpoint, name)
    if name in ("STCN", "build_network"):
        from edge_vos.model import network

        return getattr(network, name)
    if name in _WEIGHTS:
        from edge_vos.model import weights

        return getattr(weights, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARCHS",
    "DEFAULT_WEIGHTS",
    "KEY_DIM",
    "RANDOM_WEIGHTS",
    "STCN",
    "VALUE_DIM",
    "CheckpointError",
    "ModelConfig",
    "build_network",
    "init_trunks_from_torchvision",
    "load_configured_network",
    "load_network",
    "random_network",
    "read_state_dict",
    "save_network",
]

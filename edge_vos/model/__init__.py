"""The STCN network: pure tensors in, tensors out; knows nothing of streams, memory policy or I/O."""

from edge_vos.model.checkpoint import (
    CheckpointError,
    init_trunks_from_torchvision,
    load_network,
    read_state_dict,
    save_network,
)
from edge_vos.model.config import ModelConfig
from edge_vos.model.network import ARCHS, KEY_DIM, STCN, VALUE_DIM, build_network
from edge_vos.model.weights import DEFAULT_WEIGHTS, RANDOM_WEIGHTS, load_configured_network, random_network

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

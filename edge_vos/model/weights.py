"""Which network a configuration means: the bundled weights, a checkpoint file, or a seeded untrained one.

Every entry point (tracker, service, `edge-vos eval`/`bench`/`build-engines`) goes through
`load_configured_network`, so `model.weights: random` means the same everywhere and nothing above the
model builds a network by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from edge_vos.model.checkpoint import load_network
from edge_vos.model.config import ModelConfig
from edge_vos.model.network import STCN, build_network

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "default.safetensors"
# `model.weights` value for an untrained network: pipeline tests and speed checks only.
RANDOM_WEIGHTS = "random"
RANDOM_SEED = 0


def random_network(arch: str, seed: int = RANDOM_SEED) -> STCN:
    """An untrained network whose weights depend only on `arch` and `seed` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network(arch)


def load_configured_network(config: ModelConfig) -> STCN:
    """The network `config.weights` names: "" = the bundled default, "random" = `random_network(config.arch)`
    (logged as such), anything else a checkpoint file whose own arch wins over `config.arch`.

    Raises FileNotFoundError naming the file when it does not exist.
    """
    weights, arch = config.weights, config.arch
    if weights == RANDOM_WEIGHTS:
        log.warning("model.weights is %r: an UNTRAINED %s network (seed %d); masks are meaningless "
                    "(pipeline tests and speed checks only)", RANDOM_WEIGHTS, arch, RANDOM_SEED)
        return random_network(arch)
    path = Path(weights) if weights else DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"model weights not found: {path}"
            + ("" if weights else " (the bundled default; set model.weights to a checkpoint)")
        )
    network = load_network(path)
    if network.arch != arch:
        log.info("checkpoint arch %s overrides model.arch %s", network.arch, arch)
    return network

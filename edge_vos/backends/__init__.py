"""Execution backends for the encoders and the decoder (the readout always runs in PyTorch)."""

from __future__ import annotations

import torch

from edge_vos.backends.base import BackendUnavailable, NetworkRunner
from edge_vos.backends.torch_backend import TorchRunner
from edge_vos.model.network import STCN


def create_runner(
    network: STCN, backend: str, device: torch.device, precision: str, padded_hw: tuple[int, int]
) -> NetworkRunner:
    """Builds the runner for a backend name from TrackerConfig.backend at a fixed padded input size."""
    if backend in ("torch", "auto"):
        return TorchRunner(network, device, precision)
    raise BackendUnavailable(f"backend {backend!r} is not available")


__all__ = ["BackendUnavailable", "NetworkRunner", "TorchRunner", "create_runner"]

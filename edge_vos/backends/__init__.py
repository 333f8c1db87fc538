"""Execution backends for the encoders and the decoder (the readout always runs in PyTorch).

`create_runner` (factory.py) is the one entry point the tracker uses; it returns a NetworkRunner for a
backend name from TrackerConfig.backend: torch, onnxruntime, tensorrt, torch_tensorrt or auto. Importing the
package imports no torch (`BACKEND_NAMES` is what config modules need); the rest is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_vos.backends.names import BACKEND_NAMES

if TYPE_CHECKING:
    from edge_vos.backends.base import BackendUnavailable, NetworkRunner
    from edge_vos.backends.factory import (
        CPU_FP32_DEFAULT,
        SPLIT_ORT_PARTS,
        choose_backend,
        create_runner,
        resolve_precision,
    )
    from edge_vos.backends.torch_backend import TorchRunner

_FACTORY = ("CPU_FP32_DEFAULT", "SPLIT_ORT_PARTS", "choose_backend", "create_runner", "resolve_precision")


def __getattr__(name: str) -> object:
    """The torch-backed names, imported when first asked for (a config loader never asks)."""
    if name in _FACTORY:
        from edge_vos.backends import factory

        return getattr(factory, name)
    if name in ("BackendUnavailable", "NetworkRunner"):
        from edge_vos.backends import base

        return getattr(base, name)
    if name == "TorchRunner":
        from edge_vos.backends import torch_backend

        return torch_backend.TorchRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKEND_NAMES", "CPU_FP32_DEFAULT", "BackendUnavailable", "NetworkRunner", "TorchRunner", "choose_backend",
    "SPLIT_ORT_PARTS", "create_runner", "resolve_precision",
]

"""`TrackerEngines`: what the trackers of several streams share — one network and its runners (ONNX Runtime
sessions, TensorRT engines) per working size — so N cameras cost one model, not N.

A `Tracker` holds a stream's state (memory, object slots, prior, readout state) and asks its engines for the
runner of its working size. Every tracker of one engines object must agree on what the runners depend on
(device, precision, backend); `max_objects` of each may differ up to the engines' own, which bounds the
object axis of the runners (TensorRT optimisation profiles are built for 1..max_objects objects).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch

from edge_vos.backends.base import NetworkRunner
from edge_vos.backends.factory import create_runner, resolve_precision
from edge_vos.model.network import STCN
from edge_vos.model.weights import load_configured_network
from edge_vos.tracker.config import TrackerConfig

log = logging.getLogger(__name__)

# Working sizes whose runners are kept: a stream that switches between a few sizes does not rebuild
# (or re-export) each time, and one that sees many sizes does not hold engines for all of them. Engines
# shared by several streams keep one more size per extra stream.
RUNNER_SIZES_KEPT = 3


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available on this machine")
    return torch.device(name)


class TrackerEngines:
    """The network (loaded once) and its runners per padded working size, least recently used dropped beyond
    `sizes_kept`. Used by one thread (the trackers' caller)."""

    def __init__(self, config: TrackerConfig, network: STCN | None = None, *, max_objects: int | None = None,
                 sizes_kept: int = RUNNER_SIZES_KEPT) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.network = network if network is not None else load_configured_network(config.model)
        self.network.eval()
        # What the configured precision (`auto` included) means on this device: the runners and the memory.
        self.precision = resolve_precision(self.device, config.precision)
        self.max_objects = max_objects or config.max_objects
        self.sizes_kept = max(1, sizes_kept)
        self._runners: OrderedDict[tuple[int, int], NetworkRunner] = OrderedDict()  # most recent size last

    def check_compatible(self, config: TrackerConfig) -> None:
        """Raises ValueError when a tracker of `config` cannot use these engines."""
        shared = {"device": (config.device, self.config.device), "precision": (config.precision, self.config.precision),
                  "backend": (config.backend, self.config.backend), "model": (config.model, self.config.model)}
        for name, (mine, theirs) in shared.items():
            if mine != theirs:
                raise ValueError(f"{name}: {mine!r} differs from the shared engines' {theirs!r}")
        if config.max_objects > self.max_objects:
            raise ValueError(f"max_objects: {config.max_objects} is more than the shared engines were built for "
                             f"({self.max_objects})")

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """Padded working sizes with a runner, least recently used first."""
        return list(self._runners)

    def runner(self, padded_hw: tuple[int, int]) -> NetworkRunner:
        """The runner for this padded working size, built (an engine exported, maybe) on first use."""
        if padded_hw in self._runners:
            self._runners.move_to_end(padded_hw)
            return self._runners[padded_hw]
        runner = create_runner(self.network, self.config.backend, self.device, self.precision, padded_hw,
                               max_objects=self.max_objects)
        log.info("backend %s at %dx%d", runner.name, padded_hw[1], padded_hw[0])
        self._runners[padded_hw] = runner
        while len(self._runners) > self.sizes_kept:
            dropped, _ = self._runners.popitem(last=False)
            log.info("dropped the %s runner for %dx%d (least recently used size)", runner.name, dropped[1], dropped[0])
        return runner

"""`build_readout(config)`: the one constructor of the readout the tracker and training run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from edge_vos.readout.config import ReadoutConfig, StcnOptions, TmrnOptions
from edge_vos.readout.stcn import stcn_readout
from edge_vos.readout.tmrn import TmrnReadout


class Readout(Protocol):
    """Reads the memory out for a query: one object per stream, holding what the readout keeps between
    frames. qk [B,Ck,H,W], mk [B,T,Ck,H,W], mv [B,O,T,Cv,H,W], valid [B,T] or [B,O,T] bool -> [B,O,Cv,H,W]."""

    def __call__(
        self, qk: torch.Tensor, mk: torch.Tensor, mv: torch.Tensor, valid: torch.Tensor,
        slot_versions: Sequence[int] | None = None,
    ) -> torch.Tensor: ...

    def reset(self) -> None: ...


class StcnReadout:
    """STCN's readout (stateless): one softmax over the pixels of all valid slots, optionally top-k."""

    def __init__(self, top_k: int) -> None:
        self.top_k = top_k or None  # 0: every entry

    def __call__(
        self, qk: torch.Tensor, mk: torch.Tensor, mv: torch.Tensor, valid: torch.Tensor,
        slot_versions: Sequence[int] | None = None,
    ) -> torch.Tensor:
        return stcn_readout(qk, mk, mv, valid, top_k=self.top_k)

    def reset(self) -> None:
        """Nothing is kept between frames."""


def build_readout(config: ReadoutConfig) -> Readout:
    """The readout `config` describes (validated when the config was built)."""
    if config.kind == "stcn":
        return StcnReadout((config.stcn or StcnOptions()).top_k)  # ReadoutConfig fills the chosen section
    return TmrnReadout(config.tmrn or TmrnOptions())

"""The readout used inside the training loop, made in one place from the config's `readout` section."""

from __future__ import annotations

from collections.abc import Callable

import torch

from edge_vos.train.config import ReadoutSection

# (query key [B,Ck,h,w], memory keys [B,t,Ck,h,w], memory values [B,O,t,Cv,h,w], valid [B,t]) -> [B,O,Cv,h,w]
Readout = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def training_readout(cfg: ReadoutSection) -> Readout:
    """STCN's full softmax (no top-k, as in STCN's training) or ST / TMRN (SVD agents without gradient)."""
    from edge_vos.readout import stcn_readout, tmrn_readout

    if cfg.kind == "stcn":
        return lambda qk, mk, mv, valid: stcn_readout(qk, mk, mv, valid, top_k=None)
    return lambda qk, mk, mv, valid: tmrn_readout(
        qk, mk, mv, valid, agents=cfg.agents, mode=cfg.kind, svd=cfg.svd, renormalize=cfg.renormalize
    )

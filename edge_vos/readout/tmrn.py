"""The TMRN readout as it ships: the paper's stages, in order, on the top-k rows of each slot's affinity.

Per batch element, for the valid memory slots t (readout/stages.py holds each stage):
1. affinity: S_t = softmax over the kept entries of each row of sim(Q, M_t) (`slot_top_k` per row);
2. agents: the top-K singular directions of each S_t, A = [U^T Q ; V^T M_t] (warm-started subspace iteration,
   refreshed on one frame in `agents_every`);
3. agent-level rectification: W_t = (P_Q P_M^T) * S_t, row-renormalised (P: softmaxes against the agents);
4. alignment: K_t = W_t M_t^T, each memory frame's keys aligned to the query's pixels;
5. temporal aggregation: per query pixel a softmax over slots of sim(Q_i, K_t,i) (per object: only the mask
   of valid slots differs), and out = sum_t a_t W_t V_t.
Everything object-independent is computed once per valid slot and batched over slots. The dense exact
reference and the ablations (exact / randomized SVD, SVD-free agents, eq. 13 without renormalisation, W = S)
live in tests/readout_reference.py, which subclasses this class to swap a stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from edge_vos.readout.common import check_inputs, needs_grad
from edge_vos.readout.config import TmrnOptions
from edge_vos.readout.sparse import SparseRows
from edge_vos.readout.stages import Agents, affinity, align, rectify, svd_agents, temporal_weights, value_sum
from edge_vos.readout.state import TmrnState


class TmrnReadout:
    """The sparse TMRN readout of one stream; owns the stream's `TmrnState` (warm starts, kept agents,
    scratch buffers). One instance per stream: `reset()` when the stream starts over."""

    def __init__(self, options: TmrnOptions) -> None:
        self.agents = options.agents
        self.slot_top_k = options.slot_top_k
        self.agents_every = options.agents_every
        self.state = TmrnState()

    def reset(self) -> None:
        """Forgets every slot and releases the scratch buffers (a new stream)."""
        self.state.clear()

    def __call__(
        self, qk: torch.Tensor, mk: torch.Tensor, mv: torch.Tensor, valid: torch.Tensor,
        slot_versions: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """qk [B,Ck,H,W], mk [B,T,Ck,H,W], mv [B,O,T,Cv,H,W], valid [B,T] or [B,O,T] bool -> [B,O,Cv,H,W].

        `slot_versions`: the memory's version number of each slot (MemoryView.slot_versions); a slot whose
        number changed was overwritten, so its warm start is dropped (batch element 0: the tracker's stream).
        """
        B, O, T, Ck, Cv, H, W, valid = check_inputs(qk, mk, mv, valid)
        if slot_versions is not None:
            self.state.sync_versions(slot_versions)
        hw = H * W
        inplace = not needs_grad(qk, mk, mv)
        outs = []
        for b in range(B):
            sel = valid[b].any(dim=0).nonzero().flatten()
            every = len(sel) == T  # all slots: views instead of index copies
            q = qk[b].reshape(Ck, hw).T  # [hw_q, Ck]
            m = (mk[b] if every else mk[b, sel]).reshape(len(sel), Ck, hw)  # [N, Ck, hw_m]
            vals = (mv[b] if every else mv[b][:, sel]).reshape(O, len(sel), Cv, hw)
            out = self.read(q, m, vals, valid[b][:, sel], b, sel.tolist(), inplace)
            outs.append(out.view(O, Cv, H, W))
        return torch.stack(outs)

    def read(
        self, q: torch.Tensor, m: torch.Tensor, vals: torch.Tensor, mask: torch.Tensor, batch: int,
        slots: list[int], inplace: bool,
    ) -> torch.Tensor:
        """One batch element, the stages in order: q [hw_q, Ck], m [N, Ck, hw_m], vals [O, N, Cv, hw_m],
        mask [O, N] -> [O, Cv, hw_q]. `slots`: each of the N slots' index in the memory."""
        s = affinity(q, m, self.slot_top_k, self.state.workspace if inplace else None)
        agents = self.find_agents(s, q, m, batch, slots)
        w = self.rectify(s, q, m, agents)
        aligned = align(s, w, m)
        weights = temporal_weights(q, aligned, mask)
        return value_sum(s, w, weights, vals, mask)

    def find_agents(self, s: SparseRows, q: torch.Tensor, m: torch.Tensor, batch: int, slots: list[int]) -> Agents:
        """Stage 2 (a method so that the reference can swap the way agents are found)."""
        return svd_agents(s, q, m, self.agents, state=self.state, batch=batch, slots=slots, every=self.agents_every)

    def rectify(self, s: SparseRows, q: torch.Tensor, m: torch.Tensor, agents: Agents) -> torch.Tensor:
        """Stage 3 (a method so that the reference can swap it for its ablations)."""
        return rectify(s, q, m, agents)

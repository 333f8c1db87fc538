"""Sparse TMRN: the top-k entries of each row of every slot's affinity S, everything after S on them.

Trained affinities are peaky (nearly all of a row's mass sits in a few memory pixels), so S is
replaced by its top-k truncation (rows renormalised, as STCN's top-k does over all slots) and:
- the agents' subspace comes from the warm-started iteration with sparse products (hw*k*K, not hw^2*K);
- C = P_Q P_M^T is evaluated only where S is kept (hw*k*2K);
- aligned keys and values are weighted gathers of the kept memory pixels (hw*k*(Ck + O*Cv)).
The logits (one GEMM for all slots) and the per-slot top-k are the same as the STCN readout's top-k.
"""

from __future__ import annotations

import torch

from edge_vos.readout.common import logits_dtype, sim_logits_flat
from edge_vos.readout.sparse import SparseRows, gather_sum, slot_topk
from edge_vos.readout.stages import Agents, agent_keys, agent_probs, dead_rows, temporal_weights
from edge_vos.readout.state import SvdState
from edge_vos.readout.workspace import ReadoutWorkspace


def sparse_tmrn(
    q: torch.Tensor, m: torch.Tensor, vals: torch.Tensor, mask: torch.Tensor, *, top_k: int, agents: int,
    mode: str, svd: str, renormalize: bool, agent_source: str, state: SvdState | None, batch: int,
    slots: list[int], every: int, workspace: ReadoutWorkspace | None,
) -> torch.Tensor:
    """One batch element: q [hw_q, Ck], m [N, Ck, hw_m], vals [O, N, Cv, hw_m], mask [O, N] -> [O, Cv, hw_q]."""
    s = sparse_affinity(q, m, top_k, workspace)
    if mode == "st":
        w = s.value  # rows already sum to one
    else:
        chosen = agent_keys(s, q, m, agents, svd=svd, source=agent_source, state=state, batch=batch, slots=slots,
                            every=every)
        w = sparse_alignment(s, q, m, chosen, renormalize)
    aligned = s.with_value(w).mm(m.mT)  # [N, hw_q, Ck]
    weights = temporal_weights(q, aligned, mask)  # [O, N, hw_q]
    return sparse_value_sum(s, w, weights, vals, mask)


def sparse_affinity(q: torch.Tensor, m: torch.Tensor, top_k: int, workspace: ReadoutWorkspace | None) -> SparseRows:
    """S_t truncated to the top_k entries of each row (softmax over the kept logits): [N, hw_q, k]."""
    N, _, hw_m = m.shape
    dtype = logits_dtype(q.dtype)
    out = workspace.get("logits", (q.shape[0], N, hw_m), dtype, q.device) if workspace is not None else None
    top_val, top_idx = slot_topk(sim_logits_flat(q, m, out=out), top_k)  # [hw_q, N, k]
    value = torch.softmax(top_val, dim=-1).to(q.dtype)  # the logits are float32 for half input
    return SparseRows(top_idx.transpose(0, 1).contiguous(), value.transpose(0, 1).contiguous(), hw_m)


def sparse_alignment(
    s: SparseRows, q: torch.Tensor, m: torch.Tensor, agents: Agents, renormalize: bool
) -> torch.Tensor:
    """W = (P_Q P_M^T) * S at S's kept entries [N, hw_q, k], divided by its row sums when `renormalize`;
    rows whose sum underflowed take S's row (see stages.dead_rows)."""
    p_q, p_m = agent_probs(q, m, agents.keys, agents.p_m)
    w = s.sample(p_q, p_m).mul_(s.value) if not torch.is_grad_enabled() else s.sample(p_q, p_m) * s.value
    if not renormalize:
        return w
    row_sums = w.sum(dim=-1, keepdim=True)
    dead = dead_rows(row_sums)
    if bool(dead.any()):
        w = torch.where(dead, s.value, w)
        row_sums = torch.where(dead, s.value.sum(dim=-1, keepdim=True), row_sums)
    return w / row_sums


def sparse_value_sum(
    s: SparseRows, w: torch.Tensor, weights: torch.Tensor, vals: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """out_o[:, i] = sum_t a_o,t,i sum_j W_t,ij V_o,t[:, j] over the kept j: w [N, hw_q, k], weights
    [O, N, hw_q], vals [O, N, Cv, hw_m] -> [O, Cv, hw_q].

    One gather of value rows (a memory pixel's Cv channels) per object; the rows are a view when the
    values are stored channels-last (tracker.memory does), a copy otherwise. The kept entries of slots
    invalid for an object are left out of its gather, so garbage there (NaN) is never read.
    """
    O, N, Cv, hw_m = vals.shape
    hw_q, k = w.shape[1], w.shape[2]
    index = s.flat_index.view(N, hw_q, k).transpose(0, 1).reshape(hw_q, N * k)  # sorted per row: slot, pixel
    rows = vals.permute(0, 1, 3, 2)  # [O, N, hw_m, Cv]
    outs = []
    for o in range(O):
        wide = (w * weights[o][..., None]).transpose(0, 1).reshape(hw_q, N * k)
        idx, table = index, rows[o].reshape(N * hw_m, Cv)
        if not bool(mask[o].all()):
            keep = mask[o].repeat_interleave(k)
            idx, wide = idx[:, keep], wide[:, keep]
        outs.append(gather_sum(idx, wide, table).T)
    return torch.stack(outs)

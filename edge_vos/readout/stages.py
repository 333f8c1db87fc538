"""The TMRN readout's stages (readout/tmrn.py runs them in order), on the top-k rows of each slot's affinity.

Trained affinities are peaky (nearly all of a row's mass sits in a few memory pixels), so S is replaced by
its top-k truncation (rows renormalised, as STCN's top-k does over all slots) and everything after S runs on
the kept entries: the agents' subspace comes from the warm-started iteration with sparse products (hw*k*K,
not hw^2*K); C = P_Q P_M^T is evaluated only where S is kept (hw*k*2K); aligned keys and values are
weighted gathers of the kept memory pixels (hw*k*(Ck + O*Cv)).
Shapes per batch element: q [hw_q, Ck], m [N, Ck, hw_m] (the N valid slots), vals [O, N, Cv, hw_m],
mask [O, N] (which slots each object may read).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from edge_vos.readout.common import logits_dtype, sim_logits_flat, slot_softmax
from edge_vos.readout.sparse import GatherSum, SparseRows, slot_topk
from edge_vos.readout.state import TmrnState, fingerprints
from edge_vos.readout.svd import top_singular
from edge_vos.readout.workspace import ReadoutWorkspace


@dataclass
class Agents:
    """The 2K agent keys of every slot [N, 2K, Ck], and their P_M [N, hw_m, 2K] where already known."""

    keys: torch.Tensor
    p_m: torch.Tensor | None = None


def affinity(q: torch.Tensor, m: torch.Tensor, slot_top_k: int, workspace: ReadoutWorkspace | None) -> SparseRows:
    """S_t truncated to the slot_top_k entries of each row (softmax over the kept logits): [N, hw_q, k].
    The logits of all slots are one GEMM; the per-slot top-k is the same as STCN's top-k readout's."""
    N, _, hw_m = m.shape
    dtype = logits_dtype(q.dtype)
    out = workspace.get("logits", (q.shape[0], N, hw_m), dtype, q.device) if workspace is not None else None
    top_val, top_idx = slot_topk(sim_logits_flat(q, m, out=out), slot_top_k)  # [hw_q, N, k]
    value = torch.softmax(top_val, dim=-1).to(q.dtype)  # the logits are float32 for half input
    return SparseRows(top_idx.transpose(0, 1).contiguous(), value.transpose(0, 1).contiguous(), hw_m)


def svd_agents(
    s: SparseRows, q: torch.Tensor, m: torch.Tensor, agents: int, *, state: TmrnState, batch: int,
    slots: list[int], every: int,
) -> Agents:
    """A = [U^T Q ; V^T M_t] [N, 2K, Ck] with U, V the top-K singular vectors of each slot's S (no gradient
    through them). `every` > 1: a slot's agents are recomputed on one frame in `every`, the slots' turns
    staggered so each frame refreshes about N / every of them; the others keep their last agents and P_M
    (same keys, same memory: the same P_M). A slot without any, or overwritten, is computed at once."""
    N, hw_q, hw_m = s.shape
    k = min(agents, hw_q, hw_m)
    if every == 1:
        u, v = top_singular(s, k, keys=m, state=state, batch=batch, slots=slots)
        return Agents(svd_keys(u, v, q, m))
    frame = state.next_frame(batch)
    prints = fingerprints(m)
    shape = (2 * k, m.shape[1], m.shape[2])
    kept = [state.agents(batch, t, prints[n], shape) for n, t in enumerate(slots)]
    todo = [n for n, t in enumerate(slots) if kept[n] is None or (frame + t) % every == 0]
    if todo:
        idx = torch.tensor(todo, device=m.device)
        u, v = top_singular(s.select(idx), k, keys=m[idx], state=state, batch=batch,
                            slots=[slots[n] for n in todo], prints=prints[idx])
        keys = svd_keys(u, v, q, m[idx])
        p_m = memory_probs(m[idx], keys)
        for j, n in enumerate(todo):
            kept[n] = (keys[j], p_m[j])
            state.put_agents(batch, slots[n], prints[n], keys[j], p_m[j])
    return Agents(torch.stack([x[0] for x in kept]), torch.stack([x[1] for x in kept]))  # type: ignore[index]


def svd_keys(u: torch.Tensor, v: torch.Tensor, q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[U^T Q ; V^T M_t]: u [N, hw_q, K], v [N, hw_m, K] -> [N, 2K, Ck] in the keys' dtype."""
    return torch.cat([u.to(q.dtype).mT @ q, v.to(m.dtype).mT @ m.mT], dim=1)


def rectify(s: SparseRows, q: torch.Tensor, m: torch.Tensor, agents: Agents) -> torch.Tensor:
    """Agent-level rectification: W = (P_Q P_M^T) * S at S's kept entries [N, hw_q, k], divided by its row
    sums; rows whose sum underflowed take S's row (see dead_rows)."""
    p_q, p_m = agent_probs(q, m, agents.keys, agents.p_m)
    w = s.sample(p_q, p_m).mul_(s.value) if not torch.is_grad_enabled() else s.sample(p_q, p_m) * s.value
    row_sums = w.sum(dim=-1, keepdim=True)
    dead = dead_rows(row_sums)
    if bool(dead.any()):
        w = torch.where(dead, s.value, w)
        row_sums = torch.where(dead, s.value.sum(dim=-1, keepdim=True), row_sums)
    return w / row_sums


def agent_probs(
    q: torch.Tensor, m: torch.Tensor, keys: torch.Tensor, p_m: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """P_Q = softmax(Q A^T / sqrt(Ck)) [N, hw_q, 2K] and P_M = softmax(M_t A^T / sqrt(Ck)) [N, hw_m, 2K];
    `p_m`, when given, is P_M for these keys already (agents kept from an earlier frame)."""
    out, dtype = q.dtype, logits_dtype(q.dtype)  # agent logits in float32 for half input (see logits_dtype)
    scale = 1.0 / math.sqrt(q.shape[-1])
    p_q = torch.softmax(torch.matmul(q.to(dtype), keys.to(dtype).mT) * scale, dim=-1).to(out)
    return p_q, (memory_probs(m, keys) if p_m is None else p_m)


def memory_probs(m: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """P_M = softmax(M_t A^T / sqrt(Ck)): m [N, Ck, hw_m], keys [N, 2K, Ck] -> [N, hw_m, 2K]."""
    out, dtype = m.dtype, logits_dtype(m.dtype)
    scale = 1.0 / math.sqrt(m.shape[1])
    return torch.softmax(torch.bmm(m.to(dtype).mT, keys.to(dtype).mT) * scale, dim=-1).to(out)


def dead_rows(row_sums: torch.Tensor) -> torch.Tensor:
    """Rows of W = C * S whose sum underflowed (zero, subnormal so that 1 / sum overflows, or NaN).

    W_i sums to zero only by underflow: a peaky S row (trained keys: perplexity ~1) whose few nonzero
    entries meet C entries below the float range. The renormalised row then is S_i itself in the limit
    (for a one-hot S_i exactly, whatever C is), so such rows take S_i.
    """
    return ~(row_sums > torch.finfo(row_sums.dtype).tiny)


def align(s: SparseRows, w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Alignment: each memory frame's keys seen from the query, K_t = W_t M_t^T [N, hw_q, Ck]."""
    return s.with_value(w).mm(m.mT)


def temporal_weights(q: torch.Tensor, aligned: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per query pixel, softmax over the slots of sim(Q_i, K_t,i), per object (only the mask differs).

    q [hw_q, Ck], aligned keys [N, hw_q, Ck], mask [O, N] -> [O, N, hw_q].
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    out, dtype = q.dtype, logits_dtype(q.dtype)  # float32 for half input (see logits_dtype)
    aligned, q = aligned.to(dtype), q.to(dtype)
    logits = (2.0 * (aligned * q).sum(-1) - aligned.pow(2).sum(-1)) * scale  # [N, hw_q]
    return slot_softmax(logits, mask).to(out)


def value_sum(
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
    # Objects with the same valid slots have the same temporal weights (only the mask differs), so the
    # same kept entries with the same weights: built once for them all.
    sums: dict[tuple[bool, ...], GatherSum] = {}
    outs = []
    for o in range(O):
        key = tuple(bool(v) for v in mask[o].tolist())
        if key not in sums:
            wide = (w * weights[o][..., None]).transpose(0, 1).reshape(hw_q, N * k)
            idx = index
            if not all(key):
                keep = mask[o].repeat_interleave(k)
                idx, wide = idx[:, keep], wide[:, keep]
            sums[key] = GatherSum(idx, wide, N * hw_m)
        outs.append(sums[key](rows[o].reshape(N * hw_m, Cv)).T)
    return torch.stack(outs)

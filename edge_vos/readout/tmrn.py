"""TMRN readout: per-slot affinities aligned through agents, then a per-pixel softmax over slots.

Two paths with one interface (`tmrn_readout`):
- dense (`top_k=None`), the exact reference: every hw x hw matrix of every slot;
- sparse (`top_k=k`, the tracker's default; tmrn_sparse.py): the top-k entries of each row of every
  slot's S, and everything after S on those entries only.
Each runs the same named stages per batch element: affinity, agents, alignment, temporal weights,
value sum. Everything object-independent is computed once per valid slot and batched over slots;
objects differ only in the mask of the temporal softmax and in their values.
"""

from __future__ import annotations

import torch

from edge_vos.readout.common import check_inputs, logits_dtype, needs_grad, sim_logits, softmax_last
from edge_vos.readout.stages import AGENT_SOURCES, Agents, agent_keys, agent_probs, dead_rows, temporal_weights
from edge_vos.readout.state import SvdState
from edge_vos.readout.svd import SVD_KINDS
from edge_vos.readout.tmrn_sparse import sparse_tmrn
from edge_vos.readout.workspace import ReadoutWorkspace

MODES = ("tmrn", "st")


def tmrn_readout(
    qk: torch.Tensor,
    mk: torch.Tensor,
    mv: torch.Tensor,
    valid: torch.Tensor,
    *,
    agents: int = 128,
    mode: str = "tmrn",
    svd: str = "exact",
    renormalize: bool = True,
    state: SvdState | None = None,
    top_k: int | None = None,
    agent_source: str = "svd",
    agents_every: int = 1,
) -> torch.Tensor:
    """qk [B,Ck,H,W], mk [B,T,Ck,H,W], mv [B,O,T,Cv,H,W], valid [B,T] or [B,O,T] bool -> [B,O,Cv,H,W].

    mode "st": W_t = S_t; "tmrn": W_t = (P_Q P_M^T) * S_t with agents from `agent_source` (row-normalised
    when `renormalize`; False is eq. 13 of the paper to the letter). `svd`: "exact", "lowrank" (seeded
    randomized) or "fast" (warm-started from `state`, an SvdState kept per stream; optional). `top_k`:
    keep the k largest entries of each row of each slot's S (the sparse path); None: dense, exact.
    `agents_every`: with svd="fast" and a `state`, each slot's agents are refreshed on one frame in
    that many (staggered over slots; stages.agent_keys); 1: every frame.
    """
    B, O, T, Ck, Cv, H, W, valid = check_inputs(qk, mk, mv, valid)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if svd not in SVD_KINDS:
        raise ValueError(f"svd must be one of {SVD_KINDS}, got {svd!r}")
    if agent_source not in AGENT_SOURCES:
        raise ValueError(f"agent_source must be one of {AGENT_SOURCES}, got {agent_source!r}")
    if agents <= 0:
        raise ValueError(f"agents must be positive, got {agents}")
    if agents_every <= 0:
        raise ValueError(f"agents_every must be positive, got {agents_every}")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k must be positive or None, got {top_k}")
    if state is not None and not isinstance(state, SvdState):
        raise TypeError(f"state must be an SvdState or None, got {type(state).__name__}")
    hw = H * W
    inplace = not needs_grad(qk, mk, mv)
    workspace = state.workspace if state is not None and inplace else None
    outs = []
    for b in range(B):
        sel = valid[b].any(dim=0).nonzero().flatten()
        N = len(sel)
        every = N == T  # all slots: views instead of index copies
        q = qk[b].reshape(Ck, hw).T  # [hw_q, Ck]
        m = (mk[b] if every else mk[b, sel]).reshape(N, Ck, hw)  # [N, Ck, hw_m]
        vals = (mv[b] if every else mv[b][:, sel]).reshape(O, N, Cv, hw)
        mask = valid[b][:, sel]  # [O, N]
        settings = dict(agents=agents, mode=mode, svd=svd, renormalize=renormalize, agent_source=agent_source,
                        state=state, batch=b, slots=sel.tolist(), every=agents_every)
        if top_k is not None:
            out = sparse_tmrn(q, m, vals, mask, top_k=top_k, workspace=workspace, **settings)  # type: ignore[arg-type]
        else:
            out = _dense_tmrn(q, m, vals, mask, inplace=inplace, workspace=workspace, **settings)  # type: ignore[arg-type]
        outs.append(out.view(O, Cv, H, W))
    return torch.stack(outs)


def _dense_tmrn(
    q: torch.Tensor, m: torch.Tensor, vals: torch.Tensor, mask: torch.Tensor, *, agents: int, mode: str, svd: str,
    renormalize: bool, agent_source: str, state: SvdState | None, batch: int, slots: list[int], every: int,
    inplace: bool, workspace: ReadoutWorkspace | None,
) -> torch.Tensor:
    """The exact reference for one batch element: q [hw_q, Ck], m [N, Ck, hw_m], vals [O, N, Cv, hw_m],
    mask [O, N] -> [O, Cv, hw_q]."""
    s = _affinity(q, m, inplace, workspace)
    if mode == "st":
        w, aligned, row_sums = s, torch.bmm(s, m.mT), None
    else:
        chosen = agent_keys(s, q, m, agents, svd=svd, source=agent_source, state=state, batch=batch, slots=slots,
                            every=every)
        w, aligned, row_sums = _alignment(s, q, m, chosen, inplace, workspace)
        if not renormalize:
            row_sums = None
    inv_rows = 1.0 / row_sums if row_sums is not None else None  # [N, hw_q]
    if inv_rows is not None:
        aligned = aligned * inv_rows[..., None]
    weights = temporal_weights(q, aligned, mask)  # [O, N, hw_q]
    if inv_rows is not None:
        weights = weights * inv_rows[None]
    return _value_sum(w, weights, vals, mask, inplace)


def _affinity(q: torch.Tensor, m: torch.Tensor, inplace: bool, workspace: ReadoutWorkspace | None) -> torch.Tensor:
    """S = row-softmax(sim(Q, M_t)) [N, hw_q, hw_m] (rows: query pixels), written over its logits."""
    N, _, hw_m = m.shape
    dtype = logits_dtype(q.dtype)  # float32 for half input; S itself goes back to the input dtype
    out = workspace.get("affinity", (N, q.shape[0], hw_m), dtype, q.device) if workspace is not None else None
    return softmax_last(sim_logits(q.expand(N, -1, -1), m, out=out), inplace).to(q.dtype)


def _alignment(
    s: torch.Tensor, q: torch.Tensor, m: torch.Tensor, agents: Agents, inplace: bool,
    workspace: ReadoutWorkspace | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W = (P_Q P_M^T) * S, its aligned keys W M_t and row sums (W [M_t | 1]: the last column is free)."""
    N, hw_q, hw_m = s.shape
    p_q, p_m = agent_probs(q, m, agents.keys, agents.p_m)
    out = workspace.get("alignment", (N, hw_q, hw_m), s.dtype, s.device) if workspace is not None else None
    c = torch.bmm(p_q, p_m.mT, out=out) if out is not None else torch.bmm(p_q, p_m.mT)
    w = c.mul_(s) if inplace else c * s
    m_ones = torch.cat([m.mT, torch.ones(N, hw_m, 1, dtype=m.dtype, device=m.device)], dim=-1)
    aligned = torch.bmm(w, m_ones)  # [N, hw_q, Ck + 1]
    aligned, row_sums = aligned[..., :-1], aligned[..., -1]
    dead = dead_rows(row_sums)
    if bool(dead.any()):
        w, aligned, row_sums = _revive_rows(w, s, m, aligned, row_sums, dead, inplace)
    return w, aligned, row_sums


def _value_sum(
    w: torch.Tensor, weights: torch.Tensor, vals: torch.Tensor, mask: torch.Tensor, inplace: bool
) -> torch.Tensor:
    """sum_t diag(a_t) W_t V_t per object: w [N, hw_q, hw_m], weights [O, N, hw_q] (temporal weight /
    row sum), vals [O, N, Cv, hw_m] -> [O, Cv, hw_q].

    All objects sharing the slot mask (the common case): diag(a_t / r_t) is folded into W_t in place and
    sum_t V_t W_t'^T accumulated slot by slot (`addmm_`) into one [O*Cv, hw] output: the FLOPs of the
    STCN readout and no copy of the values. Per-object masks (or autograd): Y_t = V_t W_t^T for all
    objects in one bmm over slots, then a per-object weighted sum over t.
    """
    O, N, Cv, hw_m = vals.shape
    hw_q = w.shape[1]
    if inplace and bool(mask.all()):
        w = w.mul_(weights[0][..., None])
        out = torch.zeros(O * Cv, hw_q, dtype=w.dtype, device=w.device)
        for n in range(N):
            out.addmm_(vals[:, n].reshape(O * Cv, hw_m), w[n].T)
        return out.view(O, Cv, hw_q)
    if not bool(mask.all()):  # slots invalid for an object may hold garbage (NaN) for that object
        vals = torch.where(mask[:, :, None, None], vals, 0)
    y = torch.bmm(vals.transpose(0, 1).reshape(N, O * Cv, hw_m), w.mT).view(N, O, Cv, hw_q)
    return (y * weights.transpose(0, 1)[:, :, None, :]).sum(dim=0)


def _revive_rows(
    g: torch.Tensor, s: torch.Tensor, m: torch.Tensor, aligned: torch.Tensor, row_sums: torch.Tensor,
    dead: torch.Tensor, inplace: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of W = C * S that underflowed to zero (`dead` [N, hw_q]) take the row of S instead:
    W's row, its aligned key S_i M_t and its row sum. A rare path (copies where autograd records)."""
    rows = dead.nonzero(as_tuple=True)
    s_rows = s[rows].to(g.dtype)  # [D, hw_m]
    if inplace:
        g[rows] = s_rows
        aligned[rows] = torch.einsum("dj,dcj->dc", s_rows, m[rows[0]]).to(aligned.dtype)
        row_sums[rows] = s_rows.sum(dim=-1).to(row_sums.dtype)
        return g, aligned, row_sums
    mask = dead[..., None]
    g = torch.where(mask, s.to(g.dtype), g)
    revived = torch.bmm(s.to(m.dtype), m.mT)  # all rows (rare path), aligned keys of S
    aligned = torch.where(mask, revived.to(aligned.dtype), aligned)
    row_sums = torch.where(dead, s.sum(dim=-1).to(row_sums.dtype), row_sums)
    return g, aligned, row_sums

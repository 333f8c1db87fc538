"""TMRN readout: per-slot affinities aligned through SVD agents, then a per-pixel softmax over slots.

Everything object-independent (affinities, SVD, agents, alignment, temporal logits) is computed once per
valid slot and batched over slots; objects differ only in the mask of the temporal softmax and in their
values. The aligned-value sum sum_t diag(a_t) W_t V_t costs the same FLOPs as the STCN readout: when all
objects share the slot mask, diag(a_t / r_t) (temporal weight and row normalisation of W) is folded into
W_t in place and the sum is accumulated slot by slot into one [O*Cv, hw] output; with per-object masks
(or under autograd) Y_t = V_t W_t^T is one bmm over slots, objects stacked along channels, followed by a
per-object weighted sum over t. Neither materialises per-object copies of hw x hw matrices.
"""

from __future__ import annotations

import math

import torch

from edge_vos.readout.common import (
    check_inputs,
    needs_grad,
    sim_logits,
    sim_logits_flat,
    slot_softmax,
    softmax_last,
)
from edge_vos.readout.svd import SVD_KINDS, SvdState, fast_gemm_dtype, top_singular

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
) -> torch.Tensor:
    """qk [B,Ck,H,W], mk [B,T,Ck,H,W], mv [B,O,T,Cv,H,W], valid [B,T] or [B,O,T] bool -> [B,O,Cv,H,W].

    mode "st": W_t = S_t; "tmrn": W_t = (P_Q P_M^T) * S_t with SVD agents (row-normalised when
    `renormalize`; False is eq. 13 of the paper to the letter). `svd`: "exact", "lowrank" (seeded
    randomized) or "fast" (warm-started from `state`, an SvdState kept per stream; optional).
    """
    B, O, T, Ck, Cv, H, W, valid = check_inputs(qk, mk, mv, valid)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if svd not in SVD_KINDS:
        raise ValueError(f"svd must be one of {SVD_KINDS}, got {svd!r}")
    if agents <= 0:
        raise ValueError(f"agents must be positive, got {agents}")
    if state is not None and not isinstance(state, SvdState):
        raise TypeError(f"state must be an SvdState or None, got {type(state).__name__}")
    hw = H * W
    scale = 1.0 / math.sqrt(Ck)
    inplace = not needs_grad(qk, mk, mv)
    outs = []
    for b in range(B):
        sel = valid[b].any(dim=0).nonzero().flatten()
        N = len(sel)
        mask = valid[b][:, sel]  # [O, N]
        q = qk[b].reshape(Ck, hw).T[None].expand(N, hw, Ck)  # [N, hw_q, Ck]
        every = N == T  # all slots: views instead of index copies
        m = (mk[b] if every else mk[b, sel]).reshape(N, Ck, hw)  # [N, Ck, hw_m]
        reuse = inplace and state is not None
        fast = mode == "tmrn" and svd == "fast"
        if fast:
            # all slots' logits in one GEMM [hw_q, N * hw_m] (the STCN readout's layout): a batch of N
            # thin GEMMs ran ~1.4x slower here. Softmax per (query pixel, slot) row; s is a view.
            buf_s = state.buffer("s", (hw, N, hw), qk.dtype, qk.device) if reuse else None
            s = softmax_last(sim_logits_flat(q[0], m, out=buf_s), inplace).permute(1, 0, 2)
        else:
            buf_s = state.buffer("s", (N, hw, hw), qk.dtype, qk.device) if reuse else None
            s = softmax_last(sim_logits(q, m, out=buf_s), inplace)  # [N, hw_q, hw_m], rows: query pixels
        gemm = fast_gemm_dtype(qk.dtype, qk.device) if fast else qk.dtype
        if mode == "st":
            g, renorm = s, False
        else:
            k = min(agents, hw)
            u, v = top_singular(s, k, svd, keys=m, state=state, batch=b, slots=sel.tolist())
            agent_keys = torch.cat([u.mT @ q, v.mT @ m.mT], dim=1)  # [N, 2K, Ck]
            p_q = torch.softmax(torch.bmm(q, agent_keys.mT) * scale, dim=-1)  # [N, hw_q, 2K]
            p_m = torch.softmax(torch.bmm(m.mT, agent_keys.mT) * scale, dim=-1)  # [N, hw_m, 2K]
            if gemm != qk.dtype:
                # svd="fast": C in the GEMM dtype (float32 accumulation inside the GEMM; its output
                # reuses the buffer of S's GEMM-dtype copy, done with after the SVD), then W = C * S in
                # the input dtype. Upcast, then multiply: a mixed-dtype mul ran 4x slower than both.
                c_buf = state.buffer("gemm", (N, hw, hw), gemm, qk.device) if reuse else None  # type: ignore[union-attr]
                c = torch.bmm(p_q.to(gemm), p_m.to(gemm).mT, out=c_buf)
                if reuse:
                    g = state.buffer("g", (N, hw, hw), qk.dtype, qk.device).copy_(c).mul_(s)  # type: ignore[union-attr]
                else:
                    g = c.to(qk.dtype).mul_(s) if inplace else c.to(qk.dtype) * s
                del c
            elif reuse:
                g = torch.bmm(p_q, p_m.mT, out=state.buffer("g", (N, hw, hw), qk.dtype, qk.device))  # type: ignore[union-attr]
                g = g.mul_(s)
            else:
                g = torch.bmm(p_q, p_m.mT)
                g = g.mul_(s) if inplace else g * s
            renorm = renormalize
        if gemm != qk.dtype:
            # svd="fast": aligned keys W_t M_t from a GEMM-dtype copy of W (in the buffer C is done
            # with), the row sums of W (the normalisation) in the input dtype by a reduction
            w_low = state.buffer("gemm", (N, hw, hw), gemm, qk.device).copy_(g) if reuse else g.to(gemm)  # type: ignore[union-attr]
            aligned = torch.bmm(w_low, m.mT.to(gemm)).to(qk.dtype)  # [N, hw_q, Ck]
            del w_low
            row_sums = g.sum(dim=-1)
        else:
            # W_t M_t with a ones column appended: its last column is the row sums of W (no extra pass)
            m_ones = torch.cat([m.mT, torch.ones(N, hw, 1, dtype=m.dtype, device=m.device)], dim=-1)
            aligned = torch.bmm(g, m_ones)  # [N, hw_q, Ck + 1]
            aligned, row_sums = aligned[..., :Ck], aligned[..., Ck]
        if renorm and mode == "tmrn":
            # W_i = C_i * S_i sums to zero only by underflow: a peaky S row (trained keys: perplexity ~1)
            # whose few nonzero entries meet C entries below the float range. The renormalised row then
            # is S_i itself in the limit (for a one-hot S_i exactly, whatever C is), so it takes S_i.
            dead = ~(row_sums > torch.finfo(row_sums.dtype).tiny)  # zero, subnormal (1 / sum overflows) or NaN
            if bool(dead.any()):
                g, aligned, row_sums = _revive_rows(g, s, m, aligned, row_sums, dead, inplace)
        inv_rows = 1.0 / row_sums if renorm else None  # [N, hw_q]
        aligned = aligned * inv_rows[..., None] if inv_rows is not None else aligned
        qs = q[0]
        temporal = (2.0 * (aligned * qs).sum(-1) - aligned.pow(2).sum(-1)) * scale  # [N, hw_q]
        weights = slot_softmax(temporal, mask)  # [O, N, hw_q]
        if inv_rows is not None:
            weights = weights * inv_rows[None]
        vals = mv[b] if every else mv[b][:, sel]
        if inplace and bool(mask.all()):
            # one set of weights for all objects: fold diag(a_t / r_t) into W_t, then accumulate
            # sum_t V_t W_t'^T in place: the big matmul of the module docstring, without a copy of V
            g = g.mul_(weights[0][..., None])
            out = torch.zeros(O * Cv, hw, dtype=g.dtype, device=g.device)
            for n in range(N):
                out.addmm_(vals[:, n].reshape(O * Cv, hw), g[n].T)
            out = out.view(O, Cv, hw)
        else:
            if not bool(mask.all()):  # slots invalid for an object may hold garbage (NaN) for that object
                vals = torch.where(mask[:, :, None, None, None], vals, 0)
            vals = vals.reshape(O, N, Cv, hw).transpose(0, 1).reshape(N, O * Cv, hw)
            y = torch.bmm(vals, g.mT).view(N, O, Cv, hw)  # aligned values per slot, all objects
            out = (y * weights.transpose(0, 1)[:, :, None, :]).sum(dim=0)  # [O, Cv, hw_q]
        outs.append(out.view(O, Cv, H, W))
    return torch.stack(outs)


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

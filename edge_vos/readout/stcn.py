"""STCN readout: one softmax of the negative squared distance over all pixels of all valid memory slots."""

from __future__ import annotations

import torch

from edge_vos.readout.common import check_inputs, needs_grad, sim_logits_flat, softmax_last
from edge_vos.readout.sparse import gather_sum, slot_topk


def stcn_readout(
    qk: torch.Tensor,
    mk: torch.Tensor,
    mv: torch.Tensor,
    valid: torch.Tensor,
    *,
    top_k: int | None = None,
) -> torch.Tensor:
    """qk [B,Ck,H,W], mk [B,T,Ck,H,W], mv [B,O,T,Cv,H,W], valid [B,T] or [B,O,T] bool -> [B,O,Cv,H,W].

    `top_k`: keep only the k largest logits per query pixel (official STCN uses 20), zero weight elsewhere.
    Invalid slots are never read, so they may hold garbage. Per-object validity only changes the mask
    of the softmax; the affinity is computed once for all objects.
    """
    B, O, T, Ck, Cv, H, W, valid = check_inputs(qk, mk, mv, valid)
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k must be positive or None, got {top_k}")
    hw = H * W
    inplace = not needs_grad(qk, mk, mv)
    outs = []
    for b in range(B):
        sel = valid[b].any(dim=0).nonzero().flatten()
        N = len(sel)
        mask = valid[b][:, sel]  # [O, N]
        shared = bool(mask.all())
        q = qk[b].reshape(Ck, hw).T  # [hw_q, Ck]
        every = N == T  # all slots: views instead of index copies
        m = (mk[b] if every else mk[b, sel]).reshape(N, Ck, hw)
        logits = sim_logits_flat(q, m).view(hw, N * hw)  # [hw_q, N*hw_m], float32 for half input
        vals = mv[b] if every else mv[b][:, sel]  # [O, N, Cv, H, W]
        if not shared:  # slots invalid for an object may hold garbage (NaN) for that object
            vals = torch.where(mask[:, :, None, None, None], vals, 0)
        vals = vals.reshape(O, N, Cv, hw)
        if top_k is not None:
            out = _topk_readout(logits.view(hw, N, hw), vals, mask, top_k)
        elif shared:
            p = softmax_last(logits, inplace).to(vals.dtype).view(hw, N, hw)
            # sum over slots of V_t P_t^T, accumulated in place: no [O, Cv, N*hw] copy of the values
            out = torch.zeros(O * Cv, hw, dtype=p.dtype, device=p.device)
            for n in range(N):
                out = out.addmm_(vals[:, n].reshape(O * Cv, hw), p[:, n].T) if inplace else out.addmm(
                    vals[:, n].reshape(O * Cv, hw), p[:, n].T
                )
            out = out.view(O, Cv, hw)
        else:
            out = _masked_readout(logits.view(hw, N, hw), vals, mask, inplace)
        outs.append(out.view(O, Cv, H, W))
    return torch.stack(outs)


def _masked_readout(logits: torch.Tensor, vals: torch.Tensor, mask: torch.Tensor, inplace: bool) -> torch.Tensor:
    """Per-object slot masks without per-object copies of the affinity.

    Each slot is exponentiated once against its own per-pixel max; an object's softmax over its valid
    slots is then a per-(object, slot, pixel) rescaling of the per-slot products V_t E_t^T.
    logits [hw_q, N, hw_m], vals [O, N, Cv, hw_m], mask [O, N] -> [O, Cv, hw_q].
    """
    O, N, Cv, hw_m = vals.shape
    slot_max = logits.amax(dim=-1)  # [hw_q, N]
    e = logits.sub_(slot_max[..., None]).exp_() if inplace else torch.exp(logits - slot_max[..., None])
    slot_sum = e.sum(dim=-1).T  # [N, hw_q]
    slot_max = slot_max.T  # [N, hw_q]
    obj_max = slot_max[None].masked_fill(~mask[:, :, None], float("-inf")).amax(dim=1, keepdim=True)
    scale = torch.exp(slot_max[None] - obj_max) * mask[:, :, None]  # [O, N, hw_q]
    weights = scale / (scale * slot_sum[None]).sum(dim=1, keepdim=True)
    y = torch.bmm(vals.permute(1, 0, 2, 3).reshape(N, O * Cv, hw_m), e.permute(1, 2, 0).to(vals.dtype))
    y = y.view(N, O, Cv, -1) * weights.transpose(0, 1)[:, :, None, :].to(vals.dtype)
    return y.sum(dim=0)


def _topk_readout(logits: torch.Tensor, vals: torch.Tensor, mask: torch.Tensor, top_k: int) -> torch.Tensor:
    """Sparse top-k readout: per-slot top-k once (the sparse TMRN's `slot_topk`), then per object a top-k
    among the valid candidates.

    The global top-k over the valid slots is contained in the union of the per-slot top-k, so the
    per-object selection runs on [hw_q, N*k] candidates instead of the full affinity, and the weighted
    sum is the sparse TMRN's value gather (`gather_sum`: k value rows per pixel) instead of a
    mostly-zero dense matmul.
    logits [hw_q, N, hw_m], vals [O, N, Cv, hw_m], mask [O, N] -> [O, Cv, hw_q].
    """
    O, N, Cv, hw_m = vals.shape
    hw_q = logits.shape[0]
    top_val, top_idx = slot_topk(logits, top_k)  # [hw_q, N, k_slot]
    k_slot = top_val.shape[-1]
    top_idx = top_idx + torch.arange(N, device=logits.device)[None, :, None] * hw_m
    cand = top_val[None].expand(O, -1, -1, -1)
    if not bool(mask.all()):
        cand = cand.masked_fill(~mask[:, None, :, None], float("-inf"))
    k = min(top_k, N * k_slot)
    best_val, best_pos = cand.reshape(O, hw_q, N * k_slot).topk(k, dim=-1)  # [O, hw_q, k]
    best_pos, order = best_pos.sort(dim=-1)  # candidates are in (slot, pixel) order: sorted columns
    weights = torch.softmax(best_val.gather(-1, order), dim=-1).to(vals.dtype)
    index = top_idx.reshape(1, hw_q, N * k_slot).expand(O, -1, -1).gather(-1, best_pos)  # [O, hw_q, k]
    rows = vals.permute(0, 1, 3, 2).reshape(O, N * hw_m, Cv)  # value rows, one per memory pixel
    return torch.stack([gather_sum(index[o], weights[o], rows[o]).T for o in range(O)])

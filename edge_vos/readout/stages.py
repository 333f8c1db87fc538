"""TMRN's stages that do not depend on how S is stored (dense [N, hw_q, hw_m] or top-k `SparseRows`):
the agents and their softmaxes, and the temporal weights."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from edge_vos.readout.common import logits_dtype, slot_softmax
from edge_vos.readout.sparse import SparseRows
from edge_vos.readout.state import SvdState, fingerprints
from edge_vos.readout.svd import top_singular

# Where the agents come from: "svd", the top-K singular subspace of S (the paper's method and the
# default); "pixels", the K memory pixels that receive the most affinity mass and the K query pixels
# with the strongest match (the paper's Table 3 "Top-K" row: a cheaper construction without an SVD).
AGENT_SOURCES = ("svd", "pixels")


@dataclass
class Agents:
    """The 2K agent keys of every slot [N, 2K, Ck], and their P_M [N, hw_m, 2K] where already known."""

    keys: torch.Tensor
    p_m: torch.Tensor | None = None


def agent_keys(
    s: torch.Tensor | SparseRows,
    q: torch.Tensor,
    m: torch.Tensor,
    agents: int,
    *,
    svd: str,
    source: str,
    state: SvdState | None,
    batch: int,
    slots: list[int],
    every: int = 1,
) -> Agents:
    """The 2K agent keys of every slot: q [hw_q, Ck], m [N, Ck, hw_m], S [N, hw_q, hw_m] -> [N, 2K, Ck].

    "svd": A = [U^T Q ; V^T M_t] with U, V the top-K singular vectors of S (no gradient through them).
    "pixels": A = [Q_i for the K query pixels with the largest max_j S_ij ; M_j for the K memory pixels
    with the largest column sums of S] (no gradient through the choice).
    `every` > 1 (svd="fast" with a `state`): a slot's agents are recomputed on one frame in `every`, the
    slots' turns staggered so each frame refreshes about N / every of them; the others keep their last
    agents (a slot without any, or overwritten, is computed at once).
    """
    N, hw_q, hw_m = s.shape
    k = min(agents, hw_q, hw_m)
    if source == "svd":
        if every > 1 and state is not None and svd == "fast":
            return _staggered_svd_keys(s, q, m, k, state, batch, slots, every)
        u, v = top_singular(s, k, svd, keys=m, state=state, batch=batch, slots=slots)
        return Agents(_svd_keys(u, v, q, m))
    with torch.no_grad():
        if isinstance(s, SparseRows):
            strength, mass = s.value.amax(dim=-1), s.column_sums()  # [N, hw_q], [N, hw_m]
        else:
            strength, mass = s.amax(dim=-1), s.sum(dim=1)
        rows = strength.float().topk(k, dim=-1).indices  # [N, K]
        cols = mass.float().topk(k, dim=-1).indices
    return Agents(torch.cat([q[rows], torch.gather(m, 2, cols[:, None, :].expand(-1, m.shape[1], -1)).mT], dim=1))


def _svd_keys(u: torch.Tensor, v: torch.Tensor, q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.cat([u.to(q.dtype).mT @ q, v.to(m.dtype).mT @ m.mT], dim=1)


def _staggered_svd_keys(
    s: torch.Tensor | SparseRows, q: torch.Tensor, m: torch.Tensor, k: int, state: SvdState, batch: int,
    slots: list[int], every: int,
) -> Agents:
    """agent_keys with svd="fast" when each slot refreshes its agents on one frame in `every`; the kept
    slots' P_M comes back with them (same keys, same memory: the same P_M)."""
    frame = state.next_frame(batch)
    prints = fingerprints(m)
    shape = (2 * k, m.shape[1], m.shape[2])
    kept = [state.agents(batch, t, prints[n], shape) for n, t in enumerate(slots)]
    todo = [n for n, t in enumerate(slots) if kept[n] is None or (frame + t) % every == 0]
    if todo:
        idx = torch.tensor(todo, device=m.device)
        sub = s.select(idx) if isinstance(s, SparseRows) else s[idx]
        u, v = top_singular(sub, k, "fast", keys=m[idx], state=state, batch=batch, slots=[slots[n] for n in todo],
                            prints=prints[idx])
        keys = _svd_keys(u, v, q, m[idx])
        p_m = memory_probs(m[idx], keys)
        for j, n in enumerate(todo):
            kept[n] = (keys[j], p_m[j])
            state.put_agents(batch, slots[n], prints[n], keys[j], p_m[j])
    return Agents(torch.stack([x[0] for x in kept]), torch.stack([x[1] for x in kept]))  # type: ignore[index]


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


def temporal_weights(q: torch.Tensor, aligned: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per query pixel, softmax over the slots of sim(Q_i, K_t,i), per object (only the mask differs).

    q [hw_q, Ck], aligned keys [N, hw_q, Ck], mask [O, N] -> [O, N, hw_q].
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    out, dtype = q.dtype, logits_dtype(q.dtype)  # float32 for half input (see logits_dtype)
    aligned, q = aligned.to(dtype), q.to(dtype)
    logits = (2.0 * (aligned * q).sum(-1) - aligned.pow(2).sum(-1)) * scale  # [N, hw_q]
    return slot_softmax(logits, mask).to(out)


def dead_rows(row_sums: torch.Tensor) -> torch.Tensor:
    """Rows of W = C * S whose sum underflowed (zero, subnormal so that 1 / sum overflows, or NaN).

    W_i sums to zero only by underflow: a peaky S row (trained keys: perplexity ~1) whose few nonzero
    entries meet C entries below the float range. The renormalised row then is S_i itself in the limit
    (for a one-hot S_i exactly, whatever C is), so such rows take S_i.
    """
    return ~(row_sums > torch.finfo(row_sums.dtype).tiny)

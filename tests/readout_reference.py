"""The TMRN readout's reference paths and ablations: test and benchmark code, not options of the product.

- `reference_tmrn(..., slot_top_k=None)`: the dense exact reference, every hw x hw matrix of every slot;
- `reference_tmrn(..., slot_top_k=k)`: the shipped sparse readout (edge_vos/readout/tmrn.py) with one stage
  swapped where an ablation asks for it (`AblatedTmrn`);
and the options both take: `svd` "exact" (full SVD), "lowrank" (seeded randomized SVD) or "fast" (the
shipped warm-started iteration); `agent_source` "svd" or "pixels" (the paper's Table 3 "Top-K" row: the K
query pixels with the strongest match and the K memory pixels receiving most affinity mass, no SVD);
`mode` "tmrn" or "st" (W = S, no agents); `renormalize` False (the paper's eq. 13 to the letter).
tools/bench_readout.py measures the same paths on a trained network.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from edge_vos.readout.common import check_inputs, needs_grad, sim_logits, softmax_last
from edge_vos.readout.config import TmrnOptions
from edge_vos.readout.sparse import SparseRows
from edge_vos.readout.stages import Agents, agent_probs, dead_rows, svd_keys, temporal_weights
from edge_vos.readout.state import TmrnState
from edge_vos.readout.svd import DenseRows, fix_signs, lapack_threads, orth, range_right, ritz, svd_fast
from edge_vos.readout.tmrn import TmrnReadout

log = logging.getLogger(__name__)

SVD_KINDS = ("exact", "lowrank", "fast")
AGENT_SOURCES = ("svd", "pixels")
MODES = ("tmrn", "st")
LOWRANK_OVERSAMPLE = 8
LOWRANK_ITERS = 2
LOWRANK_SEED = 0
DENSE_FAST_OVERSAMPLE = 8  # extra subspace columns on a dense S: the tail of its top-K spectrum is nearly degenerate
DENSE_FAST_MAX_EXTRA_ITERS = 1  # extra iterations per frame where the residual exceeds svd.FAST_TOL


def reference_tmrn(
    qk: torch.Tensor, mk: torch.Tensor, mv: torch.Tensor, valid: torch.Tensor, *, agents: int = 128,
    mode: str = "tmrn", svd: str = "exact", renormalize: bool = True, state: TmrnState | None = None,
    slot_top_k: int | None = None, agent_source: str = "svd", agents_every: int = 1,
) -> torch.Tensor:
    """qk [B,Ck,H,W], mk [B,T,Ck,H,W], mv [B,O,T,Cv,H,W], valid [B,T] or [B,O,T] bool -> [B,O,Cv,H,W].
    `slot_top_k` None: dense; k: the sparse readout keeping k entries per row and slot. `state`: a stream's
    TmrnState kept between calls (svd "fast"), None: a fresh one."""
    for name, value, allowed in (("mode", mode, MODES), ("svd", svd, SVD_KINDS),
                                 ("agent_source", agent_source, AGENT_SOURCES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if slot_top_k is not None:
        readout = AblatedTmrn(TmrnOptions(agents=agents, slot_top_k=slot_top_k, agents_every=agents_every), svd=svd,
                              mode=mode, renormalize=renormalize, agent_source=agent_source)
        if state is not None:
            readout.state = state
        return readout(qk, mk, mv, valid)
    B, O, T, Ck, Cv, H, W, valid = check_inputs(qk, mk, mv, valid)
    hw = H * W
    inplace = not needs_grad(qk, mk, mv)
    outs = []
    for b in range(B):
        sel = valid[b].any(dim=0).nonzero().flatten()
        q = qk[b].reshape(Ck, hw).T
        m = mk[b, sel].reshape(len(sel), Ck, hw)
        vals = mv[b][:, sel].reshape(O, len(sel), Cv, hw)
        out = _dense(q, m, vals, valid[b][:, sel], agents, mode, svd, renormalize, agent_source, state, b,
                     sel.tolist(), inplace)
        outs.append(out.view(O, Cv, H, W))
    return torch.stack(outs)


class AblatedTmrn(TmrnReadout):
    """The shipped sparse readout with its agents (`svd`, `agent_source`) or its rectification (`mode`,
    `renormalize`) swapped for a reference or an ablation."""

    def __init__(self, options: TmrnOptions, *, svd: str = "fast", mode: str = "tmrn", renormalize: bool = True,
                 agent_source: str = "svd") -> None:
        super().__init__(options)
        self.svd, self.mode, self.renormalize, self.agent_source = svd, mode, renormalize, agent_source

    def find_agents(self, s: SparseRows, q: torch.Tensor, m: torch.Tensor, batch: int, slots: list[int]) -> Agents:
        if self.mode == "st":
            return Agents(torch.empty(0))  # unused: W = S
        if self.agent_source == "pixels" or self.svd != "fast":
            return reference_agents(s, q, m, self.agents, self.svd, self.agent_source, self.state, batch, slots)
        return super().find_agents(s, q, m, batch, slots)

    def rectify(self, s: SparseRows, q: torch.Tensor, m: torch.Tensor, agents: Agents) -> torch.Tensor:
        if self.mode == "st":
            return s.value  # rows already sum to one
        if self.renormalize:
            return super().rectify(s, q, m, agents)
        p_q, p_m = agent_probs(q, m, agents.keys, agents.p_m)
        return s.sample(p_q, p_m) * s.value


class DenseTmrn:
    """The dense reference as a stream's readout (a `Readout`): svd "fast", warm-started from its own state."""

    def __init__(self, agents: int) -> None:
        self.agents = agents
        self.state = TmrnState()

    def __call__(
        self, qk: torch.Tensor, mk: torch.Tensor, mv: torch.Tensor, valid: torch.Tensor,
        slot_versions: Sequence[int] | None = None,
    ) -> torch.Tensor:
        if slot_versions is not None:
            self.state.sync_versions(slot_versions)
        return reference_tmrn(qk, mk, mv, valid, agents=self.agents, svd="fast", state=self.state)

    def reset(self) -> None:
        self.state.clear()


def reference_agents(
    s: torch.Tensor | SparseRows, q: torch.Tensor, m: torch.Tensor, agents: int, svd: str, source: str,
    state: TmrnState | None, batch: int, slots: list[int],
) -> Agents:
    """The 2K agent keys of every slot [N, 2K, Ck] from a dense or sparse S, by any SVD kind or from pixels."""
    N, hw_q, hw_m = s.shape
    k = min(agents, hw_q, hw_m)
    with torch.no_grad():
        if source == "pixels":
            if isinstance(s, SparseRows):
                strength, mass = s.value.amax(dim=-1), s.column_sums()  # [N, hw_q], [N, hw_m]
            else:
                strength, mass = s.amax(dim=-1), s.sum(dim=1)
            rows = strength.float().topk(k, dim=-1).indices  # [N, K]
            cols = mass.float().topk(k, dim=-1).indices
            picked = torch.gather(m, 2, cols[:, None, :].expand(-1, m.shape[1], -1)).mT
        else:
            u, v = reference_singular(s, k, svd, keys=m, state=state, batch=batch, slots=slots)
    if source == "pixels":
        return Agents(torch.cat([q[rows], picked], dim=1))
    return Agents(svd_keys(u, v, q, m))


def reference_singular(
    s: torch.Tensor | SparseRows, k: int, kind: str, *, keys: torch.Tensor, state: TmrnState | None, batch: int,
    slots: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k singular vectors of each S, sign-fixed, in float32 (float64 for float64 keys), no gradient."""
    work = torch.float64 if keys.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        dense = (s.to_dense() if isinstance(s, SparseRows) else s).detach().to(work)
        if kind == "exact":
            u, v = svd_exact(dense, k)
        elif kind == "lowrank":
            u, v = svd_lowrank(dense, k)
        else:
            u, v = svd_fast(DenseRows(dense), k, keys, state, batch, slots, DENSE_FAST_MAX_EXTRA_ITERS,
                            DENSE_FAST_OVERSAMPLE)
        return fix_signs(u, v)


def svd_exact(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Full SVD, top k: s [N, hw_q, hw_m] -> U [N, hw_q, k], V [N, hw_m, k]. gesdd fails to converge on some
    affinities with hundreds of equal singular values (one-hot rows from trained keys): then slot by slot,
    in float64, else by eigh of S^T S (any basis of such a degenerate subspace is equally exact)."""
    with lapack_threads(s.device):
        try:
            u, _, vh = torch.linalg.svd(s, full_matrices=False)
            return u[..., :k], vh[..., :k, :].mT
        except torch.linalg.LinAlgError:
            pass
    us, vs = [], []
    for x in s:
        for attempt in (x, x.double()):
            try:
                u, _, vh = torch.linalg.svd(attempt, full_matrices=False)
                break
            except torch.linalg.LinAlgError:
                continue
        else:
            evals, evecs = torch.linalg.eigh(x.double().T @ x.double())
            v = evecs.flip(-1)
            sigma = evals.flip(-1).clamp_min(torch.finfo(torch.float64).tiny).sqrt()
            u, vh = (x.double() @ v) / sigma, v.T
            log.warning("exact svd: gesdd failed twice on a %s slot, used eigh(S^T S)", tuple(x.shape))
        us.append(u[:, :k].to(s.dtype))
        vs.append(vh[:k].T.to(s.dtype))
    return torch.stack(us), torch.stack(vs)


def svd_lowrank(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomized SVD (Halko et al.) from a seeded local generator: reproducible, no global RNG."""
    N, _, hw_m = s.shape
    p = min(k + LOWRANK_OVERSAMPLE, min(s.shape[-2:]))
    gen = torch.Generator(device=s.device).manual_seed(LOWRANK_SEED)
    omega = torch.randn(N, hw_m, p, generator=gen, device=s.device, dtype=s.dtype)
    op = DenseRows(s)
    u, v, _ = ritz(op, range_right(op, orth(omega), LOWRANK_ITERS))
    return u[..., :k], v[..., :k]


def _dense(
    q: torch.Tensor, m: torch.Tensor, vals: torch.Tensor, mask: torch.Tensor, agents: int, mode: str, svd: str,
    renormalize: bool, agent_source: str, state: TmrnState | None, batch: int, slots: list[int], inplace: bool,
) -> torch.Tensor:
    """The dense reference for one batch element: q [hw_q, Ck], m [N, Ck, hw_m], vals [O, N, Cv, hw_m],
    mask [O, N] -> [O, Cv, hw_q]."""
    N, _, hw_m = m.shape
    s = softmax_last(sim_logits(q.expand(N, -1, -1), m), inplace).to(q.dtype)  # S [N, hw_q, hw_m]
    if mode == "st":
        w, aligned, row_sums = s, torch.bmm(s, m.mT), None
    else:
        chosen = reference_agents(s, q, m, agents, svd, agent_source, state, batch, slots)
        w, aligned, row_sums = _alignment(s, q, m, chosen)
        if not renormalize:
            row_sums = None
    inv_rows = 1.0 / row_sums if row_sums is not None else None  # [N, hw_q]
    if inv_rows is not None:
        aligned = aligned * inv_rows[..., None]
    weights = temporal_weights(q, aligned, mask)  # [O, N, hw_q]
    if inv_rows is not None:
        weights = weights * inv_rows[None]
    if not bool(mask.all()):  # slots invalid for an object may hold garbage (NaN) for that object
        vals = torch.where(mask[:, :, None, None], vals, 0)
    O, _, Cv, _ = vals.shape
    y = torch.bmm(vals.transpose(0, 1).reshape(N, O * Cv, hw_m), w.mT).view(N, O, Cv, -1)
    return (y * weights.transpose(0, 1)[:, :, None, :]).sum(dim=0)


def _alignment(
    s: torch.Tensor, q: torch.Tensor, m: torch.Tensor, agents: Agents
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W = (P_Q P_M^T) * S, its aligned keys W M_t and row sums; rows that underflowed take S's row."""
    N, hw_q, hw_m = s.shape
    p_q, p_m = agent_probs(q, m, agents.keys, agents.p_m)
    w = torch.bmm(p_q, p_m.mT) * s
    m_ones = torch.cat([m.mT, torch.ones(N, hw_m, 1, dtype=m.dtype, device=m.device)], dim=-1)
    aligned = torch.bmm(w, m_ones)  # [N, hw_q, Ck + 1]
    aligned, row_sums = aligned[..., :-1], aligned[..., -1]
    dead = dead_rows(row_sums)
    if bool(dead.any()):
        mask = dead[..., None]
        w = torch.where(mask, s.to(w.dtype), w)
        aligned = torch.where(mask, torch.bmm(s.to(m.dtype), m.mT).to(aligned.dtype), aligned)
        row_sums = torch.where(dead, s.sum(dim=-1).to(row_sums.dtype), row_sums)
    return w, aligned, row_sums


__all__ = ["AGENT_SOURCES", "MODES", "SVD_KINDS", "AblatedTmrn", "DenseTmrn", "reference_tmrn"]

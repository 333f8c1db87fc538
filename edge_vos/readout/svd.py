"""Top-K singular vectors of the per-slot affinity S by a warm-started subspace iteration.

Only the agents A = [U^T Q ; V^T M] depend on the SVD and they carry no gradient, so everything here
runs under no_grad in float32 (float64 for float64 input): QR/eigh have no half kernels, and half
input (CUDA fp16) gets its subspace step in float32. The iteration only multiplies by S and S^T (a
`RowOperator`): on the readout's `SparseRows` (the top-k entries of each row) that costs hw*k*K per
product instead of hw^2*K. The exact and randomized SVDs, and the iteration on a dense S, are the
reference's (tests/readout_reference.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch

from edge_vos.readout.sparse import SparseRows
from edge_vos.readout.state import TmrnState, fingerprints

log = logging.getLogger(__name__)

COLD_SEED = 0  # seed of the random start of a slot without a warm start (reproducible, no global RNG)
FAST_COLD_ITERS = 2  # power iterations from a random start when there is no state for a slot
LAPACK_THREADS = 1
CHOLESKY_RIDGE = 1e-5
FAST_TOL = 0.1  # relative residual ||S^T U - V diag(sigma)|| / ||sigma|| that triggers an extra iteration
# The readout's sparse S gets no extra iteration: its affinities come from trained keys, whose spectrum is
# degenerate (hundreds of singular values equal to one), so the residual stays above FAST_TOL on every slot
# of every frame and the extra iteration would always run, a second Ritz step per frame that does not bring
# the output closer to exact (docs/readout.md). Nor extra columns: its cost there is the p x p work (eigh,
# Gram matrices), not S. The dense reference uses both (tests/readout_reference.py).
SPARSE_MAX_EXTRA_ITERS = 0
SPARSE_OVERSAMPLE = 0


class RowOperator(Protocol):
    """What the warm-started iteration needs of S [N, hw_q, hw_m]: products with S and S^T, a subset
    of slots. `SparseRows` keeps the top-k entries per row; a dense tensor is wrapped by `DenseRows`."""

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def mm(self, z: torch.Tensor) -> torch.Tensor: ...

    def tmm(self, u: torch.Tensor) -> torch.Tensor: ...

    def select(self, slots: torch.Tensor) -> RowOperator: ...


class DenseRows:
    """A dense S [N, hw_q, hw_m] as a RowOperator (bmm)."""

    def __init__(self, s: torch.Tensor) -> None:
        self.s = s

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.s.shape)  # type: ignore[return-value]

    def mm(self, z: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.s, z)

    def tmm(self, u: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.s.mT, u)

    def select(self, slots: torch.Tensor) -> DenseRows:
        return DenseRows(self.s[slots])


@contextmanager
def lapack_threads(device: torch.device, threads: int = LAPACK_THREADS) -> Iterator[None]:
    """Runs the small LAPACK calls (eigh, qr, svd) with `threads` intra-op threads on CPU.

    Measured on the 2-core development machines: MKL's threaded QR/eigh/SVD are 5-50x slower with two
    threads than with one as soon as the cores are shared (spinning OpenMP workers), and one thread
    loses little when they are not. torch exposes no per-call thread count, so this sets the process-wide
    count for the duration of the call and restores it (other Python threads running torch ops in
    parallel would briefly see it too).
    """
    previous = torch.get_num_threads()
    if device.type != "cpu" or previous <= threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fix_signs(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips each singular pair so the column of U has a non-negative sum (the documented convention)."""
    sign = torch.where(u.sum(dim=-2, keepdim=True) < 0, -1.0, 1.0).to(u.dtype)
    return u * sign, v * sign



def orth(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the columns of x [N, n, p] (Householder QR)."""
    with lapack_threads(x.device):
        return torch.linalg.qr(x).Q


def ritz(s: RowOperator, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rayleigh-Ritz on an orthonormal right subspace: best triplets of S within span(basis), descending.

    Y = S basis, eig(Y^T Y) = W diag(sigma^2) W^T -> V = basis W, U = Y W / sigma.
    """
    y = s.mm(basis)
    gram = torch.bmm(y.mT, y)
    evals, evecs = _eigh_robust(gram)
    evals, evecs = evals.flip(-1), evecs.flip(-1)
    sigma = evals.clamp_min(torch.finfo(evals.dtype).tiny).sqrt()
    return torch.bmm(y, evecs) / sigma[:, None, :], torch.bmm(basis, evecs), sigma


def _eigh_robust(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """eigh that does not raise: syevd can fail to converge on the nearly degenerate Gram matrices of
    trained keys (seen once in training); a stream must not die of it. Retries in float64, then with a
    diagonal shift of 1e-10 x trace (changes eigenvalues by that much, eigenvectors not at all)."""
    with lapack_threads(gram.device):
        try:
            return torch.linalg.eigh(gram)
        except torch.linalg.LinAlgError:
            log.warning("eigh failed on a %s Gram matrix; retrying in float64", tuple(gram.shape))
        g64 = gram.double()
        try:
            evals, evecs = torch.linalg.eigh(g64)
        except torch.linalg.LinAlgError:
            eye = torch.eye(g64.shape[-1], dtype=g64.dtype, device=g64.device)
            shift = 1e-10 * g64.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-30)
            evals, evecs = torch.linalg.eigh(g64 + shift[..., None, None] * eye)
            evals = evals - shift[..., None]
    return evals.to(gram.dtype), evecs.to(gram.dtype)


def range_right(s: RowOperator, basis: torch.Tensor, iters: int) -> torch.Tensor:
    """`iters` orthonormalised power steps on S^T S starting from `basis` [N, hw_m, p]."""
    for _ in range(iters):
        left = orth(s.mm(basis))
        basis = orth(s.tmm(left))
    return basis



def _orth_near(z: torch.Tensor) -> torch.Tensor:
    """Orthonormalises a nearly orthonormal basis z [N, n, p] by Cholesky QR (two small p x p steps).

    The stored warm-start bases are S^T U / sigma, orthonormal up to the subspace error, so their Gram
    matrix is well conditioned and Cholesky QR is exact enough in float32, at a fraction of a
    Householder QR. Falls back to Householder where Cholesky fails (rank-deficient S).
    """
    gram = torch.bmm(z.mT, z)
    # a small ridge keeps Cholesky alive when S is numerically rank-deficient (near-uniform affinities):
    # the directions it touches carry singular values at float32 noise level, which the output ignores
    diag = gram.diagonal(dim1=-2, dim2=-1)
    diag.add_(CHOLESKY_RIDGE * diag.mean(dim=-1, keepdim=True))
    with lapack_threads(z.device):
        chol, info = torch.linalg.cholesky_ex(gram)
        if bool((info != 0).any()):
            return torch.linalg.qr(z).Q
        # z L^-T through the small explicit inverse: one GEMM, 2-3x faster than a triangular solve
        # against the hw x p right-hand side
        eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device).expand_as(chol)
        inv = torch.linalg.solve_triangular(chol, eye, upper=False)
    return torch.bmm(z, inv.mT)


def svd_fast(
    s: RowOperator, k: int, keys: torch.Tensor, state: TmrnState | None, batch: int, slots: list[int],
    max_extra: int, oversample: int, prints: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One block power iteration per frame, warm-started from last frame's subspace of the same slot.

    s: S of the N slots (dense or sparse, in the work dtype: float32, or float64), keys [N, ...] the
    slots' memory keys (for the state's fingerprints; `prints`: those fingerprints when the caller has
    them already), slots: the original slot index of each of the N.
    Per slot and frame: Rayleigh-Ritz of S on the stored right subspace (one product with K + `oversample`
    columns, a (K + oversample)^2 eigh), then one power step S^T U / sigma (a second product) stored as next
    frame's start, so the subspace follows the query. Slots without a usable entry start from a seeded
    random subspace with FAST_COLD_ITERS iterations; a slot whose residual exceeds FAST_TOL gets up to
    `max_extra` more iterations this frame.
    """
    N, hw_q, hw_m = s.shape
    dtype = keys.dtype if keys.dtype == torch.float64 else torch.float32
    device = keys.device
    p = min(k + oversample, hw_q, hw_m)
    prints = fingerprints(keys) if prints is None else prints
    bases: list[torch.Tensor | None] = [
        state.get(batch, t, prints[n], (hw_m, p)) if state is not None else None for n, t in enumerate(slots)
    ]
    cold = [n for n, x in enumerate(bases) if x is None]
    if cold:
        start = torch.empty(N, hw_m, p, dtype=dtype, device=device)
        for n, x in enumerate(bases):
            if x is not None:
                start[n] = x
        if len(cold) < N:
            warm = torch.tensor([n for n in range(N) if n not in cold], device=device)
            start[warm] = _orth_near(start[warm])
        gen = torch.Generator(device=device).manual_seed(COLD_SEED)
        omega = torch.randn(len(cold), hw_m, p, generator=gen, device=device, dtype=dtype)
        idx = torch.tensor(cold, device=device)
        start[idx] = range_right(s.select(idx), orth(omega), FAST_COLD_ITERS)
    else:
        start = _orth_near(torch.stack(bases))  # type: ignore[arg-type]
    u, v, sigma = ritz(s, start)
    # power step: S^T u_k / sigma_k = v_k for an exact triplet, so its distance to v measures staleness
    nxt = s.tmm(u) / sigma[:, None, :]
    todo = torch.arange(N, device=device)
    for extra in range(max_extra):
        sig = sigma[todo, None, :k]
        resid = ((nxt[todo, :, :k] - v[todo, :, :k]) * sig).norm(dim=(1, 2)) / sig.norm(dim=(1, 2))
        todo = todo[resid > FAST_TOL]
        if len(todo) == 0:
            break
        log.debug("fast svd: extra iteration %d for slots %s", extra + 1, todo.tolist())
        sub = s.select(todo)
        u[todo], v[todo], sigma[todo] = ritz(sub, _orth_near(nxt[todo]))
        nxt[todo] = sub.tmm(u[todo]) / sigma[todo][:, None, :]
    if state is not None:
        nxt = nxt / nxt.norm(dim=1, keepdim=True).clamp_min(torch.finfo(nxt.dtype).tiny)  # unit columns
        for n, t in enumerate(slots):
            state.put(batch, t, prints[n], nxt[n])
    return u[..., :k], v[..., :k]


def top_singular(
    s: SparseRows, k: int, *, keys: torch.Tensor, state: TmrnState | None, batch: int, slots: list[int],
    prints: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k singular vectors of each slot's sparse S [N, hw_q, hw_m], sign-fixed, without gradient, in
    float32 (float64 for float64 keys): the caller casts them to its dtype. `prints`: the slots' key
    fingerprints when the caller computed them already."""
    work = torch.float64 if keys.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        u, v = svd_fast(s.detach().to(work), k, keys, state, batch, slots, SPARSE_MAX_EXTRA_ITERS,
                        SPARSE_OVERSAMPLE, prints)
        return fix_signs(u, v)

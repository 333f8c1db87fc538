"""Top-K singular triplets of the per-slot affinity S (exact, randomized, warm-started) and their state.

Only the agents A = [U^T Q ; V^T M] depend on the SVD and they carry no gradient, so everything here
runs under no_grad in float32 (float64 for float64 input): CPU SVD/QR/eigh have no half kernels.
The exception are the two big products of svd="fast" (S Z and S^T U, hw x hw x (K + 8) per slot),
which run in the fast variant's GEMM dtype (`fast_gemm_dtype`: bfloat16 on CPUs with bf16 GEMM
kernels); the bases, the Gram matrices, eigh and Cholesky stay in float32.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

SVD_KINDS = ("exact", "lowrank", "fast")
LOWRANK_OVERSAMPLE = 8
LOWRANK_ITERS = 2
LOWRANK_SEED = 0
FAST_OVERSAMPLE = 8  # extra subspace columns: the tail of the top-K spectrum is nearly degenerate
FAST_COLD_ITERS = 2  # power iterations from a random start when there is no state for a slot
LAPACK_THREADS = 1
CHOLESKY_RIDGE = 1e-5
FAST_TOL = 0.1  # relative residual ||S^T U - V diag(sigma)|| / ||sigma|| that triggers an extra iteration
FAST_MAX_EXTRA_ITERS = 1  # cap on those extra iterations per frame (scene cuts, big motion)
# svd="fast" only: dtype of its big GEMMs for float32 input, per device type (missing: float32). They
# are the agent correlation C = P_Q P_M^T, the aligned keys W M_t (tmrn.py) and S Z, S^T U of the power
# iteration (here); softmaxes, row sums of W (the normalisation), eigh/Cholesky, the bases and the
# output accumulation stay float32. bf16 GEMMs (float32 accumulation inside, bf16 result) ran 2.5-2.8x
# faster than float32 on the development CPUs (AVX512-bf16, no AMX) at an output error of ~0.07% on
# the 480p benchmark keys (docs/readout.md). On CPU only where oneDNN reports bf16 support.
FAST_GEMM_DTYPES: dict[str, torch.dtype] = {"cpu": torch.bfloat16}


def fast_gemm_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """dtype of svd="fast"'s big products for operands of `dtype` on `device` (see FAST_GEMM_DTYPES).

    Only float32 is lowered: float64 stays (reference precision), half/bf16 input already is half.
    On CPU only when oneDNN reports bf16 support: elsewhere a bf16 GEMM is slower than float32.
    """
    low = FAST_GEMM_DTYPES.get(device.type)
    if dtype != torch.float32 or low is None or low == dtype:
        return dtype
    if device.type == "cpu" and low == torch.bfloat16 and not _cpu_bf16_gemm():
        return dtype
    return low


def _cpu_bf16_gemm() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class _SlotEntry:
    fingerprint: torch.Tensor  # float64 [2]: sum and sum of squares of the slot's memory keys
    basis: torch.Tensor  # [hw_m, K + oversample] S^T U / sigma with unit columns: next frame's start


@dataclass
class SvdState:
    """Warm start for svd="fast" (per batch element and slot, last frame's right singular subspace after
    one power step) and the scratch buffers of the no-grad readout.

    Memory keys of a slot do not change between frames and the query moves little, so last frame's
    right singular vectors are a good start. The tracker keeps one state per stream and calls
    `invalidate(slot)` when it overwrites a slot (or `sync_versions(versions)` once per frame). As a
    safety net each entry also stores a fingerprint of the slot's keys and is dropped when they change.
    A stale or missing entry only costs speed (a cold start), never correctness of the output shape.
    """

    _slots: dict[tuple[int, int], _SlotEntry] = field(default_factory=dict)
    _versions: dict[tuple[int, int], int] = field(default_factory=dict)
    _buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    def buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Scratch tensor reused from frame to frame (the [T, hw, hw] affinities; no grad use).

        Allocating them anew costs page faults on every call, which on the development machines is
        as slow as the softmax over them. Grows to the largest size asked for, then stays.
        """
        numel = 1
        for n in shape:
            numel *= n
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device:
            buf = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[name] = buf
        return buf[:numel].view(shape)

    def invalidate(self, slot: int | None = None, batch: int | None = None) -> None:
        """Forgets one slot (all batch elements unless `batch`), or everything when slot is None."""
        for key in list(self._slots):
            if (slot is None or key[1] == slot) and (batch is None or key[0] == batch):
                del self._slots[key]

    def sync_versions(self, versions: Iterable[int], batch: int = 0) -> None:
        """Invalidates the slots whose version number changed since the last call (MemoryView.slot_versions)."""
        for slot, version in enumerate(versions):
            key = (batch, slot)
            if self._versions.get(key) != version:
                self._slots.pop(key, None)
                self._versions[key] = version

    def clear(self) -> None:
        """Forgets every slot and releases the scratch buffers."""
        self._slots.clear()
        self._versions.clear()
        self._buffers.clear()

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, batch: int, slot: int, fingerprint: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor | None:
        entry = self._slots.get((batch, slot))
        if entry is None or entry.basis.shape != shape or not torch.equal(entry.fingerprint, fingerprint):
            self.misses += 1
            return None
        self.hits += 1
        return entry.basis

    def put(self, batch: int, slot: int, fingerprint: torch.Tensor, basis: torch.Tensor) -> None:
        self._slots[(batch, slot)] = _SlotEntry(fingerprint, basis)


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


def fingerprints(keys: torch.Tensor) -> torch.Tensor:
    """keys [N, ...] -> float64 [N, 2] (sum, sum of squares): changes when a slot is overwritten."""
    x = keys.detach().reshape(keys.shape[0], -1).double()
    return torch.stack([x.sum(dim=1), x.pow(2).sum(dim=1)], dim=1)


def fix_signs(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips each singular pair so the column of U has a non-negative sum (the documented convention)."""
    sign = torch.where(u.sum(dim=-2, keepdim=True) < 0, -1.0, 1.0).to(u.dtype)
    return u * sign, v * sign


def svd_exact(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Full SVD, top k: s [N, hw_q, hw_m] -> U [N, hw_q, k], V [N, hw_m, k]."""
    with lapack_threads(s.device):
        try:
            u, _, vh = torch.linalg.svd(s, full_matrices=False)
        except torch.linalg.LinAlgError:  # rare: gesdd fails on many repeated singular values
            return _svd_exact_fallback(s, k)
    return u[..., :k], vh[..., :k, :].mT


def _svd_exact_fallback(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot by slot: SVD, else SVD in float64, else eigh of S^T S (always converges; U = S V / sigma).

    gesdd fails to converge on some affinities with hundreds of equal singular values (one-hot rows
    from trained keys: measured at 480p); any basis of such a degenerate subspace is equally exact.
    """
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


def _orth(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the columns of x [N, n, p] (Householder QR)."""
    with lapack_threads(x.device):
        return torch.linalg.qr(x).Q


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b in a's dtype (the GEMM dtype), result in b's dtype (the work dtype); no casts when equal."""
    return torch.bmm(a, b.to(a.dtype)).to(b.dtype)


def _ritz(s: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rayleigh-Ritz on an orthonormal right subspace: best triplets of S within span(basis), descending.

    Y = S basis, eig(Y^T Y) = W diag(sigma^2) W^T -> V = basis W, U = Y W / sigma. S may be in a lower
    GEMM dtype than the basis; everything but the product S basis runs in the basis' dtype.
    """
    y = _bmm(s, basis)
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


def _range_right(s: torch.Tensor, basis: torch.Tensor, iters: int) -> torch.Tensor:
    """`iters` orthonormalised power steps on S^T S starting from `basis` [N, hw_m, p]."""
    for _ in range(iters):
        left = _orth(_bmm(s, basis))
        basis = _orth(_bmm(s.mT, left))
    return basis


def svd_lowrank(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomized SVD (Halko et al.) from a seeded local generator: reproducible, no global RNG."""
    N, _, hw_m = s.shape
    p = min(k + LOWRANK_OVERSAMPLE, min(s.shape[-2:]))
    gen = torch.Generator(device=s.device).manual_seed(LOWRANK_SEED)
    omega = torch.randn(N, hw_m, p, generator=gen, device=s.device, dtype=s.dtype)
    basis = _range_right(s, _orth(omega), LOWRANK_ITERS)
    u, v, _ = _ritz(s, basis)
    return u[..., :k], v[..., :k]


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
    s: torch.Tensor,
    k: int,
    keys: torch.Tensor,
    state: SvdState | None,
    batch: int,
    slots: list[int],
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One block power iteration per frame, warm-started from last frame's subspace of the same slot.

    s [N, hw_q, hw_m] in the GEMM dtype (only S Z and S^T U touch it), `dtype` the work dtype of
    everything else (bases, Gram matrices, eigh; default: s's dtype), keys [N, ...] the slots' memory
    keys (for the state's fingerprints), slots: the original slot index of each of the N matrices.
    Per slot and frame: Rayleigh-Ritz of S on the stored right subspace (one GEMM with K + 8 columns,
    a (K + 8)^2 eigh), then one power step S^T U / sigma (a second GEMM) stored as next frame's
    start, so the subspace follows the query. Slots without a usable entry start from a seeded random
    subspace with FAST_COLD_ITERS iterations.
    """
    N, _, hw_m = s.shape
    dtype = dtype or s.dtype
    p = min(k + FAST_OVERSAMPLE, min(s.shape[-2:]))
    prints = fingerprints(keys)
    bases: list[torch.Tensor | None] = [
        state.get(batch, t, prints[n], (hw_m, p)) if state is not None else None for n, t in enumerate(slots)
    ]
    cold = [n for n, x in enumerate(bases) if x is None]
    if cold:
        start = torch.empty(N, hw_m, p, dtype=dtype, device=s.device)
        for n, x in enumerate(bases):
            if x is not None:
                start[n] = x
        if len(cold) < N:
            warm = torch.tensor([n for n in range(N) if n not in cold], device=s.device)
            start[warm] = _orth_near(start[warm])
    else:
        start = _orth_near(torch.stack(bases))  # type: ignore[arg-type]
    if cold:
        gen = torch.Generator(device=s.device).manual_seed(LOWRANK_SEED)
        omega = torch.randn(len(cold), hw_m, p, generator=gen, device=s.device, dtype=dtype)
        idx = torch.tensor(cold, device=s.device)
        start[idx] = _range_right(s[idx], _orth(omega), FAST_COLD_ITERS)
    u, v, sigma = _ritz(s, start)
    # power step: S^T u_k / sigma_k = v_k for an exact triplet, so its distance to v measures staleness
    nxt = _bmm(s.mT, u) / sigma[:, None, :]
    todo = torch.arange(N, device=s.device)
    for extra in range(FAST_MAX_EXTRA_ITERS):
        sig = sigma[todo, None, :k]
        resid = ((nxt[todo, :, :k] - v[todo, :, :k]) * sig).norm(dim=(1, 2)) / sig.norm(dim=(1, 2))
        log.debug("fast svd: residuals %s", [round(float(r), 4) for r in resid])
        todo = todo[resid > FAST_TOL]
        if len(todo) == 0:
            break
        log.debug("fast svd: extra iteration %d for slots %s", extra + 1, todo.tolist())
        u[todo], v[todo], sigma[todo] = _ritz(s[todo], _orth(nxt[todo]))
        nxt[todo] = _bmm(s[todo].mT, u[todo]) / sigma[todo][:, None, :]
    if state is not None:
        nxt = nxt / nxt.norm(dim=1, keepdim=True).clamp_min(torch.finfo(nxt.dtype).tiny)  # unit columns
        for n, t in enumerate(slots):
            state.put(batch, t, prints[n], nxt[n])
    return u[..., :k], v[..., :k]


def top_singular(
    s: torch.Tensor,
    k: int,
    kind: str,
    *,
    keys: torch.Tensor,
    state: SvdState | None,
    batch: int,
    slots: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k singular vectors of each S [N, hw_q, hw_m], sign-fixed, in S's dtype, without gradient.

    "fast" multiplies S in `fast_gemm_dtype` (a copy of S in a reused scratch buffer of `state`).
    """
    with torch.no_grad():
        dtype = torch.float64 if s.dtype == torch.float64 else torch.float32
        if kind == "exact":
            u, v = svd_exact(s.detach().to(dtype), k)
        elif kind == "lowrank":
            u, v = svd_lowrank(s.detach().to(dtype), k)
        elif kind == "fast":
            gemm = fast_gemm_dtype(dtype, s.device)
            if state is not None and gemm != s.dtype:
                work = state.buffer("gemm", tuple(s.shape), gemm, s.device).copy_(s.detach())
            else:
                work = s.detach().to(gemm)
            u, v = svd_fast(work, k, keys, state, batch, slots, dtype=dtype)
        else:
            raise ValueError(f"svd must be one of {SVD_KINDS}, got {kind!r}")
        u, v = fix_signs(u, v)
    return u.to(s.dtype), v.to(s.dtype)

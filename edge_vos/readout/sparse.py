"""Top-k rows: the kept entries of each row of every slot's affinity, and the products the readouts need
on them (S Z, S^T U, (A B^T) sampled where S is kept, weighted sums of gathered rows).

Two implementations of every product, same results up to float rounding (tests/test_readout_sparse.py):
- CSR (`torch.sparse_csr_tensor`; SpMM and SDDMM kernels) on CPU without autograd: nothing of size
  hw*k*C is materialised;
- gathers (`gather` / `index_add` and a batched matmul) everywhere else: differentiable, and plain
  dense kernels on CUDA (in half there).
"""

from __future__ import annotations

import warnings

import torch

# Device types on which the no-grad products run as CSR kernels; elsewhere (CUDA) gathers.
CSR_DEVICES = ("cpu",)


def slot_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (query pixel, slot) the k largest logits and their memory pixels, pixels in increasing order.

    logits [hw_q, N, hw_m] -> values, index [hw_q, N, k]. Sorted column indices are what CSR expects;
    the order of the kept entries changes nothing else.
    """
    top_val, top_idx = logits.topk(min(k, logits.shape[-1]), dim=-1, sorted=False)
    top_idx, order = top_idx.sort(dim=-1)
    return top_val.gather(-1, order), top_idx


def _use_csr(*xs: torch.Tensor) -> bool:
    return (
        xs[0].device.type in CSR_DEVICES
        and not (torch.is_grad_enabled() and any(x.requires_grad for x in xs))
        and xs[0].dtype in (torch.float32, torch.float64)
    )


def _csr(crow: torch.Tensor, col: torch.Tensor, value: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "CSR support is in beta": the kernels used here are tested
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, value, size=size, check_invariants=False)


def gather_sum(index: torch.Tensor, weight: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """out[r] = sum_j weight[r, j] * table[index[r, j]]: index, weight [R, n] (index sorted along j
    for the CSR kernel), table [rows, C] -> [R, C]. The value sums of both sparse readouts."""
    return GatherSum(index, weight, table.shape[0])(table)


class GatherSum:
    """`gather_sum` with its index and weights fixed, for several tables: the CSR matrix is built once."""

    def __init__(self, index: torch.Tensor, weight: torch.Tensor, rows: int) -> None:
        self.index, self.weight, self.rows = index, weight, rows
        self._csr: torch.Tensor | None = None

    def __call__(self, table: torch.Tensor) -> torch.Tensor:
        index, weight = self.index, self.weight
        R, n = index.shape
        if _use_csr(weight, table) and weight.dtype == table.dtype:
            if self._csr is None:
                crow = torch.arange(0, R * n + 1, n, device=index.device)
                self._csr = _csr(crow, index.reshape(-1), weight.reshape(-1), (R, self.rows))
            return self._csr @ table
        picked = table.index_select(0, index.reshape(-1)).view(R, n, table.shape[1])
        return torch.bmm(weight.to(table.dtype)[:, None, :], picked)[:, 0]


class _Pattern:
    """Where the kept entries sit (shared by S, C * S and W of one frame), and its transpose, built on
    first use: S^T's CSR for the power step of the subspace iteration."""

    def __init__(self, index: torch.Tensor, cols: int) -> None:
        N, R, k = index.shape
        offsets = torch.arange(N, device=index.device)[:, None, None] * cols
        self.flat = (index + offsets).reshape(-1)
        self.shape = (N, R, k, cols)
        self._transposed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def transposed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(crow, col, order) of S^T's CSR: entry e of S^T is entry order[e] of S."""
        if self._transposed is None:
            N, R, k, cols = self.shape
            order = torch.argsort(self.flat, stable=True)
            counts = torch.bincount(self.flat, minlength=N * cols)
            crow = torch.zeros(N * cols + 1, dtype=torch.long, device=self.flat.device)
            torch.cumsum(counts, dim=0, out=crow[1:])
            self._transposed = (crow, torch.div(order, k, rounding_mode="floor"), order)
        return self._transposed


class SparseRows:
    """Per slot n, row i holds `value[n, i, j]` at column `index[n, i, j]` (j < k) of an R x cols matrix.

    index [N, R, k] (sorted along k), value [N, R, k]. The CSR structure (block-diagonal over slots) is
    built once and shared by every `with_value` copy, so S, C * S and W reuse it.
    """

    def __init__(self, index: torch.Tensor, value: torch.Tensor, cols: int, _pattern: _Pattern | None = None):
        self.index, self.value, self.cols = index, value, cols
        self._pattern = _pattern or _Pattern(index, cols)

    @property
    def flat_index(self) -> torch.Tensor:
        """[N*R*k]: the column of each kept entry in the block-diagonal [N*R, N*cols] matrix."""
        return self._pattern.flat

    @property
    def shape(self) -> tuple[int, int, int]:
        N, R, _ = self.index.shape
        return N, R, self.cols

    @property
    def dtype(self) -> torch.dtype:
        return self.value.dtype

    def with_value(self, value: torch.Tensor) -> SparseRows:
        return SparseRows(self.index, value, self.cols, self._pattern)

    def detach(self) -> SparseRows:
        return self.with_value(self.value.detach())

    def to(self, dtype: torch.dtype) -> SparseRows:
        return self.with_value(self.value.to(dtype))

    def select(self, slots: torch.Tensor) -> SparseRows:
        return SparseRows(self.index[slots], self.value[slots], self.cols)

    def to_dense(self) -> torch.Tensor:
        N, R, _ = self.index.shape
        dense = torch.zeros(N, R, self.cols, dtype=self.value.dtype, device=self.value.device)
        return dense.scatter_(-1, self.index, self.value)

    def _block_csr(self, value: torch.Tensor) -> torch.Tensor:
        N, R, k = self.index.shape
        crow = torch.arange(0, N * R * k + 1, k, device=self.index.device)
        return _csr(crow, self._pattern.flat, value.reshape(-1), (N * R, N * self.cols))

    def mm(self, z: torch.Tensor) -> torch.Tensor:
        """S z: z [N, cols, p] -> [N, R, p]."""
        N, R, k = self.index.shape
        p = z.shape[-1]
        if _use_csr(self.value, z):
            return (self._block_csr(self.value) @ z.reshape(N * self.cols, p)).view(N, R, p)
        rows = z.reshape(N * self.cols, p).index_select(0, self._pattern.flat).view(N * R, k, p)
        return torch.bmm(self.value.reshape(N * R, 1, k).to(z.dtype), rows).view(N, R, p)

    def tmm(self, u: torch.Tensor) -> torch.Tensor:
        """S^T u: u [N, R, p] -> [N, cols, p] (a scatter-add of the kept entries)."""
        N, R, k = self.index.shape
        p = u.shape[-1]
        if _use_csr(self.value, u):
            crow, col, order = self._pattern.transposed()
            csr_t = _csr(crow, col, self.value.reshape(-1)[order], (N * self.cols, N * R))
            return (csr_t @ u.reshape(N * R, p)).view(N, self.cols, p)
        contrib = (self.value.to(u.dtype)[..., None] * u[:, :, None, :]).reshape(N * R * k, p)
        out = torch.zeros(N * self.cols, p, dtype=u.dtype, device=u.device)
        return out.index_add(0, self._pattern.flat, contrib).view(N, self.cols, p)

    def sample(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(a b^T) at the kept entries: a [N, R, c], b [N, cols, c] -> [N, R, k] (SDDMM)."""
        N, R, k = self.index.shape
        c = a.shape[-1]
        if _use_csr(self.value, a, b) and a.dtype == self.value.dtype:
            out = torch.sparse.sampled_addmm(
                self._block_csr(self.value), a.reshape(N * R, c), b.reshape(N * self.cols, c).T, beta=0.0
            )
            return out.values().view(N, R, k)
        rows = b.reshape(N * self.cols, c).index_select(0, self._pattern.flat).view(N * R, k, c)
        return torch.bmm(rows, a.reshape(N * R, c, 1)).view(N, R, k)

    def column_sums(self) -> torch.Tensor:
        """[N, cols]: the mass each memory pixel receives from all query pixels."""
        N, _, _ = self.index.shape
        out = torch.zeros(N * self.cols, dtype=self.value.dtype, device=self.value.device)
        return out.index_add(0, self._pattern.flat, self.value.reshape(-1)).view(N, self.cols)

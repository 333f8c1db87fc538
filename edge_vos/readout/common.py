"""Shape checks and the small pieces both readouts share (similarity logits, masked temporal softmax)."""

from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def check_inputs(
    qk: torch.Tensor, mk: torch.Tensor, mv: torch.Tensor, valid: torch.Tensor
) -> tuple[int, int, int, int, int, int, int, torch.Tensor]:
    """Validates shapes and dtypes; returns B, O, T, Ck, Cv, H, W and `valid` as [B,O,T] bool.

    Raises ValueError for an object of a batch element without any valid slot: its softmax would be
    empty (NaN), and a silent NaN downstream is much harder to trace than an error here.
    """
    if qk.dim() != 4 or mk.dim() != 5 or mv.dim() != 6:
        raise ValueError(
            f"expected qk [B,Ck,H,W], mk [B,T,Ck,H,W], mv [B,O,T,Cv,H,W]; got {list(qk.shape)}, "
            f"{list(mk.shape)}, {list(mv.shape)}"
        )
    B, Ck, H, W = qk.shape
    _, T, _, _, _ = mk.shape
    O, Cv = mv.shape[1], mv.shape[3]
    if mk.shape != (B, T, Ck, H, W):
        raise ValueError(f"mk {list(mk.shape)} does not match qk {list(qk.shape)} (expected [B,T,Ck,H,W])")
    if mv.shape != (B, O, T, Cv, H, W):
        raise ValueError(f"mv {list(mv.shape)} does not match mk {list(mk.shape)} (expected [B,O,T,Cv,H,W])")
    for name, x in (("qk", qk), ("mk", mk), ("mv", mv)):
        if x.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name} has dtype {x.dtype}; expected one of {FLOAT_DTYPES}")
    if not (qk.dtype == mk.dtype == mv.dtype):
        raise ValueError(f"qk, mk, mv must share a dtype, got {qk.dtype}, {mk.dtype}, {mv.dtype}")
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool tensor, got {valid.dtype}")
    if valid.shape == (B, T):
        valid = valid[:, None, :].expand(B, O, T)
    elif valid.shape != (B, O, T):
        raise ValueError(f"valid must be [B,T]=[{B},{T}] or [B,O,T]=[{B},{O},{T}], got {list(valid.shape)}")
    if O == 0:
        raise ValueError("mv has no objects (O = 0)")
    empty = (~valid.any(dim=-1)).nonzero()
    if len(empty):
        b, o = (int(i) for i in empty[0])
        raise ValueError(f"no valid memory slot for batch element {b}, object {o} (valid is all False)")
    return B, O, T, Ck, Cv, H, W, valid.to(qk.device)


def needs_grad(*xs: torch.Tensor) -> bool:
    """True when autograd records the readout, so in-place reuse of buffers must be avoided."""
    return torch.is_grad_enabled() and any(x.requires_grad for x in xs)


def logits_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of similarity logits: float32 for half/bf16 input. Trained keys have norms ~60, so logits
    reach the hundreds, where the spacing of half floats alone (a quarter to a half) changes softmax
    weights by tens of percent; the probabilities after the softmax lie in [0, 1] and go back to the
    input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def sim_logits(q: torch.Tensor, m: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(2 q.m - |m|^2) / sqrt(Ck): q [N, hw_q, Ck], m [N, Ck, hw_m] -> [N, hw_q, hw_m], one baddbmm,
    in `logits_dtype`."""
    q, m = q.to(logits_dtype(q.dtype)), m.to(logits_dtype(m.dtype))
    scale = 1.0 / math.sqrt(q.shape[-1])
    m_sq = m.pow(2).sum(dim=-2, keepdim=True)  # [N, 1, hw_m]
    if out is None:
        return torch.baddbmm(m_sq, q, m, beta=-scale, alpha=2.0 * scale)
    return torch.baddbmm(m_sq, q, m, beta=-scale, alpha=2.0 * scale, out=out)


def sim_logits_flat(q: torch.Tensor, m: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """sim_logits of one query against all N slots in one GEMM: q [hw_q, Ck], m [N, Ck, hw_m] ->
    [hw_q, N, hw_m] (contiguous; .permute(1, 0, 2) is the [N, hw_q, hw_m] of sim_logits).

    Same values as sim_logits up to float rounding (not bit for bit: a different GEMM blocking).
    """
    q, m = q.to(logits_dtype(q.dtype)), m.to(logits_dtype(m.dtype))
    N, Ck, hw_m = m.shape
    scale = 1.0 / math.sqrt(Ck)
    flat = m.permute(1, 0, 2).reshape(Ck, N * hw_m)
    m_sq = flat.pow(2).sum(dim=0, keepdim=True)  # [1, N*hw_m]
    if out is None:
        res = torch.addmm(m_sq, q, flat, beta=-scale, alpha=2.0 * scale)
    else:
        res = torch.addmm(m_sq, q, flat, beta=-scale, alpha=2.0 * scale, out=out.view(q.shape[0], N * hw_m))
    return res.view(q.shape[0], N, hw_m)


def softmax_last(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """Row softmax over the last dim, written over x when allowed (no autograd).

    A fresh hw x hw output per call costs more than the softmax itself on the development machines
    (page faults on every new large allocation); the CPU kernel reads each row's input before writing
    its output, so aliasing input and output is safe there (tests/test_readout.py checks it).
    """
    if inplace and x.device.type == "cpu" and x.is_contiguous():
        return torch.ops.aten._softmax.out(x, -1, False, out=x)
    return torch.softmax(x, dim=-1)


def slot_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over slots, separately per object: logits [N, hw] (shared), mask [O, N] -> [O, N, hw].

    Only the mask differs between objects, so the logits are computed once by the caller.
    """
    x = logits[None].expand(mask.shape[0], -1, -1)
    if not bool(mask.all()):
        x = x.masked_fill(~mask[:, :, None], float("-inf"))
    return torch.softmax(x, dim=1)

"""Scratch tensors of the no-grad readout: one named buffer per role, reused from frame to frame."""

from __future__ import annotations

import math

import torch

# Every role that holds an hw x N*hw tensor. Each role owns its buffer, so no stage can overwrite
# another stage's result whatever the order of the calls.
ROLES = (
    "logits",  # the logits [hw_q, N, hw_m] the per-slot top-k is taken from
)


class ReadoutWorkspace:
    """The readout's hw x N*hw tensors, one buffer per role in ROLES (no autograd use).

    Allocating them anew on every frame costs page faults on every call, which on the development machines
    is as slow as the softmax over them. Each buffer grows to the largest size asked for, then stays. Only
    the logits are that large: everything after the per-slot top-k is hw x k.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, role: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The buffer of `role` viewed as `shape` (contents undefined)."""
        if role not in ROLES:
            raise ValueError(f"unknown workspace role {role!r}; expected one of {ROLES}")
        numel = math.prod(shape)
        buf = self._buffers.get(role)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device:
            buf = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[role] = buf
        return buf[:numel].view(shape)

    def clear(self) -> None:
        """Releases every buffer (tracker reset)."""
        self._buffers.clear()

    def __len__(self) -> int:
        return len(self._buffers)

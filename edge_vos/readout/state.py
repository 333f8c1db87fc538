"""What the TMRN readout keeps per stream between frames: warm starts of the subspace iteration, the agents of
`agents_every`, the workspace's buffers; and the fingerprints that notice an overwritten slot."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from edge_vos.readout.workspace import ReadoutWorkspace

FINGERPRINT_STRIDE = 7  # every 7th key value: a new frame's keys differ everywhere, so a sample suffices


def fingerprints(keys: torch.Tensor) -> torch.Tensor:
    """keys [N, ...] -> float64 [N, 2] (sum, sum of squares of a fixed sample of each slot's keys):
    changes when a slot is overwritten. A sample, because this runs on every frame."""
    x = keys.detach().reshape(keys.shape[0], -1)[:, ::FINGERPRINT_STRIDE].double()
    return torch.stack([x.sum(dim=1), x.pow(2).sum(dim=1)], dim=1)


@dataclass
class _SlotEntry:
    fingerprint: torch.Tensor  # float64 [2]: sum and sum of squares of the slot's memory keys
    basis: torch.Tensor  # [hw_m, K + oversample] S^T U / sigma with unit columns: next frame's start


@dataclass
class TmrnState:
    """The per-stream state a TmrnReadout owns: per batch element and slot, last frame's right singular
    subspace after one power step (the warm start of the subspace iteration) and, with agents_every > 1,
    the slot's last agents; and the `workspace` of the no-grad path.

    Memory keys of a slot do not change between frames and the query moves little, so last frame's
    right singular vectors are a good start. The readout calls `sync_versions(versions)` with the memory's
    slot versions on every frame, so an overwritten slot starts cold. As a safety net each entry also
    stores a fingerprint of the slot's keys and is dropped when they change. A stale or missing entry only
    costs speed (a cold start), never correctness of the output shape.
    """

    _slots: dict[tuple[int, int], _SlotEntry] = field(default_factory=dict)
    _versions: dict[tuple[int, int], int] = field(default_factory=dict)
    # agents_every > 1 (stages.agent_keys): each slot's last agent keys and P_M, a frame count per batch element
    _keys: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    _frames: dict[int, int] = field(default_factory=dict)
    workspace: ReadoutWorkspace = field(default_factory=ReadoutWorkspace)
    hits: int = 0
    misses: int = 0

    def sync_versions(self, versions: Iterable[int], batch: int = 0) -> None:
        """Invalidates the slots whose version number changed since the last call (MemoryView.slot_versions)."""
        for slot, version in enumerate(versions):
            key = (batch, slot)
            if self._versions.get(key) != version:
                self._slots.pop(key, None)
                self._keys.pop(key, None)
                self._versions[key] = version

    def clear(self) -> None:
        """Forgets every slot and releases the workspace's buffers."""
        self._slots.clear()
        self._versions.clear()
        self._keys.clear()
        self._frames.clear()
        self.workspace.clear()

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

    def next_frame(self, batch: int) -> int:
        """Counts the readouts of one batch element (the phase of each slot's agent refresh)."""
        frame = self._frames.get(batch, -1) + 1
        self._frames[batch] = frame
        return frame

    def agents(
        self, batch: int, slot: int, fingerprint: torch.Tensor, shape: tuple[int, int, int]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The slot's last agent keys and P_M, or None: never computed, the slot's keys changed since, or
        they do not have `shape` = (2K, Ck, hw_m) (another agent count or working size)."""
        entry = self._keys.get((batch, slot))
        if entry is None or not torch.equal(entry[0], fingerprint):
            return None
        keys, p_m = entry[1], entry[2]
        if (*keys.shape, p_m.shape[0]) != shape:
            return None
        return keys, p_m

    def put_agents(
        self, batch: int, slot: int, fingerprint: torch.Tensor, keys: torch.Tensor, p_m: torch.Tensor
    ) -> None:
        self._keys[(batch, slot)] = (fingerprint, keys.detach(), p_m.detach())

"""Fixed-capacity memory of keys and per-object values, preallocated once.

Slots holding prompt frames are pinned (up to `max_pinned`); the rest form a ring that takes a new
frame every `mem_every` frames and overwrites the oldest. A stream of any length never allocates more.
`unbounded=True` reproduces official STCN for comparison: nothing is evicted and the tensors grow.

Each slot also records which objects it holds a value for: an object that joined after a slot was
written has no meaningful value there (it was encoded as background), so the readout must ignore
that slot for that object instead of being suppressed by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MemoryView:
    """What the readout needs: the used slots only (views where possible)."""

    keys: torch.Tensor  # [1, T, Ck, h, w]
    values: torch.Tensor  # [1, O, T, Cv, h, w] for the requested object indices
    valid: torch.Tensor  # [1, O, T] bool
    slot_versions: list[int]  # per slot, changes whenever the slot is overwritten


class RingMemory:
    def __init__(
        self,
        capacity: int,
        max_objects: int,
        key_dim: int,
        value_dim: int,
        feature_hw: tuple[int, int],
        *,
        max_pinned: int,
        unbounded: bool = False,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.capacity = capacity
        self.max_objects = max_objects
        self.max_pinned = max_pinned
        self.unbounded = unbounded
        self.feature_hw = feature_hw
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.device = torch.device(device)
        self.dtype = dtype
        self.allocations = 0
        self._allocate(capacity)
        self._clock = 0
        self._versions = 0

    def _allocate(self, capacity: int) -> None:
        h, w = self.feature_hw
        old = getattr(self, "keys", None)
        keys = torch.zeros(1, capacity, self.key_dim, h, w, device=self.device, dtype=self.dtype)
        # values are stored channels-last ([.., h, w, Cv]) and exposed as the [.., Cv, h, w] view the readouts
        # take: the sparse readouts gather whole value rows (one memory pixel's Cv channels), which this
        # layout makes a plain view instead of a transposed copy of every value on every frame
        values = torch.zeros(
            1, self.max_objects, capacity, h, w, self.value_dim, device=self.device, dtype=self.dtype
        ).permute(0, 1, 2, 5, 3, 4)
        valid = torch.zeros(capacity, dtype=torch.bool)
        pinned = torch.zeros(capacity, dtype=torch.bool)
        object_valid = torch.zeros(self.max_objects, capacity, dtype=torch.bool)
        written_at = torch.full((capacity,), -1, dtype=torch.long)
        versions = [0] * capacity
        frame_of = [-1] * capacity
        if old is not None:  # unbounded growth: carry the old contents over
            n = self.capacity
            keys[:, :n] = self.keys
            values[:, :, :n] = self.values
            valid[:n], pinned[:n] = self.valid, self.pinned
            object_valid[:, :n] = self.object_valid
            written_at[:n] = self.written_at
            versions[:n] = self.versions
            frame_of[:n] = self.frame_of
        self.keys, self.values = keys, values
        self.valid, self.pinned, self.object_valid = valid, pinned, object_valid
        self.written_at, self.versions, self.frame_of = written_at, versions, frame_of
        self.capacity = capacity
        self.allocations += 1

    # ---- state ---------------------------------------------------------------------------------

    @property
    def used_slots(self) -> int:
        """Slots 0..used-1 cover every valid slot (slots fill from the front and are never compacted)."""
        idx = torch.nonzero(self.valid).flatten()
        return int(idx.max()) + 1 if idx.numel() else 0

    @property
    def num_valid(self) -> int:
        return int(self.valid.sum())

    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()

    def clear(self) -> None:
        self.valid.zero_()
        self.pinned.zero_()
        self.object_valid.zero_()
        self.written_at.fill_(-1)
        self.frame_of = [-1] * self.capacity

    def forget_object(self, index: int) -> None:
        """The object's values become meaningless; its internal index may be reused by a new object."""
        self.object_valid[index] = False

    def has_memory_for(self, index: int) -> bool:
        return bool((self.object_valid[index] & self.valid).any())

    # ---- writing -------------------------------------------------------------------------------

    def _choose_slot(self, pin: bool) -> int:
        free = torch.nonzero(~self.valid).flatten()
        if free.numel():
            return int(free[0])
        if self.unbounded:
            slot = self.capacity
            self._allocate(self.capacity * 2)
            return slot
        ring = torch.nonzero(~self.pinned).flatten()
        # max_pinned < capacity (validated) guarantees at least one ring slot
        oldest = ring[torch.argmin(self.written_at[ring])]
        return int(oldest)

    def write(
        self,
        key: torch.Tensor,
        values: torch.Tensor,
        object_indices: list[int],
        *,
        pin: bool,
        frame_index: int,
    ) -> int:
        """Stores key [1,Ck,h,w] and values [N,Cv,h,w] (one per index in object_indices); returns the slot."""
        if values.shape[0] != len(object_indices):
            raise ValueError(f"{values.shape[0]} values for {len(object_indices)} objects")
        if pin:
            pinned = torch.nonzero(self.pinned).flatten()
            if not self.unbounded and pinned.numel() >= self.max_pinned:
                # Too many prompts: the oldest pinned prompt joins the ring and will rotate out.
                oldest = pinned[torch.argmin(self.written_at[pinned])]
                self.pinned[oldest] = False
        slot = self._choose_slot(pin)
        self.keys[0, slot] = key[0].to(self.dtype)
        self.object_valid[:, slot] = False
        if object_indices:
            index = torch.tensor(object_indices, device=self.device)
            self.values[0, index, slot] = values.to(self.dtype)
            self.object_valid[object_indices, slot] = True
        self.valid[slot] = True
        self.pinned[slot] = pin
        self.written_at[slot] = self._clock
        self._clock += 1
        self._versions += 1
        self.versions[slot] = self._versions
        self.frame_of[slot] = frame_index
        return slot

    # ---- reading -------------------------------------------------------------------------------

    def view(self, object_indices: list[int]) -> MemoryView:
        """Keys, values and validity of the used slots for the given objects (in that order)."""
        used = self.used_slots
        if used == 0:
            raise RuntimeError("memory is empty: prompt at least one object first")
        keys = self.keys[:, :used]
        start = object_indices[0] if object_indices else 0
        if object_indices == list(range(start, start + len(object_indices))):
            values = self.values[:, start : start + len(object_indices), :used]  # a view, no copy
        else:
            values = self.values[:, object_indices, :used]
        valid = (self.object_valid[object_indices, :used] & self.valid[:used]).to(self.device)
        return MemoryView(keys, values, valid[None], self.versions[:used])

"""Maps user object ids (1..254, the values of a label map) to internal memory slots."""

from __future__ import annotations


class ObjectManager:
    """Keeps a stable internal index per user id; freed indices are reused lowest-first."""

    def __init__(self, max_objects: int) -> None:
        self.max_objects = max_objects
        self._index_of: dict[int, int] = {}

    @property
    def ids(self) -> list[int]:
        """User ids in internal-index order (the order of per-object tensors)."""
        return sorted(self._index_of, key=self._index_of.__getitem__)

    def __contains__(self, obj_id: int) -> bool:
        return obj_id in self._index_of

    def __len__(self) -> int:
        return len(self._index_of)

    def index(self, obj_id: int) -> int:
        return self._index_of[obj_id]

    @staticmethod
    def check_id(obj_id: int) -> None:
        if not isinstance(obj_id, int) or isinstance(obj_id, bool) or not 1 <= obj_id <= 254:
            raise ValueError(f"object id must be an integer in 1..254, got {obj_id!r}")

    def add(self, obj_id: int) -> int:
        self.check_id(obj_id)
        if obj_id in self._index_of:
            return self._index_of[obj_id]
        used = set(self._index_of.values())
        free = next((i for i in range(self.max_objects) if i not in used), None)
        if free is None:
            raise ValueError(
                f"cannot add object {obj_id}: already tracking the maximum of {self.max_objects} objects"
            )
        self._index_of[obj_id] = free
        return free

    def remove(self, obj_id: int) -> int:
        if obj_id not in self._index_of:
            raise KeyError(f"unknown object id {obj_id}; tracking {self.ids}")
        return self._index_of.pop(obj_id)

    def clear(self) -> None:
        self._index_of.clear()

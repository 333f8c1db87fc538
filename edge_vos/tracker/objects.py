"""Maps user object ids (the values of a label map, edge_vos.labels) to internal memory slots."""

from __future__ import annotations

from collections.abc import Collection

from edge_vos.labels import MAX_OBJECT_ID, is_object_id


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
        if not is_object_id(obj_id):
            raise ValueError(f"object id must be an integer in 1..{MAX_OBJECT_ID}, got {obj_id!r}")

    def check_room(self, obj_ids: Collection[int]) -> None:
        """Raises ValueError unless every id in `obj_ids` can be tracked (the one check of the object limit)."""
        new = [i for i in obj_ids if i not in self._index_of]
        if len(self._index_of) + len(new) > self.max_objects:
            raise ValueError(
                f"cannot track more than {self.max_objects} objects (tracking {len(self._index_of)}, "
                f"adding {len(new)})"
            )

    def add(self, obj_id: int) -> int:
        self.check_id(obj_id)
        self.check_room([obj_id])
        if obj_id not in self._index_of:
            used = set(self._index_of.values())
            self._index_of[obj_id] = next(i for i in range(self.max_objects) if i not in used)
        return self._index_of[obj_id]

    def remove(self, obj_id: int) -> int:
        if obj_id not in self._index_of:
            raise KeyError(f"unknown object id {obj_id}; tracking {self.ids}")
        return self._index_of.pop(obj_id)

    def clear(self) -> None:
        self._index_of.clear()

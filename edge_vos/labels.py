"""The label-map convention every layer shares: uint8 maps, 0 = background, pixel value = object id.

Ids run 1..MAX_OBJECT_ID; 255 stays free because DAVIS annotations use it for "void". So no stream can
hold more than MAX_OBJECT_ID objects, whatever `max_objects` says. Importable from anywhere (no torch).
"""

from __future__ import annotations

MAX_OBJECT_ID = 254


def is_object_id(value: object) -> bool:
    """True for an int (not a bool) in 1..MAX_OBJECT_ID."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_OBJECT_ID

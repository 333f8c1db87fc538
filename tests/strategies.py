"""Hypothesis strategies for hostile control requests: raw bytes, any JSON, and command-shaped objects whose
fields take wrong types, huge or non-finite numbers, deep nesting and oversized strings. Shared by the
tests and by tools/hostile_service.py (which runs them against a real service process)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from edge_vos.prompt import METHODS
from edge_vos.service.commands import COMMANDS

HUGE = 10**400  # beyond float range: float(HUGE) raises OverflowError

scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(-HUGE, HUGE)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25,
)
numbers = (st.integers(-HUGE, HUGE) | st.integers(-1000, 1000) | st.floats(allow_nan=True, allow_infinity=True)
           | st.floats(-1e6, 1e6))


@st.composite
def png_base64(draw: st.DrawFn) -> str:
    """A real PNG of a random size and mode (often not the frame's size)."""
    h, w = draw(st.integers(1, 200)), draw(st.integers(1, 200))
    mode = draw(st.sampled_from(["L", "P", "1", "RGB", "RGBA", "I;16"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    array = rng.integers(0, 3, (h, w, 3) if mode in ("RGB", "RGBA") else (h, w), dtype=np.uint8)
    image = Image.fromarray(array, "RGB" if mode in ("RGB", "RGBA") else "L").convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    if draw(st.booleans()):  # damage it
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=20))
    return base64.b64encode(data).decode()


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": st.integers(-5, 300) | st.integers(-HUGE, HUGE) | json_values,
    "box": st.lists(numbers, max_size=6) | json_values,
    "polygon": st.lists(st.lists(numbers, max_size=3), max_size=10) | json_values,
    "mask": png_base64() | st.text(max_size=60) | st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())
    | json_values,
    "rle": st.fixed_dictionaries({
        "size": st.lists(st.integers(-5, 10**7) | numbers, max_size=3),
        "counts": st.text(max_size=30) | st.lists(st.integers(-5, 10**9) | st.integers(-HUGE, HUGE), max_size=12),
    }) | json_values,
    "points": st.lists(st.lists(numbers, max_size=3), max_size=8) | json_values,
    "labels": st.lists(st.integers(-2, 3) | st.integers(-HUGE, HUGE) | json_values, max_size=8) | json_values,
    "method": st.sampled_from(METHODS) | json_values,
    "refine": st.booleans() | json_values,
    "frame": st.just("next") | st.integers(-3, 10**6) | st.integers(-HUGE, HUGE) | json_values,
    "resize": st.booleans() | json_values,
    "req": st.integers(-10**70, 10**70) | st.text(max_size=80) | json_values,
}


@st.composite
def command_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A command-shaped JSON object: a known or unknown `cmd`, some of the protocol's fields, some strangers."""
    cmd = draw(st.sampled_from(COMMANDS) | json_values)
    chosen = draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=5))
    data: dict[str, Any] = {"cmd": cmd}
    for name in chosen:
        data[name] = draw(FIELDS[name])
    if draw(st.integers(0, 9)) == 0:
        data[draw(st.text(max_size=20))] = draw(json_values)
    return data


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def huge_number_requests(draw: st.DrawFn) -> bytes:
    """JSON with an integer longer than Python's 4300-digit str->int limit in a random field (built as text:
    json.dumps itself refuses such integers)."""
    digits = "9" * draw(st.integers(4000, 6000))
    field = draw(st.sampled_from(["req", "id", "frame", "box", "polygon", "rle"]))
    template = {
        "req": '{"cmd": "ping", "req": %s}',
        "id": '{"cmd": "remove", "id": %s}',
        "frame": '{"cmd": "add", "id": 1, "box": [0, 0, 10, 10], "frame": %s}',
        "box": '{"cmd": "add", "id": 1, "box": [0, 0, %s, 10]}',
        "polygon": '{"cmd": "add", "id": 1, "polygon": [[0, 0], [5, 0], [%s, 5]]}',
        "rle": '{"cmd": "add", "id": 1, "rle": {"size": [%s, 4], "counts": "a"}}',
    }[field]
    return (template % digits).encode()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid-looking request with bytes flipped, cut or inserted."""
    data = bytearray(_dumps(draw(command_objects())))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


nested = st.integers(1, 100_000).map(lambda n: b'{"cmd": "ping", "req": ' + b"[" * n + b"]" * n + b"}")

requests = (
    command_objects().map(_dumps)
    | json_values.map(_dumps)
    | st.binary(max_size=300)
    | mutated()
    | huge_number_requests()
    | nested
)

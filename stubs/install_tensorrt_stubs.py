"""Installs the TensorRT 10 type stubs where mypy can use them, fixing two syntax errors in the wheel.

Why not a plain `pip install tensorrt-stubs`: its metadata requires `tensorrt` itself (not installable
without NVIDIA's index), and mypy ignores `tensorrt_bindings` in site-packages because the wheel has no
`py.typed` marker. So the wheel is installed with `--no-deps --target .venv/tensorrt-stubs`, a directory
on mypy's `mypy_path` (pyproject.toml), next to the `stubs/tensorrt` shim.

The generated stub (10.13.0.35.1) is not valid Python in a few places: plugin methods name a parameter
`in` (a keyword) and `add_scale_nd` puts a parameter without a default after ones with defaults. mypy
stops at syntax errors, so they are rewritten (`in` -> `in_`, the trailing parameter gets `= ...`).
Idempotent: does nothing when the patched stub is already there.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

VERSION = "10.13.0.35.1"
ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / ".venv" / "tensorrt-stubs"
STUB = TARGET / "tensorrt_bindings" / "tensorrt.pyi"
MARKER = TARGET / f".patched-{VERSION}"

log = logging.getLogger("install_tensorrt_stubs")


def patch(text: str) -> str:
    """Makes the generated stub parse: keyword parameter names and a non-default after defaults."""
    text = re.sub(r"(\bdef \w+\([^)]*?)\bin: ", r"\1in_: ", text)
    return text.replace("power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if MARKER.is_file() and STUB.is_file():
        return 0
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--upgrade",
         "--target", str(TARGET), f"tensorrt-stubs=={VERSION}"],
        check=True,
    )
    STUB.write_text(patch(STUB.read_text()))
    MARKER.write_text("patched\n")
    log.info("TensorRT stubs %s installed in %s", VERSION, TARGET)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The allocator settings: set on glibc, a clean False elsewhere, and freed frame memory then reused."""

from __future__ import annotations

import ctypes.util

import pytest

from edge_vos import allocator


def test_without_mallopt_nothing_is_set_and_nothing_raises(monkeypatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert allocator.keep_freed_memory() is False


@pytest.mark.skipif(ctypes.util.find_library("c") is None or not hasattr(ctypes.CDLL(ctypes.util.find_library("c")),
                                                                         "mallopt"),
                    reason="this C library has no mallopt (not glibc)")
def test_frames_of_large_blocks_reuse_their_pages_instead_of_faulting_them_in_again() -> None:
    """Each "frame" allocates and frees 56 MB in four blocks, as a tracker's step does at many objects. In a
    fresh process glibc would trim the freed heap top and fault about 2000 pages in again per frame; with
    the settings it reuses them."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from edge_vos.allocator import keep_freed_memory
        if sys.argv[1] == "on":
            assert keep_freed_memory()
        size = 16 << 20
        def frame():
            blocks = [np.ones(size, np.uint8) for _ in range(3)] + [np.ones(size // 2, np.uint8)]
            return sum(int(b[::4096].sum()) for b in blocks)
        frame()
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            frame()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 5)
    """)
    faults = {mode: float(subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                                         check=True).stdout) for mode in ("off", "on")}
    assert faults["on"] < 50, faults
    assert faults["off"] > 500, faults  # the pattern does fault without them: the test can tell

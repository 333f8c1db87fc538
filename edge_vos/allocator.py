"""glibc malloc settings for a process that allocates the same large tensors on every frame.

A tracker's step allocates several MB per object and frame (probability planes at input size, the
aggregation's stack, the decoder's canvas) and frees them when the next frame's result replaces them.
glibc hands that memory back to the kernel once the free top of its heap passes its trim threshold, so the
next frame maps it afresh and every page faults and is zeroed again: with 8 objects on 854x480 frames,
thousands of page faults per frame, several ms (docs/benchmarks.md, "objects-notes"). These settings keep
freed memory for reuse instead; the cost is that the process holds on to its largest frame's memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h) and the values set: allocations up to glibc's largest mmap threshold come from
# the heap, and the heap's free top is returned to the kernel only beyond TRIM_THRESHOLD_BYTES.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 512 << 20


def keep_freed_memory() -> bool:
    """Sets the thresholds once for this process; False (and nothing changed) where the C library has no
    `mallopt` (not glibc) or refuses a value. Call before the first frame."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        log.debug("no mallopt in the C library: allocator settings left as they are")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    ok = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and ok
    if not ok:
        log.warning("mallopt refused the allocator settings: freed frame memory goes back to the kernel")
    return ok

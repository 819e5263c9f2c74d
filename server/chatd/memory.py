"""Keep large per-connection buffers out of the heap, so memory goes back on close.

glibc serves allocations above ``M_MMAP_THRESHOLD`` (128 KiB) with their own ``mmap``,
which ``free`` hands straight back to the kernel. But the threshold is *dynamic*: after
such a block is freed, glibc raises it to that block's size, and from then on buffers of
that size come from the heap, where a few live small objects pin the pages of many
freed buffers. A server whose clients each held a 1 MiB partial line then kept hundreds
of MiB after they left. Setting the threshold explicitly turns the dynamic adjustment
off (glibc's documented behaviour), so a closed connection's large buffers are unmapped
at once. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("chatd")

#: mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Buffers at least this large are mapped on their own and unmapped when freed.
MMAP_THRESHOLD = 128 * 1024


def return_large_buffers_to_the_os() -> bool:
    """Fix glibc's mmap threshold (and trim threshold); False where that is not possible."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    ok = bool(mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)) and ok
    if not ok:
        log.debug("mallopt refused the thresholds")
    return ok

"""Keep a long slide job's memory flat: large arrays go back to the system when freed.

glibc's malloc serves allocations below its mmap threshold from per-thread heaps (arenas), and
raises that threshold up to 32 MB after large blocks are freed, so a slide job's chunk-sized
arrays (images, probabilities, labels, distance maps) would stay in its threads' heaps,
fragmented. Pinning the threshold at 1 MB maps such blocks and returns them on free (the
effect on peak RSS is measured in README, "Whole slides").
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LARGE_ALLOCATION = 1 << 20  # bytes


def return_large_allocations() -> bool:
    """Pin glibc's mmap and trim thresholds at LARGE_ALLOCATION for this process (it is a
    process-wide setting; freed large blocks go back to the system). True when set; False on
    other C libraries and platforms, where nothing is changed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    done = bool(mallopt(M_MMAP_THRESHOLD, LARGE_ALLOCATION)) and bool(mallopt(M_TRIM_THRESHOLD, LARGE_ALLOCATION))
    if not done:
        log.debug("mallopt refused the thresholds; memory may grow with the job")
    return done

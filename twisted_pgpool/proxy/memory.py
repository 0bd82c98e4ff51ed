"""
Giving memory the proxy no longer uses back to the operating system.

A message the proxy must read whole (up to C{max_buffered_message_length},
16 MiB by default) is assembled from the socket's 64 KiB reads, then
decoded, classified and sent on; all of it is freed once the statement is
on its way.  Freed is not returned, though: glibc's malloc raises its mmap
threshold to the size of the largest block freed (up to 32 MiB) and then
keeps up to twice that at the top of its heap for reuse.  Measured on a
proxy process: after four sessions had sent an 8 MiB query each and
closed, its RSS stayed up to 13 MB above where it started (0 to 13 MB
from one run to the next); with C{malloc_trim(0)} once such a session
ends, 0.1 MB.  Messages passed on as they arrive never need this.
"""

from __future__ import annotations

import ctypes
from typing import Callable, Optional


def _find_malloc_trim() -> Optional[Callable[[int], int]]:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        # Not glibc (musl, macOS...): their allocators behave otherwise.
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()

#: A session that read a message at least this long whole gives the
#: memory back when it ends (see the module docstring).
TRIM_AFTER = 1024 * 1024


def release_free_memory() -> None:
    """
    Return the allocator's free memory to the operating system, where the
    C library can (glibc); a no-op elsewhere.  It costs a walk over the
    heap's free blocks (well under a millisecond for a heap of 100 MB), so
    it is called only after large messages, never per message.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)

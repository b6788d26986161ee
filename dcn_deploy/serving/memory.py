"""Giving memory back to the system after a large request.

A large request leaves freed memory in the C allocator's heap (and, by default, in ONNX Runtime's CPU
arena: the server's runtime is opened without it). glibc keeps freed heap pages resident until
``malloc_trim`` returns them, so without it one large request keeps the process's resident size at
its peak for good. :func:`release_memory` calls ``malloc_trim(0)`` (glibc only; elsewhere nothing),
one call at a time, after each request of at least :data:`LARGE_REQUEST_BYTES`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

# inputs of at least this many bytes make a request large: trimming costs a walk of the heap
LARGE_REQUEST_BYTES = 4 << 20


def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): no malloc_trim
        return None


_TRIM = _malloc_trim()
_LOCK = threading.Lock()


def release_memory() -> bool:
    """Return the allocator's free pages to the system; False where that is not possible or a call
    is already under way."""
    if _TRIM is None or not _LOCK.acquire(blocking=False):
        return False
    try:
        _TRIM(0)
        return True
    finally:
        _LOCK.release()

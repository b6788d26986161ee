"""Giving memory back to the system after a large request.

A large request leaves freed memory in the C allocator (and, by default, in ONNX Runtime's CPU arena:
the server's runtime is opened without it). glibc keeps it resident for good unless told otherwise:
freeing a large buffer raises its mmap threshold (up to 32 MiB), so later buffers of that size come
from the heaps, and the trim threshold with it (to twice that), so up to 64 MiB stays on top of each
thread's heap, which ``malloc_trim`` does not shrink (it trims the main heap's top only). So:

* :func:`configure_allocator` (once, when a server starts) fixes both thresholds, which stops the
  raising: buffers of :data:`MMAP_THRESHOLD` bytes and more are mapped and unmapped on their own,
  heap tops past :data:`TRIM_THRESHOLD` are given back when freed;
* :func:`release_memory` calls ``malloc_trim(0)`` (free pages inside the heaps) after each request of
  at least :data:`LARGE_REQUEST_BYTES`.

glibc only; elsewhere (musl, macOS) both do nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

# inputs of at least this many bytes make a request large: trimming costs a walk of the heap
LARGE_REQUEST_BYTES = 4 << 20
MMAP_THRESHOLD = 1 << 20
TRIM_THRESHOLD = 4 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


_LIBC = _libc()
_LOCK = threading.Lock()


def configure_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds (module docstring); False where that is not possible."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(_LIBC.mallopt(_M_TRIM_THRESHOLD,
                                                                                         TRIM_THRESHOLD))


def release_memory() -> bool:
    """Return the allocator's free pages to the system; False where that is not possible or a call
    is already under way."""
    if _LIBC is None or not _LOCK.acquire(blocking=False):
        return False
    try:
        _LIBC.malloc_trim(0)
        return True
    finally:
        _LOCK.release()

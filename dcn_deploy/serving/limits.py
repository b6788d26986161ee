"""The limits of ``dcn-deploy serve``, each with its default: the one home of these values (the CLI's
flags, :func:`~dcn_deploy.serving.server.serve` and :func:`~dcn_deploy.serving.server.start_server`
read them from here). Standard library only, so that the CLI can show the defaults without loading
the server.

* ``max_request_bytes`` (64 MiB): 413 from ``Content-Length`` before the body is read; while
  reading a body without one (chunked); on the decompressed size of a gzip/deflate body.
* ``max_input_elements`` (16 Mi, 2**24): 413 naming the input, its shape and the limit, from the
  declared shape before anything is allocated; stacked runs stay within it too.
* ``max_queue`` (64): inference requests in the server at once (reading, queued or running); the
  next gets 503 with ``Retry-After: 1`` at once.
* ``request_timeout_s`` (60 s): 408 for a body that has not arrived, 504 for an answer that has
  not; a model run that long is abandoned (its thread replaced, :mod:`dcn_deploy.serving.runner`).

Worst-case memory of request bodies: about ``max_queue * max_request_bytes`` (4 GiB at the defaults;
JSON bodies take several times their size once parsed, binary ones about their size).
"""
from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class ServeLimits:
    """What one server accepts (module table); :meth:`check` raises ``ValueError`` naming a bad value."""

    max_request_bytes: int = 64 * MIB
    max_input_elements: int = 1 << 24
    max_queue: int = 64
    request_timeout_s: float = 60.0

    def check(self) -> ServeLimits:
        for name, flag in (("max_request_bytes", "--max-request-bytes"), ("max_input_elements", "--max-input-elements"),
                           ("max_queue", "--max-queue")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag} must be a positive integer, got {value!r}")
        timeout = self.request_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
            raise ValueError(f"--request-timeout-s must be a positive number of seconds, got {timeout!r}")
        return self


DEFAULT_LIMITS = ServeLimits()

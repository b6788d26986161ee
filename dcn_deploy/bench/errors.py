"""The one error of dcn-deploy bench: a benchmark that cannot run as asked."""
from __future__ import annotations


class BenchError(ValueError):
    """A bad argument or a missing prerequisite; the message says which and what to do."""



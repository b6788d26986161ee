"""Key lists of released checkpoints (tests/data/*_keys.txt): one ``key NxCxHxW`` per line, ``#`` comments."""
from __future__ import annotations

from pathlib import Path


def read_key_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The keys and shapes a key-list file records (a key with no dims is a scalar)."""
    shapes = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, dims = line.partition(" ")
            shapes[key] = tuple(int(d) for d in dims.split("x")) if dims else ()
    return shapes

"""How settings are written as words, for every command-line and text source (standard library only)."""
from __future__ import annotations

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def cli_flag(name: str) -> str:
    """The command-line spelling of a setting's name: ``top_k`` -> ``--top-k``."""
    return "--" + name.replace("_", "-")


def parse_bool(text: str) -> bool | None:
    """``1/true/yes/on`` -> True, ``0/false/no/off`` -> False (any case), anything else -> None."""
    word = str(text).strip().lower()
    return True if word in _TRUE else False if word in _FALSE else None

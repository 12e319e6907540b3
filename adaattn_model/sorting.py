"""Natural order of file names: ``frame_2`` before ``frame_10``."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key comparing runs of digits as numbers and the rest case-insensitively.

    Ties (``frame_2`` and ``frame_002``) fall back to the plain name, so the order is total.
    """
    parts = _DIGITS.split(name)
    key = tuple((0, int(p), "") if i % 2 else (1, 0, p.casefold()) for i, p in enumerate(parts) if p)
    return key, name

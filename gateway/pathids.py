"""Numeric ids in URL paths: ASCII digits only, in their one canonical spelling.

``int()`` and ``str.isdigit()`` accept digits of every script (``int("２") == 2``) and ``isdigit()``
even superscripts, which ``int()`` then refuses; ``[0-9]`` in a ``str`` pattern is ASCII alone.
No sign, no leading zero and at most 18 digits, so one id has one path and always fits a bigint.
"""

from __future__ import annotations

import re

__all__ = ["path_id"]

_ID = re.compile(r"[1-9][0-9]{0,17}").fullmatch


def path_id(raw: str) -> int | None:
    """The id a path segment spells, or None when it is not a canonical positive id in ASCII digits."""
    return int(raw) if _ID(raw) is not None else None

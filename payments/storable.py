"""Text PostgreSQL can store: NUL escaped, lone surrogates replaced, before anything reaches the ledger.

PostgreSQL's ``text`` refuses the NUL character and ``jsonb`` its ``\\u0000`` escape; a lone
surrogate (JSON allows ``\\ud800``, a decoded header may carry one) cannot even be encoded as
UTF-8. A notification carrying one — signed by the provider or not — would fail the whole
group it is committed with. Signatures are checked on the bytes received; only what is
stored changes: NUL becomes the six characters ``\\u0000``, a lone surrogate U+FFFD.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["NUL_ESCAPE", "is_storable", "storable", "storable_text"]

NUL_ESCAPE = "\\u0000"


def is_storable(value: Any) -> bool:
    """Whether every string in ``value`` (JSON-like: dicts, lists, tuples, scalars) can be stored as it is.

    One orjson serialisation (a few µs for a notification) instead of a walk in Python (ten
    times that): orjson refuses lone surrogates and writes NUL as ``\\u0000``. A stored literal
    backslash-u0000 reads as a NUL here too; that only costs the walk.
    """
    try:
        return b"\\u0000" not in orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False


def storable_text(text: str) -> str:
    """``text`` as PostgreSQL can store it (the same object when nothing needs changing)."""
    if "\x00" in text:
        text = text.replace("\x00", NUL_ESCAPE)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in text)
    return text


def storable(value: Any) -> Any:
    """``value`` with every string in it (dict keys too) made storable."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(item) for item in value]
    return value

"""One normalisation per kind of identity: the form registration stores, and every lookup, throttle and key uses.

Two spellings that reach the same account (full-width digits, another case, surrounding spaces)
must also meet the same rate-limit bucket, cache entry and reset key, or each spelling gets a
budget of its own. So whatever is keyed on a username, name, id number or phone calls the
function here, never a ``strip().upper()`` of its own. ASCII input, nearly all of it, skips
Unicode normalisation: NFKC and NFC leave ASCII unchanged.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MIDDLE_DOT", "normalise_id_number", "normalise_name", "normalise_phone", "normalise_username"]

MIDDLE_DOT = "·"
# Dots people type for the middle dot of minority and foreign names, all stored as U+00B7.
_DOT_VARIANTS = str.maketrans({"•": MIDDLE_DOT, "・": MIDDLE_DOT, "‧": MIDDLE_DOT, "∙": MIDDLE_DOT,
                               "⋅": MIDDLE_DOT, "［": "[", "］": "]"})  # fmt: skip
_VARIANT_CHARS = frozenset(chr(code) for code in _DOT_VARIANTS)


def normalise_username(username: str) -> str:
    """NFKC (full-width letters to ASCII), whitespace removed at the ends, lower case (usernames ignore case)."""
    if not username.isascii():
        username = unicodedata.normalize("NFKC", username)
    return username.strip().lower()


def normalise_name(name: str) -> str:
    """NFC, runs of whitespace made one space, dot and full-width bracket variants made canonical."""
    if name.isascii():
        return " ".join(name.split())
    name = " ".join(unicodedata.normalize("NFC", name).split())
    # Checking first costs less than translating a name that has none (nearly every name): lookups call this.
    return name if _VARIANT_CHARS.isdisjoint(name) else name.translate(_DOT_VARIANTS)


def normalise_id_number(id_number: str) -> str:
    """NFKC (full-width digits and letters to ASCII), whitespace removed at the ends, upper case, no final 号."""
    if id_number.isascii():
        return id_number.strip().upper()
    # Stripped again after the 号 so that the result is a fixed point (normalising twice changes nothing).
    return unicodedata.normalize("NFKC", id_number).strip().upper().rstrip("号").strip()


def normalise_phone(phone: str) -> str:
    """NFKC (full-width digits to ASCII), whitespace removed at the ends."""
    if not phone.isascii():
        phone = unicodedata.normalize("NFKC", phone)
    return phone.strip()

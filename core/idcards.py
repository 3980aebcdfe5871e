"""Resident identity numbers (GB 11643-1999): check digits, validation, construction, masking."""

from __future__ import annotations

from datetime import date

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_DIGITS = frozenset("0123456789")

# Mainland provinces (11–65), Taiwan (71) and the 81/82/83 prefixes of residence permits
# for Hong Kong, Macao and Taiwan residents, which use the same 18-character layout.
PROVINCE_CODES = frozenset(
    {
        "11", "12", "13", "14", "15",
        "21", "22", "23",
        "31", "32", "33", "34", "35", "36", "37",
        "41", "42", "43", "44", "45", "46",
        "50", "51", "52", "53", "54",
        "61", "62", "63", "64", "65",
        "71", "81", "82", "83",
    }
)  # fmt: skip
_EARLIEST_BIRTH_YEAR = 1800


def _all_digits(s: str) -> bool:
    return bool(s) and all(ch in _DIGITS for ch in s)


def check_digit(first17: str) -> str:
    """The 18th character of a resident id whose first 17 digits are given."""
    if len(first17) != 17 or not _all_digits(first17):
        raise ValueError(f"expected 17 digits, got {first17!r}")
    total = sum(int(ch) * w for ch, w in zip(first17, WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def birth_date(s: str) -> date | None:
    """The birth date encoded in an 18-character resident id, or None when it is not a real date."""
    if len(s) < 14 or not _all_digits(s[6:14]):
        return None
    try:
        return date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return None


def is_valid_resident_id(s: object, *, today: date | None = None) -> bool:
    """True when ``s`` is an 18-character resident id with a known province, real birth date and check digit."""
    if not isinstance(s, str) or len(s) != 18:
        return False
    body, last = s[:17], s[17]
    if not _all_digits(body) or (last != "X" and last not in _DIGITS):
        return False
    if body[:2] not in PROVINCE_CODES:
        return False
    born = birth_date(s)
    if born is None or born.year < _EARLIEST_BIRTH_YEAR or born > (today or date.today()):
        return False
    return check_digit(body) == last


def make_resident_id(region6: str, birth: date, seq3: int) -> str:
    """Build a resident id from a 6-digit region code, a birth date and a 3-digit sequence (odd = male)."""
    if len(region6) != 6 or not _all_digits(region6):
        raise ValueError(f"region code must be 6 digits, got {region6!r}")
    if not 0 <= seq3 <= 999:
        raise ValueError(f"sequence must be 0..999, got {seq3}")
    first17 = f"{region6}{birth.year:04d}{birth.month:02d}{birth.day:02d}{seq3:03d}"
    return first17 + check_digit(first17)


def mask_id_number(s: str) -> str:
    """Hide the middle of an identity number: ``3701121991****2531`` for an 18-character id."""
    n = len(s)
    if n == 18:
        return f"{s[:10]}****{s[14:]}"
    if n == 15:  # first-generation id: region, YYMMDD, sequence — hide month and day like above
        return f"{s[:8]}****{s[12:]}"
    if n <= 4:
        return "*" * n
    keep = max(1, min(4, n // 4))
    return s[:keep] + "*" * (n - 2 * keep) + s[n - keep :]

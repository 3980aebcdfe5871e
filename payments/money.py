"""Money: integer fen <-> provider yuan strings ("12.34"), exact, never through floats."""

from __future__ import annotations

import re

from payments.errors import PaymentError

# Digits only, no sign, no exponent, at most two decimals; 13 integer digits is far above any fee.
_YUAN = re.compile(r"(0|[1-9][0-9]{0,12})(?:\.([0-9]{1,2}))?")


class InvalidAmount(PaymentError, ValueError):
    """An amount that is not a non-negative sum of whole fen."""

    def __init__(self, value: object) -> None:
        super().__init__(f"not an amount in yuan with at most two decimals: {value!r}")
        self.value = value


def yuan_to_fen(text: str) -> int:
    """``"12.34"`` → ``1234``; ``"12"`` and ``"12.3"`` are accepted, ``"1.234"``, ``"-1"``, ``"1e3"`` are not."""
    if not isinstance(text, str):
        raise InvalidAmount(text)
    match = _YUAN.fullmatch(text)
    if match is None:
        raise InvalidAmount(text)
    whole, cents = match.group(1), (match.group(2) or "").ljust(2, "0")
    return int(whole) * 100 + int(cents)


def fen_to_yuan(amount_fen: int) -> str:
    """``1234`` → ``"12.34"`` (always two decimals, as Alipay's ``total_amount``)."""
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or amount_fen < 0:
        raise InvalidAmount(amount_fen)
    return f"{amount_fen // 100}.{amount_fen % 100:02d}"

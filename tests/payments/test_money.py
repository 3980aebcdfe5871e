"""Money: fen <-> yuan strings, exact both ways, anything else refused."""

from __future__ import annotations

import pytest

from payments.errors import PaymentError
from payments.money import InvalidAmount, fen_to_yuan, yuan_to_fen

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("fen", "yuan"), [(0, "0.00"), (1, "0.01"), (10, "0.10"), (100, "1.00"),
                                           (1234, "12.34"), (8800, "88.00"), (123_456_789_01, "123456789.01")])
def test_fen_to_yuan_and_back(fen: int, yuan: str) -> None:
    assert fen_to_yuan(fen) == yuan
    assert yuan_to_fen(yuan) == fen


@pytest.mark.parametrize(("yuan", "fen"), [("12", 1200), ("12.3", 1230), ("0.5", 50), ("0", 0), ("0.01", 1)])
def test_short_forms_are_accepted(yuan: str, fen: int) -> None:
    assert yuan_to_fen(yuan) == fen


def test_every_amount_up_to_a_hundred_yuan_round_trips() -> None:
    assert all(yuan_to_fen(fen_to_yuan(fen)) == fen for fen in range(10_001))


@pytest.mark.parametrize("bad", ["1.234", "-1", "abc", "", " 1", "1 ", "1.", ".5", "01", "1e3", "1,00", "+1",
                                 "１２", "0x10", "NaN", "inf", "1.2.3", "12345678901234.00"])
def test_yuan_strings_that_are_not_exact_amounts_are_refused(bad: str) -> None:
    with pytest.raises(InvalidAmount):
        yuan_to_fen(bad)


@pytest.mark.parametrize("bad", [-1, True, 1.5, "100", None])
def test_fen_must_be_a_non_negative_int(bad: object) -> None:
    with pytest.raises(InvalidAmount):
        fen_to_yuan(bad)  # type: ignore[arg-type]


def test_yuan_to_fen_takes_strings_only() -> None:
    with pytest.raises(InvalidAmount):
        yuan_to_fen(12.34)  # type: ignore[arg-type]


def test_invalid_amount_is_a_value_error_and_a_payment_error() -> None:
    with pytest.raises(ValueError, match=r"1\.234"):
        yuan_to_fen("1.234")
    assert issubclass(InvalidAmount, PaymentError)

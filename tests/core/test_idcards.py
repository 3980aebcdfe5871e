"""Resident identity numbers: GB 11643 check digits, validation, construction and masking."""

from __future__ import annotations

from datetime import date

import pytest

from core.idcards import (
    check_digit,
    is_valid_resident_id,
    make_resident_id,
    mask_id_number,
)

pytestmark = pytest.mark.unit

# Widely published sample ids whose check digits are known to be right (one ends in X).
KNOWN_VALID = ["11010519491231002X", "440524188001010014", "11010119900307803X"]


@pytest.mark.parametrize("number", KNOWN_VALID)
def test_check_digit_of_known_ids(number: str) -> None:
    assert check_digit(number[:17]) == number[17]
    assert is_valid_resident_id(number)


@pytest.mark.parametrize(
    "number",
    [
        "110105194912310021",  # wrong check digit (should be X)
        "440524188001010015",  # wrong check digit
        "11010519491231002x",  # lower-case x is not the standard's X
        "11010519491331002X",  # month 13
        "110105194902300027",  # 30 February
        "99010519491231002X",  # no province 99
        "11010517991231002X",  # before 1800
        "1101051949123100",  # too short
        "11010519491231002XX",  # too long
        "1101051949123100AX",  # letter in the body
        "",
    ],
)
def test_invalid_ids_are_rejected(number: str) -> None:
    assert not is_valid_resident_id(number)


def test_non_strings_are_rejected() -> None:
    assert not is_valid_resident_id(None)
    assert not is_valid_resident_id(110105194912310021)


def test_future_birth_dates_are_rejected() -> None:
    number = make_resident_id("310104", date(2030, 1, 1), 1)
    assert not is_valid_resident_id(number, today=date(2026, 1, 1))
    assert is_valid_resident_id(number, today=date(2030, 1, 1))


def test_every_wrong_check_digit_is_caught() -> None:
    body = KNOWN_VALID[1][:17]
    wrong = [c for c in "0123456789X" if c != check_digit(body)]
    assert not any(is_valid_resident_id(body + c) for c in wrong)


def test_check_digit_needs_17_digits() -> None:
    with pytest.raises(ValueError):
        check_digit("1234")
    with pytest.raises(ValueError):
        check_digit("1101051949123100A")


def test_make_resident_id_round_trips() -> None:
    number = make_resident_id("370112", date(1991, 3, 15), 253)
    assert number.startswith("37011219910315253")
    assert is_valid_resident_id(number)
    assert make_resident_id("110105", date(1949, 12, 31), 2) == "11010519491231002X"


@pytest.mark.parametrize(
    ("region", "seq"), [("37011", 1), ("3701121", 1), ("37011a", 1), ("370112", 1000), ("370112", -1)]
)
def test_make_resident_id_rejects_bad_parts(region: str, seq: int) -> None:
    with pytest.raises(ValueError):
        make_resident_id(region, date(1991, 3, 15), seq)


def test_mask_keeps_first_ten_and_last_four() -> None:
    assert mask_id_number("370112199103152531") == "3701121991****2531"
    assert mask_id_number("11010519491231002X") == "1101051949****002X"


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("370112910315253", "37011291****253"),  # first-generation 15-digit id: month and day hidden
        ("E12345678", "E1*****78"),  # passport
        ("H1234567890", "H1*******90"),  # Hong Kong/Macao permit
        ("12345", "1***5"),
        ("1234", "****"),
        ("", ""),
    ],
)
def test_mask_shorter_numbers(number: str, masked: str) -> None:
    assert mask_id_number(number) == masked
    assert len(mask_id_number(number)) == len(number)

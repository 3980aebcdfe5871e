"""Text made storable for PostgreSQL: NUL escaped, lone surrogates replaced, the rest untouched."""

from __future__ import annotations

import pytest

from payments.storable import is_storable, storable, storable_text

pytestmark = pytest.mark.unit


def test_plain_text_is_left_as_it_is() -> None:
    payload = {"subject": "考试报名费", "amount": {"total": 5600}, "list": ["a", 1, None]}
    assert is_storable(payload)
    assert storable(payload) == payload
    text = "考试报名费"
    assert storable_text(text) is text


def test_nul_and_lone_surrogates_are_replaced_everywhere() -> None:
    payload = {"a\x00": ["x\x00y", {"s": "a\ud800b"}], "n": 1}
    assert not is_storable(payload)
    assert storable(payload) == {"a\\u0000": ["x\\u0000y", {"s": "a\ufffdb"}], "n": 1}
    assert storable(storable(payload)) == storable(payload)  # escaping twice changes nothing
    assert not is_storable(("ok", "\x00")) and not is_storable(("\udfff",))

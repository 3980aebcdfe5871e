"""Key names: one hash tag, readable subjects, nothing ambiguous."""

from __future__ import annotations

import itertools

import pytest

from ratelimit.keys import MAX_SUBJECT_CHARS, encode_subject, rule_key, rule_prefix

pytestmark = pytest.mark.unit


def test_keys_share_the_hash_tag_and_keep_plain_subjects_readable() -> None:
    assert rule_key("login-ip", "203.0.113.7") == "eg:{rl}:login-ip:203.0.113.7"
    assert rule_key("login-ip", "2001:db8::1") == "eg:{rl}:login-ip:2001:db8::1"
    assert rule_key("scores.lookup", "zhang.san@example.cn") == "eg:{rl}:scores.lookup:zhang.san@example.cn"
    assert rule_prefix("global") + encode_subject("") == rule_key("global", "")


def test_odd_subjects_are_percent_encoded() -> None:
    assert encode_subject("张三") == "%E5%BC%A0%E4%B8%89"
    assert encode_subject("a b{c}*%") == "a%20b%7Bc%7D%2A%25"
    assert encode_subject("x\r\nSET") == "x%0D%0ASET"
    assert encode_subject("\udcff") == "%ED%B3%BF"  # undecodable header bytes do not crash


def test_long_subjects_are_hashed() -> None:
    long = "a" * (MAX_SUBJECT_CHARS + 1)
    assert encode_subject("a" * MAX_SUBJECT_CHARS) == "a" * MAX_SUBJECT_CHARS
    hashed = encode_subject(long)
    assert hashed.startswith("#") and len(hashed) == 33
    assert encode_subject("张" * 40) != encode_subject("张" * 41)


def test_encoding_is_injective_on_tricky_inputs() -> None:
    alphabet = ["a", "%", "#", "%25", "%2", "5", "~", " ", "张", ":"]
    subjects = {"".join(parts) for n in range(4) for parts in itertools.product(alphabet, repeat=n)}
    subjects |= {"a" * n for n in range(90, 200)} | {"#" + "0" * 32, "%" * 40}
    encoded = {encode_subject(s) for s in subjects}
    assert len(encoded) == len(subjects)

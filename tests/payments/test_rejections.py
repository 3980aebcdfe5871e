"""Summaries of notifications failing verification, and which of them get a ledger row."""

from __future__ import annotations

import hashlib

import pytest

from payments.rejections import PREFIX_BYTES, RejectionSampler, summary

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_of_each_sender_and_reason_per_interval_is_recorded_then_counted() -> None:
    clock = Clock()
    sampler = RejectionSampler(60, 100, clock=clock)
    assert sampler.admit("alipay", "bad_signature", "203.0.113.1") == 0
    assert [sampler.admit("alipay", "bad_signature", "203.0.113.1") for _ in range(5)] == [None] * 5
    assert sampler.admit("alipay", "missing_signature", "203.0.113.1") == 0  # another reason
    assert sampler.admit("wechat", "bad_signature", "203.0.113.1") == 0  # another provider
    assert sampler.admit("alipay", "bad_signature", "203.0.113.2") == 0  # another sender
    clock.now += 60
    assert sampler.admit("alipay", "bad_signature", "203.0.113.1") == 5  # the ones left out before
    assert sampler.admit("alipay", "bad_signature", "203.0.113.1") is None
    clock.now += 600  # intervals with nothing between: nothing carried
    assert sampler.admit("alipay", "bad_signature", "203.0.113.1") == 0
    assert sampler.unrecorded == 6


def test_rows_per_interval_are_capped_whatever_the_number_of_senders() -> None:
    sampler = RejectionSampler(60, 3, clock=Clock())
    admitted = [sampler.admit("alipay", "bad_signature", f"2001:db8::{n:x}") for n in range(50)]
    assert admitted == [0, 0, 0] + [None] * 47


def test_a_summary_is_bounded_and_storable() -> None:
    body = b"a\x00" + "考".encode() * 40_000
    kept = summary(body, "203.0.113.9", unrecorded_before=3,
                   headers={"Wechatpay-Signature": "S" * 5000, "Wechatpay-Serial": None})
    assert kept["size_bytes"] == len(body) and kept["sha256"] == hashlib.sha256(body).hexdigest()
    assert kept["prefix"].startswith("a\\u0000考") and len(kept["prefix"].encode()) <= PREFIX_BYTES + 8
    assert kept["headers"] == {"Wechatpay-Signature": "S" * 512, "Wechatpay-Serial": None}
    assert kept["sender"] == "203.0.113.9" and kept["unrecorded_before"] == 3

"""Key names: one prefix, the pool and its answers in one cluster slot, ids validated."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from captcha import keys
from captcha.pool import new_image_id

pytestmark = pytest.mark.unit

SIGNATURE = "ab" * 32


def test_every_key_starts_with_the_prefix() -> None:
    names = [keys.POOL, keys.POOL_STATS, keys.answer_key(new_image_id()), keys.pow_used_key(SIGNATURE)]
    assert all(name.startswith("eg:captcha:") for name in names)


def test_take_script_keys_share_one_slot() -> None:
    slot = key_slot(keys.POOL.encode())
    assert key_slot(keys.POOL_STATS.encode()) == slot
    assert {key_slot(keys.answer_key(new_image_id()).encode()) for _ in range(50)} == {slot}


def test_image_ids_are_checked_before_they_become_keys() -> None:
    assert keys.is_image_id(new_image_id())
    for bad in ("", "short", "a" * 65, "abc/def+ghi=jklmnop", "x" * 20 + "\n", "{pool}" + "a" * 20):
        assert not keys.is_image_id(bad)
        with pytest.raises(ValueError):
            keys.answer_key(bad)


def test_pow_used_key_takes_a_hex_signature_only() -> None:
    assert keys.pow_used_key(SIGNATURE) == "eg:captcha:pow:used:" + SIGNATURE
    for bad in ("", "AB" * 32, "ab" * 31, "zz" * 32):
        with pytest.raises(ValueError):
            keys.pow_used_key(bad)

"""What the gateway needs as a merchant: the merchant's key files only, and a base URL per provider."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway import config
from payments import keys as payment_keys
from payments.clients import ProviderClient
from payments.errors import KeysInvalid, KeysMissing
from payments.keys import MerchantKeys, PaymentKeys

pytestmark = pytest.mark.unit


def merchant_copy(keys_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in payment_keys.MERCHANT_FILES:
        shutil.copy(keys_dir / name, target / name)
    return target


def test_the_merchant_files_are_our_private_keys_and_the_platforms_public_ones() -> None:
    assert set(payment_keys.MERCHANT_FILES) < set(payment_keys.FILES)
    assert sorted(payment_keys.MERCHANT_FILES) == sorted([
        "alipay_app_private.pem", "alipay_platform_public.pem", "wechat_merchant_private.pem",
        "wechat_platform_public.pem", "wechat_merchant_serial.txt", "wechat_platform_serial.txt",
        "wechat_apiv3_key.txt"])


def test_a_directory_of_merchant_files_loads_as_the_merchant_only(keys_dir: Path, keys: PaymentKeys,
                                                                  tmp_path: Path) -> None:
    directory = merchant_copy(keys_dir, tmp_path / "merchant")
    merchant = payment_keys.load_merchant(directory)
    assert type(merchant) is MerchantKeys and not hasattr(merchant, "alipay_platform_private")
    assert merchant.alipay_app_private.private_numbers() == keys.alipay_app_private.private_numbers()
    assert merchant.wechat_platform_public.public_numbers() == keys.wechat_platform_public.public_numbers()
    assert (merchant.wechat_merchant_serial, merchant.wechat_apiv3_key) == (keys.wechat_merchant_serial,
                                                                             keys.wechat_apiv3_key)
    assert keys.wechat_apiv3_key.decode() not in repr(merchant)
    with pytest.raises(KeysMissing, match=r"_public\.pem|_private\.pem"):
        payment_keys.load(directory)  # the simulator needs both sides
    assert type(payment_keys.load_merchant(keys_dir)) is MerchantKeys  # a development set has it all


def test_a_merchant_directory_with_a_missing_or_mismatched_file_is_refused(keys_dir: Path, tmp_path: Path) -> None:
    directory = merchant_copy(keys_dir, tmp_path / "merchant")
    (directory / "wechat_apiv3_key.txt").unlink()
    with pytest.raises(KeysMissing, match=r"wechat_apiv3_key\.txt"):
        payment_keys.load_merchant(directory)
    shutil.copy(keys_dir / "wechat_apiv3_key.txt", directory)
    # Our public half beside the private key must be its own (a mixed-up directory signs with the wrong key).
    shutil.copy(keys_dir / "alipay_platform_public.pem", directory / "alipay_app_public.pem")
    with pytest.raises(KeysInvalid, match=r"does not match alipay_app_private\.pem"):
        payment_keys.load_merchant(directory)


def test_each_provider_has_its_own_base_url_following_the_simulator_unless_set(keys: PaymentKeys) -> None:
    assert (config.Settings().alipay_url, config.Settings().wechat_url) == ("http://127.0.0.1:8090",) * 2
    moved = config.Settings(paysim_url="http://sim:1")
    assert (moved.alipay_url, moved.wechat_url) == ("http://sim:1", "http://sim:1")
    real = config.Settings(alipay_url="https://openapi.alipay.com", wechat_url="https://api.mch.weixin.qq.com")
    client = ProviderClient(real, keys)
    assert client._alipay_gateway == "https://openapi.alipay.com/gateway.do"
    assert client._wechat_base == "https://api.mch.weixin.qq.com"
    assert client.refund_notify_url() == "http://127.0.0.1:8080/api/v1/payments/wechat/refund-notify"
    with pytest.raises(config.ConfigError, match="EXAMGATE_WECHAT_URL"):
        config.load({"EXAMGATE_WECHAT_URL": "api.mch.weixin.qq.com", "EXAMGATE_SECRET_KEY": "k" * 32,
                     "EXAMGATE_ADMIN_TOKENS": "ops:" + "t" * 16, "EXAMGATE_METRICS_TOKEN": "m" * 16})
    assert config.Settings().alipay_seller_id == "2088000000000001"

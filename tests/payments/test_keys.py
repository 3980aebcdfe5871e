"""Key files: generated private (0600 in a 0700 directory), never overwritten by accident, loaded with clear errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from examgate.cli import main
from payments import keys as payment_keys
from payments.errors import KeysInvalid, KeysMissing, PaymentError
from payments.keys import PaymentKeys

pytestmark = pytest.mark.unit


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_writes_every_file_private(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    written = payment_keys.generate(directory)
    assert sorted(p.name for p in written) == sorted(payment_keys.FILES)
    assert mode(directory) == 0o700
    assert {mode(path) for path in written} == {0o600}
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_generate_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    payment_keys.generate(tmp_path)
    before = (tmp_path / "alipay_app_private.pem").read_bytes()
    with pytest.raises(FileExistsError, match=r"alipay_app_private\.pem"):
        payment_keys.generate(tmp_path)
    assert (tmp_path / "alipay_app_private.pem").read_bytes() == before
    payment_keys.generate(tmp_path, force=True)
    assert (tmp_path / "alipay_app_private.pem").read_bytes() != before


def test_load_gives_rsa_2048_keys_serials_and_the_v3_key(keys_dir: Path, keys: PaymentKeys) -> None:
    assert keys.alipay_app_private.key_size == 2048
    assert keys.wechat_platform_public.public_numbers() == keys.wechat_platform_private.public_key().public_numbers()
    assert len(keys.wechat_merchant_serial) == 40 and keys.wechat_merchant_serial != keys.wechat_platform_serial
    assert len(keys.wechat_apiv3_key) == 32
    assert keys.wechat_apiv3_key.decode() not in repr(keys)


def test_a_missing_file_is_named_with_the_command_that_writes_it(tmp_path: Path, keys_dir: Path) -> None:
    for name in payment_keys.FILES:
        (tmp_path / name).write_bytes((keys_dir / name).read_bytes())
    (tmp_path / "wechat_platform_public.pem").unlink()
    with pytest.raises(KeysMissing) as caught:
        payment_keys.load(tmp_path)
    assert isinstance(caught.value, PaymentError)
    assert caught.value.path == tmp_path / "wechat_platform_public.pem"
    assert "wechat_platform_public.pem" in str(caught.value)
    assert "examgate keys generate" in str(caught.value)


def test_unusable_files_are_refused(tmp_path: Path, keys_dir: Path) -> None:
    for name in payment_keys.FILES:
        (tmp_path / name).write_bytes((keys_dir / name).read_bytes())
    (tmp_path / "alipay_app_public.pem").write_bytes((keys_dir / "alipay_platform_public.pem").read_bytes())
    with pytest.raises(KeysInvalid, match="does not match"):
        payment_keys.load(tmp_path)
    (tmp_path / "alipay_app_public.pem").write_bytes((keys_dir / "alipay_app_public.pem").read_bytes())
    (tmp_path / "wechat_apiv3_key.txt").write_text("too-short\n")
    with pytest.raises(KeysInvalid, match="32 bytes"):
        payment_keys.load(tmp_path)
    (tmp_path / "wechat_apiv3_key.txt").write_bytes((keys_dir / "wechat_apiv3_key.txt").read_bytes())
    (tmp_path / "alipay_platform_private.pem").write_text("not a key")
    with pytest.raises(KeysInvalid, match=r"alipay_platform_private\.pem"):
        payment_keys.load(tmp_path)


def test_ensure_generates_once_then_loads_the_same_keys(tmp_path: Path) -> None:
    first = payment_keys.ensure(tmp_path / "new")
    second = payment_keys.ensure(tmp_path / "new")
    assert first.wechat_merchant_serial == second.wechat_merchant_serial
    assert first.wechat_apiv3_key == second.wechat_apiv3_key


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"EXAMGATE_SECRETS_FILE": str(tmp_path / "secrets.json"), **extra}


def test_cli_keys_generate_refuses_overwrite_without_force(tmp_path: Path) -> None:
    runner = CliRunner()
    target = tmp_path / "cli-keys"
    first = runner.invoke(main, ["keys", "generate", "--dir", str(target)], env=cli_env(tmp_path))
    assert first.exit_code == 0, first.output
    assert "11 files written" in first.output
    again = runner.invoke(main, ["keys", "generate", "--dir", str(target)], env=cli_env(tmp_path))
    assert again.exit_code == 1 and "already exist" in again.output and "--force" in again.output
    forced = runner.invoke(main, ["keys", "generate", "--dir", str(target), "--force"], env=cli_env(tmp_path))
    assert forced.exit_code == 0, forced.output
    payment_keys.load(target)


def test_cli_keys_generate_defaults_to_the_keys_dir_setting(tmp_path: Path) -> None:
    target = tmp_path / "from-env"
    result = CliRunner().invoke(main, ["keys", "generate"], env=cli_env(tmp_path, EXAMGATE_KEYS_DIR=str(target)))
    assert result.exit_code == 0, result.output
    assert (target / "wechat_apiv3_key.txt").exists()


def test_cli_paysim_without_keys_says_how_to_make_them(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["paysim"], env=cli_env(tmp_path, EXAMGATE_KEYS_DIR=str(tmp_path / "none")))
    assert result.exit_code == 1
    assert "examgate keys generate" in result.output and "missing" in result.output

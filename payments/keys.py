"""Provider keys: generate a development set, load it into ``PaymentKeys``.

A development directory holds both sides: our Alipay app key pair and WeChat merchant key
pair (we sign requests, the provider verifies), and the providers' platform key pairs (the
provider signs notifications and responses, we verify), plus the WeChat API v3 key that
encrypts notification resources. The simulator (``examgate paysim``) plays the providers and
loads both sides (``load``). The gateway and the worker are the merchant and load only what a
merchant has (``load_merchant``, ``MERCHANT_FILES``): our two private keys and the WeChat
merchant certificate's serial, the platforms' public keys and the WeChat platform serial, and
the v3 key; a production directory holds those files and nothing else.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from core import keyfiles
from payments.errors import KeysInvalid, KeysMissing

__all__ = ["FILES", "MERCHANT_FILES", "KeysInvalid", "KeysMissing", "MerchantKeys", "PaymentKeys", "ensure",
           "generate", "load", "load_merchant"]

RSA_BITS = 2048
APIV3_KEY_LEN = 32

# The RSA key pairs: (private file, public file) per name.
PAIRS = ("alipay_app", "alipay_platform", "wechat_merchant", "wechat_platform")
SERIALS = ("wechat_merchant", "wechat_platform")
APIV3_FILE = "wechat_apiv3_key.txt"
FILES: tuple[str, ...] = (
    *(f"{name}_{half}.pem" for name in PAIRS for half in ("private", "public")),
    *(f"{name}_serial.txt" for name in SERIALS),
    APIV3_FILE,
)
# What the merchant (the gateway, the worker) needs: its own private keys, the platforms' public keys.
MERCHANT_PRIVATE = ("alipay_app", "wechat_merchant")
PLATFORM_PUBLIC = ("alipay_platform", "wechat_platform")
MERCHANT_FILES: tuple[str, ...] = (
    *(f"{name}_private.pem" for name in MERCHANT_PRIVATE),
    *(f"{name}_public.pem" for name in PLATFORM_PUBLIC),
    *(f"{name}_serial.txt" for name in SERIALS),
    APIV3_FILE,
)


@dataclass(frozen=True)
class MerchantKeys:
    """The merchant's side: what the gateway and the worker sign with and verify against."""

    alipay_app_private: rsa.RSAPrivateKey  # signs our requests to Alipay
    alipay_platform_public: rsa.RSAPublicKey  # verifies Alipay's notifications and replies
    wechat_merchant_private: rsa.RSAPrivateKey  # signs our requests to WeChat Pay
    wechat_merchant_serial: str  # our merchant certificate's serial, named in each request
    wechat_platform_public: rsa.RSAPublicKey  # verifies WeChat Pay's notifications and replies
    wechat_platform_serial: str
    wechat_apiv3_key: bytes  # opens WeChat Pay's encrypted notification resources

    def __repr__(self) -> str:  # never print key material
        return (f"{type(self).__name__}(wechat_merchant_serial={self.wechat_merchant_serial!r}, "
                f"wechat_platform_serial={self.wechat_platform_serial!r})")


@dataclass(frozen=True, repr=False)
class PaymentKeys(MerchantKeys):
    """Every key of both providers, both sides: the merchant's and the platforms' (the simulator, tests)."""

    alipay_app_public: rsa.RSAPublicKey
    alipay_platform_private: rsa.RSAPrivateKey
    wechat_merchant_public: rsa.RSAPublicKey
    wechat_platform_private: rsa.RSAPrivateKey


def generate(keys_dir: str | Path, force: bool = False) -> list[Path]:
    """Write a fresh development key set (files 0600, a new directory 0700); return the files written.

    Raises ``FileExistsError`` naming the files already there unless ``force``.
    """
    directory = Path(keys_dir)
    existing = [directory / name for name in FILES if (directory / name).exists()]
    if existing and not force:
        raise FileExistsError(f"payment keys already exist ({', '.join(map(str, existing))}); "
                              "use --force to replace them")
    keyfiles.make_private_dir(directory)
    written = []
    for name, content in _new_key_files().items():
        written.append(keyfiles.write_private(directory / name, content))
    return written


def load(keys_dir: str | Path) -> PaymentKeys:
    """Read every key of both sides from ``keys_dir`` (the simulator); ``KeysMissing`` names a missing file."""
    directory = Path(keys_dir)
    values: dict[str, object] = {}
    for name in PAIRS:
        private = _load_private(directory, f"{name}_private.pem")
        public = _load_public(directory, f"{name}_public.pem")
        if private.public_key().public_numbers() != public.public_numbers():
            raise KeysInvalid(directory / f"{name}_public.pem", f"does not match {name}_private.pem")
        values[f"{name}_private"], values[f"{name}_public"] = private, public
    values.update(_shared(directory))
    return PaymentKeys(**values)  # type: ignore[arg-type]


def load_merchant(keys_dir: str | Path) -> MerchantKeys:
    """Read the merchant's keys (``MERCHANT_FILES``) from ``keys_dir``; the platforms' private keys are not needed.

    A public half of our own pairs found beside its private key must match it (a mixed-up
    directory is refused rather than signing with a key the provider does not know).
    """
    directory = Path(keys_dir)
    values: dict[str, object] = {}
    for name in MERCHANT_PRIVATE:
        private = values[f"{name}_private"] = _load_private(directory, f"{name}_private.pem")
        if (directory / f"{name}_public.pem").exists():
            public = _load_public(directory, f"{name}_public.pem")
            if private.public_key().public_numbers() != public.public_numbers():
                raise KeysInvalid(directory / f"{name}_public.pem", f"does not match {name}_private.pem")
    for name in PLATFORM_PUBLIC:
        values[f"{name}_public"] = _load_public(directory, f"{name}_public.pem")
    values.update(_shared(directory))
    return MerchantKeys(**values)  # type: ignore[arg-type]


def _shared(directory: Path) -> dict[str, object]:
    """The serials and the v3 key: both sides hold them."""
    values: dict[str, object] = {f"{name}_serial": _load_serial(directory, f"{name}_serial.txt") for name in SERIALS}
    values["wechat_apiv3_key"] = _load_apiv3_key(directory)
    return values


def ensure(keys_dir: str | Path) -> PaymentKeys:
    """Generate the key set if the directory has none of its files, then load it (tests, ``make demo``)."""
    directory = Path(keys_dir)
    keyfiles.make_private_dir(directory)
    with keyfiles.locked(directory):  # two processes starting at once must not write two different sets
        if not any((directory / name).exists() for name in FILES):
            generate(directory)
    return load(directory)


def _new_key_files() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name in PAIRS:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        files[f"{name}_private.pem"] = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        files[f"{name}_public.pem"] = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for name in SERIALS:
        # A certificate serial number as WeChat shows it: 40 upper-case hex digits.
        files[f"{name}_serial.txt"] = (secrets.token_hex(20).upper() + "\n").encode()
    # WeChat's API v3 key is a 32-character string set in the merchant console; used as bytes.
    alphabet = string.ascii_letters + string.digits
    files[APIV3_FILE] = ("".join(secrets.choice(alphabet) for _ in range(APIV3_KEY_LEN)) + "\n").encode()
    return files








def _read(directory: Path, name: str) -> bytes:
    path = directory / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeysMissing(path, directory) from None
    except OSError as exc:
        raise KeysInvalid(path, f"cannot read: {exc.strerror or exc}") from None


def _load_private(directory: Path, name: str) -> rsa.RSAPrivateKey:
    path = directory / name
    try:
        key = serialization.load_pem_private_key(_read(directory, name), password=None)
    except (ValueError, TypeError) as exc:
        raise KeysInvalid(path, f"not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeysInvalid(path, f"not an RSA private key ({type(key).__name__})")
    _check_size(key.key_size, path)
    return key


def _load_public(directory: Path, name: str) -> rsa.RSAPublicKey:
    path = directory / name
    try:
        key = serialization.load_pem_public_key(_read(directory, name))
    except (ValueError, TypeError) as exc:
        raise KeysInvalid(path, f"not a PEM public key ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeysInvalid(path, f"not an RSA public key ({type(key).__name__})")
    _check_size(key.key_size, path)
    return key


def _check_size(bits: int, path: Path) -> None:
    if bits < RSA_BITS:
        raise KeysInvalid(path, f"RSA key of {bits} bits, at least {RSA_BITS} needed")


def _load_serial(directory: Path, name: str) -> str:
    serial = _read(directory, name).decode("ascii", "replace").strip()
    if not serial or not all(c in string.hexdigits for c in serial):
        raise KeysInvalid(directory / name, "not a hexadecimal certificate serial number")
    return serial.upper()


def _load_apiv3_key(directory: Path) -> bytes:
    key = _read(directory, APIV3_FILE).strip()
    if len(key) != APIV3_KEY_LEN:
        raise KeysInvalid(directory / APIV3_FILE, f"the API v3 key must be {APIV3_KEY_LEN} bytes, found {len(key)}")
    return key

"""The electronic certificate's signature: Ed25519 over the whole PDF, carried in the file itself.

A signed PDF is the document as rendered followed by one line, a PDF comment after ``%%EOF``
that viewers ignore::

    %EXAMGATE-SIGNATURE ed25519 <key id> <cert_no> <signature>\\n

``signature`` is the unpadded base64url Ed25519 signature of every byte before it — the PDF and
the line up to and including the space before the signature — so the certificate number is
signed with the document and no byte of either can change unnoticed. ``key id`` is the first 16
hex digits of the SHA-256 of the raw public key: a check names the key that signed.

Why not a PDF signature (PAdES, an ``/Sig`` field with a ``/ByteRange``): it needs a CMS signer,
an X.509 certificate chain and pyHanko with its validation stack (pyhanko-certvalidator, oscrypto,
lxml) for one route. A viewer would show such a signature as untrusted anyway (our own chain);
the signature here is made and checked with the ``cryptography`` package the project already
uses, by our route (``POST /api/v1/certificates/check-pdf``), where a verifier goes.

The key pair lives in ``EXAMGATE_KEYS_DIR`` beside the payment keys: ``SIGNING_KEY_FILE`` (PKCS#8
PEM, 0600) and ``PUBLIC_KEY_FILE``. ``ensure_key`` makes it on first use (under a lock, so
processes starting together agree on one key) and ``examgate keys generate`` writes it too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core import keyfiles

__all__ = ["PUBLIC_KEY_FILE", "SIGNING_KEY_FILE", "Checked", "SignatureInvalid", "Signer", "check",
           "ensure_key", "generate_key", "load_key"]

SIGNING_KEY_FILE = "certificate_signing_ed25519.pem"
PUBLIC_KEY_FILE = "certificate_signing_ed25519.pub.pem"
MARK = b"%EXAMGATE-SIGNATURE ed25519 "
_LINE = re.compile(rb"%EXAMGATE-SIGNATURE ed25519 ([0-9a-f]{16}) ([0-9A-Za-z]{6,32}) ([A-Za-z0-9_-]{86})\n")
LONGEST_LINE = 200  # the signature line is at most this long


class SignatureInvalid(Exception):
    """A PDF whose signature does not hold; ``reason`` is one of not_pdf, unsigned, malformed, unknown_key, mismatch."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"certificate PDF signature invalid: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Checked:
    """A genuine signed certificate PDF: the number it was signed for and the key that signed it."""

    cert_no: str
    key_id: str


def key_id(public: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the SHA-256 of the raw public key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer:
    """Signs certificate PDFs and checks them, with one Ed25519 key pair."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    def sign(self, pdf: bytes, cert_no: str) -> bytes:
        """``pdf`` with its signature line appended."""
        if not pdf.startswith(b"%PDF-"):
            raise ValueError("not a PDF")
        if not pdf.endswith(b"\n"):
            pdf += b"\n"
        signed = pdf + MARK + f"{self.key_id} {cert_no} ".encode("ascii")
        signature = base64.urlsafe_b64encode(self._private.sign(signed)).rstrip(b"=")
        return signed + signature + b"\n"

    def check(self, data: bytes) -> Checked:
        """The number and key of a genuine signed PDF; ``SignatureInvalid`` with the reason otherwise."""
        return check(data, {self.key_id: self.public})


def check(data: bytes, keys: dict[str, Ed25519PublicKey]) -> Checked:
    """``Signer.check`` against any of ``keys`` (key id → public key)."""
    if not data.startswith(b"%PDF-"):
        raise SignatureInvalid("not_pdf")
    start = data.rfind(MARK, max(0, len(data) - LONGEST_LINE))
    if start < 0:
        raise SignatureInvalid("unsigned")
    found = _LINE.fullmatch(data, start)
    if found is None or data[start - 1:start] != b"\n":
        raise SignatureInvalid("malformed")
    key, cert_no, signature = (part.decode("ascii") for part in found.groups())
    public = keys.get(key)
    if public is None:
        raise SignatureInvalid("unknown_key")
    try:
        raw = base64.urlsafe_b64decode(signature + "==")
        public.verify(raw, data[:found.start(3)])
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureInvalid("mismatch") from None
    return Checked(cert_no, key)


def generate_key(keys_dir: str | Path, *, force: bool = False) -> list[Path]:
    """Write a new key pair (files 0600); ``FileExistsError`` when one is there, unless ``force``."""
    directory = Path(keys_dir)
    private_path, public_path = directory / SIGNING_KEY_FILE, directory / PUBLIC_KEY_FILE
    if private_path.exists() and not force:
        raise FileExistsError(f"certificate signing key already exists ({private_path}); use --force to replace it")
    keyfiles.make_private_dir(directory)
    private = Ed25519PrivateKey.generate()
    keyfiles.write_private(private_path, private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    keyfiles.write_private(public_path, private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return [private_path, public_path]


def load_key(keys_dir: str | Path) -> Signer:
    """The signer of the key pair in ``keys_dir``; ``FileNotFoundError`` or ``ValueError`` when it is missing or bad."""
    private = serialization.load_pem_private_key((Path(keys_dir) / SIGNING_KEY_FILE).read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{SIGNING_KEY_FILE} is not an Ed25519 key")
    return Signer(private)


def ensure_key(keys_dir: str | Path) -> Signer:
    """Generate the key pair if ``keys_dir`` has none, then load it."""
    directory = Path(keys_dir)
    keyfiles.make_private_dir(directory)
    with keyfiles.locked(directory):  # two processes starting at once must not write two different keys
        if not (directory / SIGNING_KEY_FILE).exists():
            generate_key(directory)
    return load_key(directory)






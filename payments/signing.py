"""RSA SHA256withRSA (PKCS#1 v1.5) signatures in base64: what both providers call RSA2 / RSA2048."""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def rsa_sign(message: bytes, private_key: rsa.RSAPrivateKey) -> str:
    """The base64 SHA256withRSA signature of ``message``."""
    return base64.b64encode(private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def rsa_verify(message: bytes, signature: object, public_key: rsa.RSAPublicKey) -> bool:
    """Whether ``signature`` (base64) is ``message`` signed by the holder of ``public_key``; never raises."""
    if not isinstance(signature, str | bytes) or not signature:
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False
    return True

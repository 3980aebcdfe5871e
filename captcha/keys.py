"""Redis key names of the captchas.

The image pool and every image answer share the hash tag ``{pool}``:
``take.lua`` pops an entry whose id it learns only from the entry itself and writes that
id's answer key, so the answer key must be in the pool list's slot. The script gets the
answer-key prefix from here (ARGV), never a literal name, so naming stays in this module.
The trade-off: all image captcha traffic lands on one Redis Cluster shard, some 5-10 µs
of Redis CPU per take and per check, far below one shard's capacity at any realistic
captcha rate. Proof-of-work replay keys are single-key commands and keep no tag, so
they spread over the cluster.
"""

from __future__ import annotations

import re

__all__ = [
    "ANSWER_PREFIX", "POOL", "POOL_STATS", "POW_USED_PREFIX", "PREFIX",
    "answer_key", "is_image_id", "pow_used_key",
]

PREFIX = "eg:captcha:"
POOL = "eg:captcha:{pool}:images"
POOL_STATS = "eg:captcha:{pool}:stats"
ANSWER_PREFIX = "eg:captcha:{pool}:answer:"
POW_USED_PREFIX = "eg:captcha:pow:used:"

# Image ids are ``secrets.token_urlsafe(16)`` (22 characters); accept a little more, never a separator.
_IMAGE_ID = re.compile(r"[A-Za-z0-9_-]{16,64}").fullmatch
_SIGNATURE = re.compile(r"[0-9a-f]{64}").fullmatch


def is_image_id(image_id: str) -> bool:
    """True when ``image_id`` has the shape of an id the pool hands out."""
    return _IMAGE_ID(image_id) is not None


def answer_key(image_id: str) -> str:
    """The single-use answer of one issued image: ``eg:captcha:{pool}:answer:<id>``."""
    if not is_image_id(image_id):
        raise ValueError(f"not a captcha image id: {image_id!r}")
    return ANSWER_PREFIX + image_id


def pow_used_key(signature: str) -> str:
    """Marks one proof-of-work challenge as spent: ``eg:captcha:pow:used:<hex signature>``."""
    if _SIGNATURE(signature) is None:
        raise ValueError("not a hex SHA-256 signature")
    return POW_USED_PREFIX + signature

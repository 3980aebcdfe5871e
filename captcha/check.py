"""The one captcha check of a protected POST: the body's ``captcha`` field against the route's mode.

A captcha is consumed by its first use, right or wrong: an image answer by GETDEL, a
proof-of-work solution by ``SET NX`` on its signature. Each check is one Redis command,
so it shares an auto-pipelined batch with the request's other commands, and everything
that can be refused without Redis (shape, kind, signature, expiry) is refused first.
"""

from __future__ import annotations

import hmac
import unicodedata
from typing import Literal

from captcha import keys
from captcha.errors import CaptchaInvalid
from captcha.pow import consume_solution
from core.redis import AutoPipeline

__all__ = ["MODES", "Mode", "accepts", "consume"]

Mode = Literal["image", "pow", "either", "off"]
MODES: tuple[str, ...] = ("image", "pow", "either", "off")

# Longer than any answer a person types (5 digits, maybe spaced or full-width); checked before normalising.
_MAX_ANSWER_CHARS = 32


def accepts(mode: str, kind: str) -> bool:
    """True when a route in ``mode`` takes a captcha of ``kind`` (image or pow)."""
    if mode not in MODES:
        raise ValueError(f"unknown captcha mode {mode!r}")
    return kind in ("image", "pow") and mode in (kind, "either")


def _normalise(answer: str) -> bytes:
    """The answer as typed, compared as ASCII: full-width digits (Chinese IMEs) folded, spaces dropped."""
    folded = unicodedata.normalize("NFKC", answer)
    return "".join(folded.split()).encode("utf-8")


async def _consume_image(client: AutoPipeline, captcha: dict[object, object]) -> None:
    image_id, answer = captcha.get("id"), captcha.get("answer")
    if not isinstance(image_id, str) or not keys.is_image_id(image_id):
        raise CaptchaInvalid("malformed")
    if not isinstance(answer, str) or len(answer) > _MAX_ANSWER_CHARS:
        raise CaptchaInvalid("malformed")
    stored = await client.getdel(keys.answer_key(image_id))
    if stored is None:
        raise CaptchaInvalid("unknown")
    if not hmac.compare_digest(stored, _normalise(answer)):
        raise CaptchaInvalid("wrong_answer")


async def consume(
    client: AutoPipeline,
    captcha: object,
    *,
    mode: str,
    hmac_key: bytes,
    now: float | None = None,
) -> None:
    """Pass, or raise ``CaptchaInvalid``; ``captcha`` is the body's field, ``mode`` the route's live setting."""
    if mode not in MODES:
        raise ValueError(f"unknown captcha mode {mode!r}")
    if mode == "off":
        return
    if captcha is None:
        raise CaptchaInvalid("missing")
    if not isinstance(captcha, dict):
        raise CaptchaInvalid("malformed")
    kind = captcha.get("kind")
    if kind not in ("image", "pow"):
        raise CaptchaInvalid("malformed")
    if not accepts(mode, kind):
        raise CaptchaInvalid("wrong_kind")
    if kind == "image":
        await _consume_image(client, captcha)
    else:
        await consume_solution(client, hmac_key, captcha.get("payload"), now=now)

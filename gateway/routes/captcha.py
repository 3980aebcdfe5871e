"""Captchas for candidates: a pre-drawn image from the pool, or an ALTCHA proof-of-work challenge.

Images are never drawn here: the worker keeps the pool filled. An empty pool answers 503 with
Retry-After at once rather than drawing on the event loop at the worst possible moment: an image
takes 3-6 ms of CPU (measured on 2 shared cores), every one of them a stall of the process's
other requests, and a client that emptied the pool would choose how many. Issuance is throttled
per address and globally instead (``captcha-image-ip``, ``captcha-image-global``: the global rate
below what the worker draws, its burst below the pool's target), so the pool does not empty while
the worker runs; routes in ``either`` mode keep the proof-of-work when it does.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field

from captcha import pool, pow
from captcha.errors import PoolEmpty
from gateway import keys
from gateway.bodies import NO_STORE, json_response
from gateway.models import Reply
from gateway.routing import Answer, Routes

routes = Routes("Captcha")
POOL_EMPTY_RETRY_AFTER_S = 1.0


class ImageCaptcha(Reply):
    """An image captcha: its id, the picture, and how long its answer is accepted."""

    id: str
    image: str = Field(pattern="^data:image/png;base64,")
    expires_in: int = Field(description="seconds the answer is accepted")


class PowChallenge(Reply):
    """An ALTCHA proof-of-work challenge."""

    algorithm: Literal["SHA-256"]
    challenge: str
    maxnumber: int
    salt: str
    signature: str


# No HEAD: a HEAD would take an image from the pool and throw it away.
@routes.get("/api/v1/captcha/image", "captcha.image", summary="A pre-drawn image captcha (5 digits), single use",
            allow_head=False, answers={200: Answer(ImageCaptcha, "image")},
            errors={503: "service_unavailable: the image pool is empty (details.reason captcha_pool_empty); "
                         "or shed"})


async def image(request: web.Request) -> web.Response:
    """One image captcha (5 digits), its id, and how long its answer is accepted."""
    app = request.app
    issued = await pool.take(app[keys.REDIS], answer_ttl_s=app[keys.SETTINGS].captcha_answer_ttl_s,
                             counters=app[keys.CAPTCHA_TAKES])
    if issued is None:
        raise PoolEmpty(POOL_EMPTY_RETRY_AFTER_S)
    return json_response({"id": issued.id, "image": issued.data_url(), "expires_in": issued.expires_in_s},
                         headers=NO_STORE)


@routes.get("/api/v1/captcha/pow", "captcha.pow", allow_head=False,
            summary="An ALTCHA proof-of-work challenge; maxnumber is live config",
            answers={200: Answer(PowChallenge, "challenge")})
async def proof_of_work(request: web.Request) -> web.Response:
    """A signed ALTCHA challenge; its difficulty (``maxnumber``) is live config."""
    app = request.app
    challenge = pow.create_challenge(app[keys.POW_KEY], maxnumber=app[keys.LIVE].current.pow_maxnumber,
                                     ttl_s=app[keys.SETTINGS].pow_challenge_ttl_s)
    return json_response(challenge, headers=NO_STORE)

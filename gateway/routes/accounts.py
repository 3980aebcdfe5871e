"""Candidate registration: validated, captcha-guarded, hashed off the loop, written in one statement."""

from __future__ import annotations

import asyncio

from aiohttp import web

from core import candidates
from core.accounts import parse_registration
from gateway import keys
from gateway.bodies import json_response, read_json
from gateway.captcha_gate import guard


async def create_account(request: web.Request) -> web.Response:
    """Register a candidate: 201 ``{"candidate_id"}``; 422 with every bad field; 409 for a taken identity."""
    body = await read_json(request)
    # Validation costs no I/O and reveals nothing stored, so a form with a typo does not burn the captcha.
    registration = parse_registration(body)
    await guard(request, body, account=registration.username, id_number=registration.id_number)
    app = request.app
    hasher = app[keys.HASHER]
    hashed = await asyncio.gather(hasher.hash(registration.password),
                                  hasher.hash_answer(registration.security_answer), return_exceptions=True)
    for result in hashed:  # both awaited to the end, so no failure goes unretrieved
        if isinstance(result, BaseException):
            raise result
    password_hash, answer_hash = hashed
    assert isinstance(password_hash, str) and isinstance(answer_hash, str)
    candidate_id = await candidates.create(app[keys.PG], registration, password_hash=password_hash,
                                           answer_hash=answer_hash, redis=app[keys.REDIS])
    return json_response({"candidate_id": candidate_id}, status=201, headers={"Cache-Control": "no-store"})


def setup(app: web.Application) -> None:
    """Add the account routes."""
    app.router.add_post("/api/v1/accounts", create_account, name="accounts.create")

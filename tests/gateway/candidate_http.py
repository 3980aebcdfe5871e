"""Helpers for the candidate routes' tests: fast settings, unique registration bodies, live-config changes."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from core import phone_codes
from gateway import config, keys
from tests.gateway.test_app import make_settings

ADMIN_TOKEN = "ops-token-0123456789abcdefghijkl"
PASSWORD = "Qiu#2026pass"
ANSWER = "实验小学"
# argon2id small enough for tests (8 MiB, one pass): a few milliseconds a hash.
FAST_ARGON = {"EXAMGATE_ARGON2_MEMORY_KIB": "8192", "EXAMGATE_ARGON2_TIME_COST": "1"}


def settings(pg_dsn: str, redis_url: str, tmp_path: Path, **env: str) -> config.Settings:
    """Test settings with fast hashing and a known admin token."""
    return make_settings(pg_dsn, redis_url, tmp_path, EXAMGATE_ADMIN_TOKENS=f"ops:{ADMIN_TOKEN}",
                         EXAMGATE_MAX_BODY_BYTES="8192", **{**FAST_ARGON, **env})


def admin(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}", **extra}


def resident_id() -> str:
    """A random valid resident id (check digit and all)."""
    from core.idcards import make_resident_id

    born = date(1970, 1, 1) + timedelta(days=secrets.randbelow(365 * 30))
    return make_resident_id("370112", born, secrets.randbelow(1000))


def phone() -> str:
    return "139" + "".join(secrets.choice("0123456789") for _ in range(8))


def registration(**changes: Any) -> dict[str, Any]:
    """A valid, unique registration body (no captcha, no real SMS code yet: ``with_code`` adds one);
    ``changes`` override fields, and the confirmation follows the name and id number unless given."""
    body: dict[str, Any] = {
        "username": "u" + secrets.token_hex(5),
        "password": PASSWORD,
        "name": "张三",
        "id_type": "resident_id",
        "id_number": resident_id(),
        "phone": phone(),
        "email": "zhangsan@example.com",
        "security_question": "我的小学校名？",
        "security_answer": ANSWER,
        "educations": [{"cert_no": "10001120120600123", "school": "北京大学", "graduated_on": "2012-06",
                        "major": "经济学", "level": "bachelor", "mode": "full_time"}],
    }
    body.update(changes)
    if "confirmation" not in changes:
        body["confirmation"] = {"name": body.get("name"), "id_number": body.get("id_number")}
    body.setdefault("sms_code", "000000")
    return body


async def code_in_outbox(pg: Any, phone: str) -> str:
    """The code of the newest SMS to ``phone`` in the outbox (``pg``: a connection or pool)."""
    body = await pg.fetchval("SELECT body FROM sms_outbox WHERE phone = $1 ORDER BY id DESC LIMIT 1", phone)
    found = re.search(r"验证码为([0-9]{6})", body or "")
    assert found is not None, body
    return found[1]


async def sms_code(client: TestClient, phone: str, purpose: str = "register", **headers: str) -> str:
    """Ask the gateway for a code to ``phone`` (captcha off, or ``headers`` passing it) and read it from the outbox.

    The phone's send throttle is reset first: tests ask for several codes to one phone within its minute.
    """
    await client.app[keys.REDIS].delete(phone_codes.sent_key(phone))
    resp = await client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": purpose}, headers=headers)
    assert resp.status == 202, await resp.text()
    return await code_in_outbox(client.app[keys.PG], phone)


async def code_over_http(http: Any, base_url: str, pg: Any, phone: str, *, purpose: str = "register",
                         headers: dict[str, str] | None = None) -> str:
    """Ask a running gateway for a code to ``phone`` (``headers``: a load-test token, an address) and read it
    from the SMS outbox through ``pg`` (a connection or pool of the gateway's database)."""
    async with http.post(base_url + "/api/v1/sms-codes", json={"phone": phone, "purpose": purpose},
                         headers=headers or {}) as resp:
        assert resp.status == 202, await resp.text()
    return await code_in_outbox(pg, phone)


async def with_code(client: TestClient, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    """``body`` with a real registration code for its phone."""
    body["sms_code"] = await sms_code(client, body["phone"], **headers)
    return body


async def set_live(client: TestClient, patch: dict[str, Any]) -> int:
    """PATCH the live config through the admin API and wait until this app applies it."""
    resp = await client.patch("/admin/api/v1/config", json=patch,
                              headers=admin(**{"Content-Type": "application/merge-patch+json"}))
    assert resp.status == 200, await resp.text()
    version = int((await resp.json())["version"])
    deadline = time.monotonic() + 2
    while client.app[keys.LIVE].current.version < version:
        assert time.monotonic() < deadline, "the live config was not applied within 2 s"
        await asyncio.sleep(0.01)
    return version


async def captcha_off(client: TestClient) -> None:
    """Turn every captcha off (tests of other concerns)."""
    await set_live(client, {"captcha": {"routes": {"accounts.create": "off", "sessions.create": "off",
                                                   "password_resets.question.start": "off",
                                                   "password_resets.sms.start": "off",
                                                   "password_resets.*": "off", "sms_codes.create": "off",
                                                   "username_recoveries.create": "off"}}})


async def loadtest_token(client: TestClient, ttl_s: int = 600) -> str:
    resp = await client.post("/admin/api/v1/loadtest-tokens", json={"ttl_s": ttl_s}, headers=admin())
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["token"])


async def register(client: TestClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Register through the API (captcha must be off for accounts.create); the body used."""
    body = await with_code(client, body or registration())
    resp = await client.post("/api/v1/accounts", json=body)
    assert resp.status == 201, await resp.text()
    await client.app[keys.REDIS].delete(phone_codes.sent_key(body["phone"]))  # the tests' next code is not held up
    body["candidate_id"] = (await resp.json())["candidate_id"]
    return body


async def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    resp = await client.post("/api/v1/sessions", json={"username": username, "password": password})
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}

"""The SMS simulator's ``/sim/*`` routes for tests and demos: the messages delivered, the settings, the counters."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from aiohttp import web

from simulators.smssim import SIM, SimConfig

MAX_MESSAGES = 100_000
_PHONE_DIGITS = 11

# Each setting: its type and bounds (lists are phone numbers).
_BOUNDS: dict[str, tuple[float, float]] = {
    "latency_min_ms": (0, 60_000), "latency_max_ms": (0, 60_000), "failure_ratio": (0, 1), "lost_ratio": (0, 1),
    "rate_per_s": (0, 1_000_000), "phone_per_minute": (0, 1_000_000), "minute_s": (0.001, 86_400),
}


def routes() -> list[web.RouteDef]:
    """The ``/sim/*`` routes."""
    return [
        web.get("/sim/messages", sim_messages),
        web.get("/sim/config", sim_config),
        web.put("/sim/config", sim_set_config),
        web.get("/sim/stats", sim_stats),
        web.post("/sim/reset", sim_reset),
        web.get("/sim/healthz", sim_healthz),
    ]


async def sim_messages(request: web.Request) -> web.Response:
    """``?phone=…&limit=N``: the messages delivered (to that number), newest first."""
    sim = request.app[SIM]
    phone = request.query.get("phone")
    raw_limit = request.query.get("limit", "100")
    if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_MESSAGES:
        return _error(422, "validation_failed", "invalid query", fields={"limit": f"out_of_range_1_{MAX_MESSAGES}"})
    if phone is not None and not (len(phone) == _PHONE_DIGITS and phone.isascii() and phone.isdigit()):
        return _error(422, "validation_failed", "invalid query", fields={"phone": "not_a_mobile_number"})
    found = sim.by_phone.get(phone, []) if phone is not None else sim.delivered
    newest = found[::-1][:int(raw_limit)]
    return web.json_response({"messages": [message.as_dict() for message in newest]},
                             dumps=lambda data: json.dumps(data, ensure_ascii=False))


async def sim_config(request: web.Request) -> web.Response:
    """The settings in force."""
    return web.json_response(asdict(request.app[SIM].config), dumps=lambda data: json.dumps(data, ensure_ascii=False))


async def sim_set_config(request: web.Request) -> web.Response:
    """Change some settings (a JSON object of the fields to change); the settings in force after."""
    sim = request.app[SIM]
    raw = await request.read()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return _error(400, "malformed_body", "the body is not JSON")
    if not isinstance(data, dict):
        return _error(400, "malformed_body", "the body must be a JSON object")
    changed, problems = checked_config(data)
    if problems:
        return _error(422, "validation_failed", "invalid settings", fields=problems)
    for name, value in changed.items():
        setattr(sim.config, name, value)
    return await sim_config(request)


def checked_config(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings ``data`` asks for, and what is wrong with each that is wrong."""
    known = {f.name for f in fields(SimConfig)}
    problems = {name: "unknown_field" for name in data if name not in known}
    changed: dict[str, Any] = {}
    for name, value in data.items():
        if name in _BOUNDS:
            lo, hi = _BOUNDS[name]
            integral = name == "phone_per_minute"
            if isinstance(value, bool) or not isinstance(value, int if integral else int | float):
                problems[name] = "not_an_integer" if integral else "not_a_number"
            elif not lo <= value <= hi:
                problems[name] = f"out_of_range_{lo:g}_{hi:g}"
            else:
                changed[name] = value
        elif name == "blacklist":
            if not isinstance(value, list) or not all(isinstance(p, str) and len(p) == _PHONE_DIGITS and p.isdigit()
                                                      for p in value):
                problems[name] = "not_a_list_of_mobile_numbers"
            else:
                changed[name] = list(value)
    return changed, problems


async def sim_stats(request: web.Request) -> web.Response:
    """Counters: requests, accepted, delivered, failed, lost, throttled, refused, rejected, queries, duplicates."""
    return web.json_response(request.app[SIM].stats())


async def sim_reset(request: web.Request) -> web.Response:
    """Forget every message and counter."""
    request.app[SIM].reset()
    return web.json_response({"reset": True})


async def sim_healthz(request: web.Request) -> web.Response:
    """Liveness: answers while the simulator runs."""
    sim = request.app[SIM]
    return web.json_response({"status": "ok", "messages": len(sim.delivered)})


def _error(status: int, code: str, message: str, **details: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "details": details}}, status=status)

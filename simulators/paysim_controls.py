"""The payment simulator's ``/sim/*`` controls for tests and demos: pay as a buyer would (with
duplicated, delayed or dropped notifications, or despite a close), look at trades and refunds,
make the next refunds fail, send a refund's notification again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from simulators.paysim import SIM
from simulators.paysim_trades import CLOSED

MAX_DUPLICATES = 100
MAX_DELAY_MS = 600_000
MAX_FAILURES = 1000


def routes() -> list[web.RouteDef]:
    """The ``/sim/*`` routes."""
    return [
        web.post("/sim/orders/{order_no}/pay", sim_pay),
        web.get("/sim/orders/{order_no}", sim_order),
        web.get("/sim/refunds", sim_refunds),
        web.post("/sim/refunds/fail", sim_refunds_fail),
        web.get("/sim/refunds/{refund_no}", sim_refund),
        web.post("/sim/refunds/{refund_no}/notify", sim_refund_notify),
        web.get("/sim/healthz", sim_healthz),
    ]


@dataclass(frozen=True)
class PayOptions:
    """What ``POST /sim/orders/{order_no}/pay`` may ask for."""

    duplicates: int = 0
    delay_ms: int = 0
    drop: bool = False
    force: bool = False


async def sim_pay(request: web.Request) -> web.Response:
    """Pay a trade as a buyer would, with duplicated, delayed or dropped notifications, or despite a close."""
    sim = request.app[SIM]
    raw = await request.read()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return _error(400, "malformed_body", "the body is not JSON")
    if not isinstance(data, dict):
        return _error(400, "malformed_body", "the body must be a JSON object")
    options, problems = _pay_options(data)
    if problems:
        return _error(422, "validation_failed", "invalid pay options", fields=problems)
    order_no = request.match_info["order_no"]
    trade = sim.book.get(order_no)
    if trade is None:
        return _error(404, "order_not_found", f"no trade for order {order_no}")
    if trade.state == CLOSED and not options.force:
        return _error(409, "trade_closed", "the merchant closed this trade; pass force=true to pay it anyway")
    copies = sim.pay(trade, duplicates=options.duplicates, delay_s=options.delay_ms / 1000, drop=options.drop)
    return web.json_response({"order_no": trade.order_no, "trade_no": trade.trade_no, "notifications": copies},
                             status=202)


def _pay_options(data: dict[str, Any]) -> tuple[PayOptions, dict[str, str]]:
    problems = {name: "unknown_field" for name in data if name not in PayOptions.__dataclass_fields__}
    for name, hi in (("duplicates", MAX_DUPLICATES), ("delay_ms", MAX_DELAY_MS)):
        value = data.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            problems[name] = "not_an_integer"
        elif not 0 <= value <= hi:
            problems[name] = f"out_of_range_0_{hi}"
    for name in ("drop", "force"):
        if not isinstance(data.get(name, False), bool):
            problems[name] = "not_a_boolean"
    if problems:
        return PayOptions(), problems
    return PayOptions(**data), {}


async def sim_order(request: web.Request) -> web.Response:
    """The trade, its state and every notification delivery attempt."""
    trade = request.app[SIM].book.get(request.match_info["order_no"])
    if trade is None:
        return _error(404, "order_not_found", f"no trade for order {request.match_info['order_no']}")
    return web.json_response(trade.as_dict())


async def sim_refunds(request: web.Request) -> web.Response:
    """Every refund made, with how often each was asked for, and the request counters."""
    desk = request.app[SIM].refunds
    return web.json_response({"requests": desk.requests, "refused": desk.refused, "fail_next": desk.fail_next,
                              "refunds": [refund.as_dict() for refund in desk.refunds.values()]})


async def sim_refund(request: web.Request) -> web.Response:
    """One refund (by the merchant's refund number) and its notification deliveries."""
    refund = request.app[SIM].refunds.find(request.match_info["refund_no"])
    if refund is None:
        return _error(404, "refund_not_found", f"no refund {request.match_info['refund_no']}")
    return web.json_response(refund.as_dict())


async def _small_count(request: web.Request, name: str, default: int,
                       hi: int) -> tuple[int | None, web.Response | None]:
    raw = await request.read()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return None, _error(400, "malformed_body", "the body is not JSON")
    if not isinstance(data, dict):
        return None, _error(400, "malformed_body", "the body must be a JSON object")
    problems = {key: "unknown_field" for key in data if key != name}
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        problems[name] = "not_an_integer"
    elif not 0 <= value <= hi:
        problems[name] = f"out_of_range_0_{hi}"
    if problems:
        return None, _error(422, "validation_failed", f"invalid {name}", fields=problems)
    return value, None


async def sim_refunds_fail(request: web.Request) -> web.Response:
    """``{"count": N}``: the next N refund requests (either provider) are refused, balance too low; 0 clears it."""
    count, refused = await _small_count(request, "count", 1, MAX_FAILURES)
    if refused is not None:
        return refused
    desk = request.app[SIM].refunds
    desk.fail_next = count or 0
    return web.json_response({"fail_next": desk.fail_next})


async def sim_refund_notify(request: web.Request) -> web.Response:
    """``{"copies": N}``: send the WeChat Pay refund's notification again, N more copies of the same event."""
    sim = request.app[SIM]
    copies, refused = await _small_count(request, "copies", 1, MAX_DUPLICATES)
    if refused is not None:
        return refused
    refund = sim.refunds.get("wechat", request.match_info["refund_no"])
    if refund is None:
        return _error(404, "refund_not_found", f"no WeChat Pay refund {request.match_info['refund_no']}")
    if refund.status != "SUCCESS" or not refund.notify_url:
        return _error(409, "nothing_to_notify", "the refund is not finished or asked for no notification")
    sent = sim.notify_refund(refund, copies or 0)
    return web.json_response({"refund_no": refund.refund_no, "event_id": refund.event_id, "notifications": sent},
                             status=202)


async def sim_healthz(request: web.Request) -> web.Response:
    """Liveness: answers while the simulator runs."""
    sim = request.app[SIM]
    return web.json_response({"status": "ok", "trades": len(sim.book), "refunds": len(sim.refunds),
                              "time_scale": sim.time_scale})


def _error(status: int, code: str, message: str, **details: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "details": details}}, status=status)



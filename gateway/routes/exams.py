"""The exam catalogue and exam sites with live seat availability."""

from __future__ import annotations

import asyncio
from datetime import datetime

from aiohttp import web
from pydantic import Field
from pydantic.json_schema import JsonDict

from core.catalogue import Exam
from gateway import keys
from gateway.bodies import json_response
from gateway.errors import ValidationFailed
from gateway.models import Reply
from gateway.routing import Answer, Param, Routes
from queueing import inventory
from queueing import keys as qkeys

routes = Routes("Exams")
PROVINCE: JsonDict = {"type": "string", "pattern": "^[0-9]{2}$"}


class ExamLevel(Reply):
    """A level of an exam with its specialties."""

    code: str
    name: str
    specialties: list[dict[str, object]]


class ExamSummary(Reply):
    """An exam with its windows, structure and provinces."""

    id: int
    code: str
    name: str
    registration_opens_at: datetime
    registration_closes_at: datetime
    ticket_print_opens_at: datetime | None = None
    ticket_print_closes_at: datetime | None = None
    exam_starts_at: datetime | None = None
    score_release_at: datetime | None = None
    fee_per_subject_fen: int
    levels: list[ExamLevel]
    provinces: list[str] = Field(json_schema_extra={"items": PROVINCE})
    family: str | None = Field(None, description="the exam family (its own code when it has none)")
    year: int | None = Field(None, description="the exam's year (Asia/Shanghai)")
    validity_years: int | None = Field(None, description="exam years a passed subject stays valid in the family")


class SiteAvailability(Reply):
    """An exam site with the seats still available."""

    site_id: int
    province: str
    city: str
    name: str
    address: str
    capacity: int = Field(ge=0)
    available: int


@routes.get("/api/v1/exams", "exams.list", answers={200: Answer(list[ExamSummary], "exams")})
async def list_exams(request: web.Request) -> web.Response:
    """Every exam with its structure; the body is rendered once per catalogue refresh."""
    return web.Response(body=request.app[keys.CATALOGUE].exams_json, content_type="application/json")


@routes.get("/api/v1/exams/{exam_id}/sites", "sites.list",
            params=(Param("province", "query", PROVINCE, "only this province's sites"),),
            answers={200: Answer(list[SiteAvailability], "sites")},
            errors={404: "exam_not_found", 422: "validation_failed: bad province code"})
async def list_sites(request: web.Request) -> web.Response:
    """Sites of an exam (optionally one province) with seats available, read from Redis."""
    exam = request.app[keys.CATALOGUE].exam_of_path(request.match_info["exam_id"])
    province = request.query.get("province")
    if province is not None and not (len(province) == 2 and province.isascii() and province.isdigit()):
        raise ValidationFailed({"province": "must be a two-digit province code, e.g. 11"})
    sites = exam.sites_in(province)
    if not sites:
        return json_response([])
    redis = request.app[keys.REDIS]
    site_keys = [qkeys.site_left(exam.id, site.id) for site in sites]
    left = await redis.mget(*site_keys)
    if any(value is None for value in left):
        await _rebuild_inventory(request.app, exam)
        left = await redis.mget(*site_keys)
    return json_response([
        {
            "site_id": site.id, "province": site.province, "city": site.city, "name": site.name,
            "address": site.address, "capacity": site.capacity,
            "available": int(value) if value is not None else 0,
        }
        for site, value in zip(sites, left, strict=True)
    ])


REBUILD_LOCKS = web.AppKey("inventory_rebuild_locks", dict)


async def _rebuild_inventory(app: web.Application, exam: Exam) -> None:
    # One rebuild per exam at a time in this process; the rest wait for it (single-flight).
    lock = app[REBUILD_LOCKS].setdefault(exam.id, asyncio.Lock())
    async with lock:
        await inventory.ensure_inventory(app[keys.PG], app[keys.REDIS_PY], exam)


def setup(app: web.Application) -> None:
    """The catalogue routes' own resources."""
    app[REBUILD_LOCKS] = {}

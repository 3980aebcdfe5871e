"""Operators' imports: a CSV or NDJSON file posted as one batch, validated in full and applied whole.

``POST /admin/api/v1/imports/{kind}`` takes the file as its body (``text/csv`` with a header row,
or ``application/x-ndjson``) and its batch id in ``Idempotency-Key``: posted again, the same batch
answers ``already_applied`` and changes nothing; the id used for another file answers 409. Every
bad row is answered (422, ``details.rows``) and nothing is applied. The body has its own limit,
``EXAMGATE_IMPORT_MAX_BYTES`` (the rest of the API keeps ``EXAMGATE_MAX_BODY_BYTES``), and is read
by the handler as it streams in, with no body timeout and no shedding: an import is an admin's
rare, long request. National admins only: a file may touch every province.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import Field

from core.db import PoolSettings, create_pool
from core.imports import BATCH_ID_PATTERN, CONTENT_TYPES, REPORT_LIMIT, UnknownKind, media_type, run_import
from core.imports.kinds import KINDS
from core.timeutil import iso_local
from gateway import keys
from gateway.adminauth import operator_of
from gateway.bodies import NO_STORE, json_response
from gateway.errors import BodyTooLarge, Forbidden, MalformedRequest, ValidationFailed
from gateway.imports import import_hooks
from gateway.models import Reply
from gateway.routing import OPERATOR, Answer, Param, Routes

routes = Routes("Imports")

ADMINS = ("admin",)
BATCH_HEADER = "Idempotency-Key"
LIST_LIMIT_MAX = 500
# What the edge lets through before the handler reads; the setting (at most this) is checked by the handler.
IMPORT_BODY_CEILING = 2**31
_CHUNK = 1 << 20
IMPORT_STATEMENT_TIMEOUT_S = 900.0
_KIND_PARAM = Param("kind", "path", {"type": "string", "enum": sorted(KINDS)}, "what the file holds")
_FILE = {"schema": {"type": "string", "format": "binary"}}


class ImportDone(Reply):
    """A batch applied (or, with ``dry_run``, validated only)."""

    batch_id: str
    kind: str
    rows: int = Field(description="data rows in the file")
    applied: int = Field(description="rows that changed something (0 for a dry run)")
    already_applied: bool = Field(description="the batch was applied before: nothing changed now")
    dry_run: bool
    seconds: float


class BatchEntry(Reply):
    """One applied batch."""

    batch_id: str
    kind: str
    sha256: str
    rows: int
    applied: int
    created_by: str
    created_at: datetime
    seconds: float


class BatchList(Reply):
    """Applied batches, newest first."""

    batches: list[BatchEntry]


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ValidationFailed({name: "must be true or false"}, "查询参数无效")
    return raw in ("true", "1")


async def _read_file(request: web.Request, max_bytes: int) -> bytes:
    """The body as it streams in, refused (413) as soon as it passes ``max_bytes``."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BodyTooLarge(details={"max_bytes": max_bytes})
    kept = request._read_bytes  # a body something read already
    if kept is not None:
        data = kept
    else:
        buffer = bytearray()
        try:
            async for chunk in request.content.iter_chunked(_CHUNK):
                buffer += chunk
                if len(buffer) > max_bytes:
                    raise BodyTooLarge(details={"max_bytes": max_bytes})
        except web.RequestPayloadError:
            raise MalformedRequest(details={"reason": "invalid_body"}) from None
        data = bytes(buffer)
    if len(data) > max_bytes:
        raise BodyTooLarge(details={"max_bytes": max_bytes})
    return data


@routes.post("/admin/api/v1/imports/{kind}", "imports.post", caller=OPERATOR, roles=ADMINS, shedding=None,
             max_body_bytes=IMPORT_BODY_CEILING,
             summary="Import a file (CSV with a header row or NDJSON) as one batch: validated in full, applied whole",
             raw_body=dict.fromkeys(CONTENT_TYPES, _FILE),
             params=(_KIND_PARAM,
                     Param(BATCH_HEADER, "header", {"type": "string", "pattern": BATCH_ID_PATTERN.pattern},
                           "the batch id: the same id again applies nothing", required=True),
                     Param("dry_run", "query", {"type": "boolean", "default": False},
                           "validate only: answer as an import would, apply nothing")),
             answers={200: Answer(ImportDone, "applied, already applied, or validated (dry run)")},
             errors={403: "forbidden: a provincial admin (imports are national)",
                     404: "import_kind_not_found: no such kind",
                     409: "batch_conflict: the batch id was applied with another kind or other content",
                     413: "body_too_large: above EXAMGATE_IMPORT_MAX_BYTES (details.max_bytes)",
                     415: "unsupported_media_type: not text/csv or application/x-ndjson",
                     422: f"import_rejected: details.rows lists bad rows [{{line, reason}}] (at most {REPORT_LIMIT}; "
                          "details.total counts all, details.more those left out), nothing applied (an empty CSV "
                          "file: line 1, no header row; an empty NDJSON file is a batch of no rows); "
                          "validation_failed: Idempotency-Key missing or malformed, dry_run not a boolean"})
async def post_import(request: web.Request) -> web.Response:
    """Validate the posted file in full and apply it as one batch (module docstring)."""
    kind = request.match_info["kind"]
    if kind not in KINDS:
        raise UnknownKind(kind)
    operator = operator_of(request)
    if not operator.national:
        raise Forbidden("导入仅限全国管理员", code="forbidden", details={"reason": "national_admin_only"})
    content_type = media_type(request.content_type)  # 415 for anything else
    batch_id = request.headers.get(BATCH_HEADER)
    if batch_id is None:
        raise ValidationFailed({BATCH_HEADER: "required"}, "缺少批次号（Idempotency-Key）")
    if not BATCH_ID_PATTERN.match(batch_id):
        raise ValidationFailed({BATCH_HEADER: f"must match {BATCH_ID_PATTERN.pattern}"}, "批次号格式有误")
    dry_run = _flag(request, "dry_run")
    data = await _read_file(request, request.app[keys.SETTINGS].import_max_bytes)
    # A connection of its own: the app's pool gives a statement 30 s (core.db.PoolSettings), and a million
    # rows' apply takes longer; an import is rare enough to open one.
    settings = request.app[keys.SETTINGS]
    pool = await create_pool(PoolSettings(settings.database_url, 1, 1, command_timeout_s=IMPORT_STATEMENT_TIMEOUT_S))
    try:
        result = await run_import(pool, kind, data, content_type=content_type, batch_id=batch_id,
                                  actor=operator.name, hooks=import_hooks(request.app), dry_run=dry_run)
    finally:
        await pool.close()
    return json_response({"batch_id": result.batch_id, "kind": result.kind, "rows": result.rows,
                          "applied": result.applied, "already_applied": result.already_applied,
                          "dry_run": dry_run, "seconds": round(result.seconds, 3)}, headers=NO_STORE)


@routes.get("/admin/api/v1/imports", "imports.list", caller=OPERATOR, roles=ADMINS,
            summary="The latest import batches, newest first",
            params=(Param("kind", "query", {"type": "string", "enum": sorted(KINDS)}, "only this kind"),
                    Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX,
                                             "default": 50})),
            answers={200: Answer(BatchList, "batches")},
            errors={422: "validation_failed: limit out of range, unknown kind"})
async def list_imports(request: web.Request) -> web.Response:
    """The latest applied batches, newest first."""
    raw = request.query.get("limit", "50")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= LIST_LIMIT_MAX):
        raise ValidationFailed({"limit": f"must be an integer from 1 to {LIST_LIMIT_MAX}"}, "查询参数无效")
    kind = request.query.get("kind")
    if kind is not None and kind not in KINDS:
        raise ValidationFailed({"kind": "must be one of " + ", ".join(sorted(KINDS))}, "查询参数无效")
    rows = await request.app[keys.PG].fetch(
        "SELECT batch_id, kind, sha256, rows, applied, created_by, created_at, seconds FROM import_batches"
        " WHERE $1::text IS NULL OR kind = $1 ORDER BY created_at DESC, batch_id LIMIT $2", kind, int(raw))
    batches: list[dict[str, Any]] = [
        {**dict(row), "created_at": iso_local(row["created_at"]), "seconds": float(row["seconds"])} for row in rows]
    return json_response({"batches": batches}, headers=NO_STORE)

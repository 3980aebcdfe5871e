"""Candidates' registration photos: upload (checked and normalised off the loop), the current one, its signed link.

``PUT /api/v1/me/photo`` takes the JPEG as the body (2 MiB at most: a bigger Content-Length is
refused 413 by the edge before anything is read); the checks and the normalisation run on the
photo pool (``core.photos.PhotoPool``), refused 503 at once when it is full. The captcha, when live
config asks for one on ``photos.put``, travels in the ``X-Captcha`` header as the JSON object a
body would carry. The photo itself is served only behind a signed, expiring link.
"""

from __future__ import annotations

import binascii
import contextlib
import random
import time
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from core import photo_review, photos
from core.errors import NotFound
from gateway import auth, keys
from gateway.bodies import NO_STORE, json_bytes, json_response, parse_body
from gateway.captcha_gate import captcha_due, consume_captcha
from gateway.errors import (
    ApiError,
    BodyTooLarge,
    MalformedRequest,
    NotFoundError,
    UnsupportedMediaType,
    ValidationFailed,
)
from gateway.models import Body, Text
from gateway.routing import ANONYMOUS, CANDIDATE, Answer, Param, Routes

routes = Routes("Photos")
MAX_PHOTO_BYTES = 2 * 1024 * 1024  # API.md: 2 MiB, 413 above
CAPTCHA_HEADER = "X-Captcha"
POOL: web.AppKey[photos.PhotoPool] = web.AppKey("photo_pool")
STORE: web.AppKey[photos.PhotoStore] = web.AppKey("photo_store")
LINK_KEY = web.AppKey("photo_link_key", bytes)
LINK_PURPOSE = "photo-link"

JPEG = "image/jpeg"
UPLOADED = {
    "type": "object", "required": ["photo_id", "status", "width", "height", "bytes"],
    "properties": {"photo_id": {"type": "integer"}, "status": {"enum": ["approved", "needs_review"]},
                   "width": {"const": photos.WIDTH}, "height": {"const": photos.HEIGHT},
                   "bytes": {"type": "integer", "description": "size of the normalised JPEG"}},
}
CHANGE_REQUEST = {
    "type": "object", "required": ["request_id", "status", "reason", "requested_at"],
    "properties": {"request_id": {"type": "integer"},
                   "status": {"enum": ["pending", "granted", "refused", "used"]},
                   "reason": {"type": "string"}, "requested_at": {"type": "string", "format": "date-time"},
                   "decided_at": {"type": ["string", "null"], "format": "date-time"},
                   "decision_reason": {"type": ["string", "null"]}},
}
CURRENT = {
    "type": "object", "required": ["photo_id", "status", "url", "uploaded_at"],
    "properties": {"photo_id": {"type": "integer"}, "status": {"enum": ["approved", "needs_review", "rejected"]},
                   "url": {"type": "string", "description": "signed link to the JPEG, valid a few minutes"},
                   "uploaded_at": {"type": "string", "format": "date-time"},
                   "problems": {"type": "array", "items": {"type": "string"},
                                "description": "the checks that sent it to review"},
                   "messages": {"type": "array", "items": {"type": "string"}, "description": "each problem in Chinese"},
                   "locked": {"type": "boolean", "description": "approved photos are locked: a change request "
                                                                  "granted by an operator allows one new upload"},
                   "reviewed": {"type": "boolean", "description": "an operator has decided on it"},
                   "review_reason": {"type": ["string", "null"], "description": "why an operator rejected it"},
                   "change_request": {"oneOf": [CHANGE_REQUEST, {"type": "null"}],
                                      "description": "the latest change request"}},
}


class ChangeRequest(Body):
    """Why the candidate asks to replace the locked photo."""

    reason: Text(1, photo_review.REASON_MAX_CHARS, "why the photo should be replaced")  # type: ignore[valid-type]


def setup(app: web.Application) -> None:
    """The photo routes' resources: the pool, the store and the link key."""
    app[LINK_KEY] = app[keys.SETTINGS].derived_key(LINK_PURPOSE)
    app.cleanup_ctx.append(_photos_ctx)


async def _photos_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool = app[POOL] = photos.PhotoPool(settings.photo_threads, settings.photo_max_queue)
    app[STORE] = photos.PgPhotoStore(app[keys.PG])
    yield
    pool.close()


def _rejected(problems: list[str]) -> ApiError:
    messages = [photos.PROBLEM_MESSAGES[code] for code in problems]
    return ApiError("照片不符合要求：" + "；".join(messages), code="photo_rejected", status=422,
                    details={"problems": problems, "messages": messages})


def _captcha_of(request: web.Request) -> dict[str, object]:
    """The ``X-Captcha`` header's JSON object as a body would carry it (absent or unreadable: no captcha)."""
    raw = request.headers.get(CAPTCHA_HEADER)
    if raw is None:
        return {}
    with contextlib.suppress(orjson.JSONDecodeError):
        return {"captcha": orjson.loads(raw)}
    return {"captcha": None}


@routes.put("/api/v1/me/photo", "photos.put", caller=CANDIDATE, max_body_bytes=MAX_PHOTO_BYTES,
            summary="Upload the registration photo (JPEG); checked, normalised to 295 × 413 and made current",
            raw_body={JPEG: {"schema": {"type": "string", "format": "binary"}}},
            params=(Param(CAPTCHA_HEADER, "header", {"type": "string"},
                          "the captcha as the JSON object a body carries, when live config asks for one"),),
            answers={201: Answer(UPLOADED, "stored as the current photo")},
            errors={400: "malformed_body: empty body; captcha_invalid when live config asks for a captcha",
                    409: "photo_locked: the current photo is approved and locked; a change request granted by an "
                         "operator allows one new upload",
                    413: "body_too_large: above 2 MiB (details.max_bytes), refused before reading",
                    415: "unsupported_media_type: the body must be image/jpeg",
                    422: "photo_rejected: details.problems lists not_jpeg, corrupt, too_large_image, too_small, "
                         "wrong_aspect, colour_mode, background, blank; details.messages says each in Chinese",
                    503: "overloaded: the image pool is full (Retry-After)"})
async def put_photo(request: web.Request) -> web.Response:
    """``PUT /api/v1/me/photo``: judge, normalise and store the candidate's photo."""
    candidate_id = request[auth.CANDIDATE_ID]
    app = request.app
    pool = app[POOL]
    pool.check_capacity()  # refused before the captcha is spent or the body judged
    if request.content_type != JPEG:
        raise UnsupportedMediaType(details={"expected": JPEG, "got": request.content_type or None})
    mode = captcha_due(request)
    if mode is not None:
        await consume_captcha(request, _captcha_of(request), mode)
    raw = request._read_bytes  # kept by ``read()``: a body the edge waited for
    if raw is None:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(details={"max_bytes": MAX_PHOTO_BYTES}) from None
        except web.RequestPayloadError:
            raise MalformedRequest(details={"reason": "invalid_body"}) from None
    if not raw:
        raise ApiError("请求内容为空", code="malformed_body", status=400, details={"reason": "empty body"})
    if len(raw) > MAX_PHOTO_BYTES:
        raise BodyTooLarge(details={"max_bytes": MAX_PHOTO_BYTES})
    try:
        processed = await pool.process(raw)
    except photos.PhotoRejected as exc:
        raise _rejected(exc.problems) from None
    sampled = random.random() * 100 < app[keys.SETTINGS].photo_sample_percent
    row = await app[STORE].save(candidate_id, processed, sampled=sampled)
    return json_response({"photo_id": row.photo_id, "status": row.status, "width": row.width, "height": row.height,
                          "bytes": row.size}, status=201, headers=NO_STORE)


@routes.get("/api/v1/me/photo", "photos.get", caller=CANDIDATE,
            summary="The candidate's current photo: its status, its review, the latest change request and a signed "
                    "link to the JPEG",
            answers={200: Answer(CURRENT, "the current photo")},
            errors={404: "photo_not_found: no photo uploaded yet"})
async def get_photo(request: web.Request) -> web.Response:
    """``GET /api/v1/me/photo``: the current photo's facts, review and link."""
    candidate_id = request[auth.CANDIDATE_ID]
    app = request.app
    found = await photo_review.photo_status(app[keys.PG], candidate_id)
    if found is None:
        raise NotFoundError("尚未上传照片", code="photo_not_found")
    found["url"], _ = photos.sign_photo_link(app[LINK_KEY], found["photo_id"],
                                             ttl_s=app[keys.SETTINGS].photo_link_ttl_s)
    found["messages"] = [photos.PROBLEM_MESSAGES.get(code, code) for code in found["problems"]]
    return json_response(found, headers=NO_STORE)


@routes.post("/api/v1/me/photo/change-requests", "photos.change_request", caller=CANDIDATE, body=ChangeRequest,
             summary="Ask to replace the approved, locked photo; an operator's grant allows one new upload",
             answers={202: Answer(CHANGE_REQUEST, "recorded, waiting for an operator")},
             errors={404: "photo_not_found: no photo uploaded yet", 422: "validation_failed: a reason is required",
                     409: "photo_not_locked: the photo is not locked, upload a new one directly; "
                          "change_request_open: one is pending or granted (details.request_id, details.status)"})
async def request_change(request: web.Request) -> web.Response:
    """``POST /api/v1/me/photo/change-requests``: a pending change request."""
    candidate_id = request[auth.CANDIDATE_ID]
    reason = " ".join(parse_body(await json_bytes(request), ChangeRequest).reason.split())
    if not reason:
        raise ValidationFailed({"reason": "required"}, "请填写更换照片的原因")
    try:
        made = await photo_review.request_change(request.app[keys.PG], candidate_id, reason)
    except NotFound:
        raise NotFoundError("尚未上传照片", code="photo_not_found") from None
    return json_response(made, status=202, headers=NO_STORE)


@routes.get("/api/v1/photos/{photo_id:[1-9][0-9]{0,17}}.jpg", "photos.jpeg", caller=ANONYMOUS,
            summary="A photo's JPEG behind the signed, expiring link GET /api/v1/me/photo gave",
            params=(Param("photo_id", "path", {"type": "integer", "minimum": 1}),
                    Param("exp", "query", {"type": "integer"}, required=True),
                    Param("sig", "query", {"type": "string"}, required=True)),
            answers={200: Answer({"type": "string", "format": "binary"}, "the JPEG (ETag: its SHA-256)",
                                 media_type=JPEG),
                     304: Answer(None, "not modified (If-None-Match named its ETag)")},
            errors={403: "link_invalid (tampered, another photo's, or expired)", 404: "photo_not_found"})
async def photo_jpeg(request: web.Request) -> web.Response:
    """``GET /api/v1/photos/{photo_id}.jpg?exp=&sig=``: the JPEG, cacheable privately until its link lapses."""
    photo_id = int(request.match_info["photo_id"])
    app = request.app
    try:
        expires_at = photos.verify_photo_link(app[LINK_KEY], photo_id, request.query.get("exp", ""),
                                              request.query.get("sig", ""))
    except (photos.PhotoLinkInvalid, ValueError, binascii.Error):
        raise ApiError("照片链接无效或已过期，请重新打开", code="link_invalid", status=403) from None
    row = await app[STORE].fetch(photo_id)
    if row is None:
        raise NotFoundError("照片不存在", code="photo_not_found")
    max_age = max(0, min(expires_at - int(time.time()), app[keys.SETTINGS].photo_link_ttl_s))
    etag = f'"{row.sha256}"'
    headers = {"Cache-Control": f"private, max-age={max_age}", "ETag": etag}
    if etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=row.jpeg, content_type=JPEG, headers=headers)

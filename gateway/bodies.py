"""Reading request bodies: content type, size and JSON shape checked in one place."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway import keys
from gateway.errors import BodyTooLarge, MalformedBody, MalformedRequest, UnsupportedMediaType, ValidationFailed
from gateway.models import fields_of

B = TypeVar("B", bound=BaseModel)

# Answers that carry a candidate's own data or a single-use value: never kept by a cache.
NO_STORE = {"Cache-Control": "no-store"}


async def await_body(request: web.Request, timeout_s: float) -> bool:
    """Wait for the rest of a body that did not come with its headers; False when it is not in within ``timeout_s``.

    ``request.read()`` keeps the body, where ``read_json`` and the handlers find it.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await request.read()
    except TimeoutError:
        return False
    except web.HTTPRequestEntityTooLarge:
        # The route's own limit when it has one (the edge sets it), else the setting (the app's).
        raise BodyTooLarge(details={"max_bytes": request.client_max_size}) from None
    except web.RequestPayloadError:
        raise MalformedRequest(details={"reason": "invalid_body"}) from None
    return True


async def read_body(request: web.Request, model: type[B],
                    content_types: tuple[str, ...] = ("application/json",)) -> B:
    """The body parsed and validated as ``model`` in one pass.

    415, 400 and 413 as ``read_json``; 422 naming every field.
    """
    return parse_body(await json_bytes(request, content_types), model)


def parse_body(raw: bytes, model: type[B]) -> B:
    """``raw`` (from ``json_bytes``) validated as ``model``.

    400 when it is not a JSON object; 422 naming every field.
    """
    if b"\\u0000" in raw:  # raw NUL bytes are not JSON; only the escape can carry one
        with contextlib.suppress(orjson.JSONDecodeError):  # not JSON at all: pydantic says so below
            _refuse_nul(raw)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(problem["type"] == "json_invalid" for problem in problems):
            raise MalformedBody(details={"reason": problems[0]["msg"]}) from None
        if any(not problem["loc"] and problem["type"] in _NOT_AN_OBJECT for problem in problems):
            raise MalformedBody("请求内容必须是 JSON 对象", details={"reason": "expected a JSON object"}) from None
        raise ValidationFailed(fields_of(exc, getattr(model, "field_codes", None))) from None


_NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dict_type"})


def _refuse_nul(raw: bytes) -> None:
    nul_fields = dict.fromkeys(_paths_with_nul(orjson.loads(raw), ""), "contains_nul")
    if nul_fields:
        raise ValidationFailed(nul_fields)


async def json_bytes(request: web.Request, content_types: tuple[str, ...] = ("application/json",)) -> bytes:
    """The body's bytes, once its content type is one of ``content_types`` and it is not empty or too large.

    With ``parse_body``, for a handler that must prove who is asking before it judges the body.
    """
    if request.content_type not in content_types:
        expected: str | list[str] = content_types[0] if len(content_types) == 1 else list(content_types)
        raise UnsupportedMediaType(details={"expected": expected, "got": request.content_type or None})
    raw = request._read_bytes  # kept by ``read()``: a body the edge waited for
    if raw is None:
        content = request.content
        if content.is_eof():
            # The whole body is buffered already (a small body arrives with its headers): taken
            # as it is, without ``read()``'s loop of awaits (measured: 4 % of a score lookup).
            raw = content.read_nowait(-1)
            if len(raw) > request.app[keys.SETTINGS].max_body_bytes:
                raise BodyTooLarge(details={"max_bytes": request.app[keys.SETTINGS].max_body_bytes})
        else:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise BodyTooLarge(details={"max_bytes": request.app[keys.SETTINGS].max_body_bytes}) from None
    if not raw:
        raise MalformedBody("请求内容为空", details={"reason": "empty body"})
    return raw


async def read_json(request: web.Request, content_types: tuple[str, ...] = ("application/json",)) -> dict[str, Any]:
    """The body as a JSON object; 415 for another content type, 400 when malformed, 413 when too large."""
    raw = await json_bytes(request, content_types)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(details={"reason": str(exc)}) from None
    if not isinstance(body, dict):
        raise MalformedBody("请求内容必须是 JSON 对象", details={"reason": "expected a JSON object"})
    _whole_numbers_as_ints(body)
    if b"\\u0000" in raw:  # raw NUL bytes are not JSON; only the escape can carry one
        nul_fields = dict.fromkeys(_paths_with_nul(body, ""), "contains_nul")
        if nul_fields:
            raise ValidationFailed(nul_fields)
    return body


def _paths_with_nul(value: Any, path: str) -> list[str]:
    """Dotted paths of the strings (and keys) holding U+0000, which no PostgreSQL text or jsonb column takes."""
    if type(value) is str:
        return [path or "body"] if "\0" in value else []
    if type(value) is dict:
        found: list[str] = []
        for key, item in value.items():
            inner = f"{path}.{key}" if path else key
            found += [inner] if "\0" in key else _paths_with_nul(item, inner)
        return found
    if type(value) is list:
        return [found for index, item in enumerate(value) for found in _paths_with_nul(item, f"{path}.{index}")]
    return []


_INT64_LIMIT = float(2**63)


def _whole_numbers_as_ints(container: dict[str, Any] | list[Any]) -> None:
    """Every whole-valued number made an int, in place: to JSON (and the API's schemas) 2.0 is the integer 2."""
    # orjson reads 2.0 and 2e0 as floats; made ints here once for every handler (measured: 0.8 µs for a
    # score lookup's body, about what parsing it costs).
    items = container.items() if type(container) is dict else enumerate(container)
    for key, value in items:
        kind = type(value)
        if kind is float:
            # Beyond 64 bits stays a float (refused as no integer): an int that size fits no column and
            # no JSON encoder of ours (orjson reads 126048385896644870144 as a float).
            if value.is_integer() and -_INT64_LIMIT <= value < _INT64_LIMIT:
                container[key] = int(value)  # type: ignore[index]
        elif kind is dict or kind is list:
            _whole_numbers_as_ints(value)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)

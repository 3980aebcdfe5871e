"""Posting a large file to the admin API in chunks, reporting the bytes sent as they go."""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CHUNK_BYTES", "Answer", "post_file"]

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Answer:
    """The gateway's status and decoded JSON answer (None when it was not JSON)."""

    status: int
    body: Any


def post_file(url: str, token: str, path: str, data: bytes, headers: dict[str, str], *, timeout_s: float,
              progress: Callable[[int, int], None] | None = None) -> Answer:
    """POST ``data`` to ``url`` + ``path`` with the operator's token, ``progress(sent, total)`` after each chunk.

    Raises OSError (http.client's errors included) when the gateway cannot be reached or hangs up.
    """
    parts = urllib.parse.urlsplit(url.rstrip("/") + path)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http URL: {url}")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout_s,
                                                 context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        connection.putrequest("POST", target)
        for name, value in {"Authorization": f"Bearer {token}", "Accept": "application/json",
                            "Content-Length": str(len(data)), **headers}.items():
            connection.putheader(name, value)
        connection.endheaders()
        view = memoryview(data)
        sent = 0
        try:
            while sent < len(data):
                connection.send(view[sent:sent + CHUNK_BYTES])
                sent = min(len(data), sent + CHUNK_BYTES)
                if progress is not None:
                    progress(sent, len(data))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway answered early (413, 415, 404…) and closed: its answer is still there to read
        response = connection.getresponse()
        raw = response.read()
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        return Answer(response.status, body)
    finally:
        connection.close()

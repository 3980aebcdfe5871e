"""What the load-test command asks of the gateway before and after a run, over HTTP with an operator token."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

TIMEOUT_S = 10.0


class GatewayError(Exception):
    """The gateway could not be reached or refused an operator request."""


@dataclass
class Operator:
    """The gateway at ``url`` with an operator's bearer token."""

    url: str
    token: str

    def call(self, method: str, path: str, body: Any = None, *, admin: bool = True,
             content_type: str = "application/json") -> Any:
        """One request; the decoded JSON answer, or ``GatewayError`` saying what went wrong."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if admin:
            request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                detail = exc.read()[:500].decode("utf-8", "replace")
            raise GatewayError(f"{method} {path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise GatewayError(f"cannot reach the gateway at {self.url}: {getattr(exc, 'reason', exc)}") from None
        except ValueError:
            raise GatewayError(f"{method} {path}: the answer is not JSON; is {self.url} an examgate gateway?") from None

    def issue_loadtest_token(self, ttl_s: int, name: str) -> str:
        """A load-test token (``X-Loadtest-Token``) valid for ``ttl_s`` seconds; the gateway audits it."""
        answer = self.call("POST", "/admin/api/v1/loadtest-tokens", {"ttl_s": ttl_s, "name": name})
        return str(answer["token"])

    def exam_id(self, code: str) -> int:
        """The id of the exam with ``code`` (from the public catalogue)."""
        for exam in self.call("GET", "/api/v1/exams", admin=False):
            if exam.get("code") == code:
                return int(exam["id"])
        raise GatewayError(f"the gateway has no exam {code}; seed the demo data (examgate seed)")

    def waiting_room(self, exam_id: int) -> dict[str, Any] | None:
        """The live waiting-room settings of an exam, None when it has none."""
        config = self.call("GET", "/admin/api/v1/config")["config"]
        room = (config.get("queue") or {}).get("exams", {}).get(str(exam_id))
        return dict(room) if room is not None else None

    def patch_waiting_room(self, exam_id: int, patch: dict[str, Any] | None) -> int:
        """Merge ``patch`` into an exam's waiting-room settings (a null value removes a key; None removes them all).

        Returns the new config version.
        """
        body = {"queue": {"exams": {str(exam_id): patch}}}
        answer = self.call("PATCH", "/admin/api/v1/config", body, content_type="application/merge-patch+json")
        return int(answer["version"])

    def wait_applied(self, version: int, timeout_s: float = 5.0, rounds: int = 8) -> bool:
        """Whether every gateway process answering ``/healthz`` runs config ``version`` or later.

        Asked until ``timeout_s`` has passed.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # A new connection per request, so each of the processes sharing the port gets asked.
            seen = [int(self.call("GET", "/healthz", admin=False)["config_version"]) for _ in range(rounds)]
            if min(seen) >= version:
                return True
            time.sleep(0.1)
        return False

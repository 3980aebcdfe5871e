"""The OpenAPI document against the running gateway: schemathesis over every operation it lists.

Two gateway processes on real PostgreSQL and Redis, an exam open for registration with a
registration of the signed-in candidate, payment keys, a few captcha images. Every operation
of ``gateway.openapi.gateway_document()`` gets schema-valid and schema-invalid requests (seeded, so a
run repeats); every answer must be one the document allows — status code, content type,
headers, body schema — with no server error but a documented 503, invalid input refused,
valid input accepted unless a rule the schema cannot state or the stored state refuses it
(``UNSTATED_FIELD_RULES``, ``STATE_REFUSALS``), and no operation that declares a security scheme
answering without credentials. Schema-valid requests carry a load-test token, so captcha passes
and the body itself is judged; throttles but one watch only (``ENFORCED_RULES``).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import schemathesis
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.core.failures import Failure
from schemathesis.specs.openapi import checks as openapi_checks

from captcha.pool import refill
from core import db
from gateway import openapi
from loadtest.processes import Process, start_gateway
from payments import keys as payment_keys
from tests.conftest import TEST_REDIS_URL
from tests.factories import make_exam
from tests.gateway.candidate_http import FAST_ARGON
from tests.gateway.seat_stack import healthz_versions, make_candidates, make_registrations, make_sessions

# Small per operation, so the whole document runs in about a minute on two shared cores.
MAX_EXAMPLES = 12
SEED = 20_260_101
SPARE_SESSIONS = 48  # signing out ends a session: each sign-out case gets its own
CAPTCHA_IMAGES = 4
# One throttle stays on, so 429s are answered (and checked); the others watch only, so the requests
# of one address reach validation and the stores instead of 429 after their first few.
ENFORCED_RULES = frozenset({"login-ip"})

CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
    "checks": {
        # A 5xx is a server error unless it is a 503, and a 503 must be documented (status conformance).
        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
        # The lookups answer 425 outside their window before they read the captcha (docs/api.md).
        "negative_data_rejection": {"expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413",
                                                          "415", "422", "425", "428", "429", "5xx"]},
    },
})
# Import files (NDJSON) are sent as the bytes generated for their binary schema, like the other files.
schemathesis.serializer.alias("application/x-ndjson", "application/octet-stream")
schemathesis.serializer.alias("application/pdf", "application/octet-stream")  # a certificate PDF to check
SCHEMA = schemathesis.openapi.from_dict(openapi.gateway_document(), config=CONFIG)

# Refusals of schema-valid requests that the document explains in words, per field (list indices as *):
# rules JSON Schema cannot state (a check digit, a password's character classes, Unicode categories)
# and answers that depend on stored state (the exam's catalogue, today's date).
UNSTATED_FIELD_RULES: dict[str, frozenset[str]] = {
    "name": frozenset({"invalid_characters", "too_short", "too_long"}),
    "id_number": frozenset({"invalid_length", "invalid_format", "invalid_region", "invalid_birth_date",
                            "invalid_check_digit"}),
    "password": frozenset({"too_few_character_classes", "contains_username", "contains_id_number"}),
    "new_password": frozenset({"too_few_character_classes", "contains_username", "contains_id_number"}),
    "email": frozenset({"invalid_format"}),
    "security_question": frozenset({"invalid_characters", "too_short"}),
    "security_answer": frozenset({"invalid_characters"}),
    "city": frozenset({"invalid_characters", "too_long"}),  # too_long: NFC may lengthen it
    "educations.*.cert_no": frozenset({"invalid_characters", "duplicate"}),
    "educations.*.school": frozenset({"invalid_characters"}),
    "educations.*.major": frozenset({"invalid_characters"}),
    "educations.*.graduated_on": frozenset({"in_future"}),
    "exam_id": frozenset({"unknown_exam"}),
    "province": frozenset({"invalid_choice"}),
    "level": frozenset({"invalid_choice"}),
    "specialty": frozenset({"invalid_choice"}),
    "subjects.*": frozenset({"invalid_choice"}),
    "site_id": frozenset({"other_province"}),
    "review_point": frozenset({"invalid_choice"}),  # a review point of the exam in the registration's province
    "reasons": frozenset({"required"}),  # a rejection names at least one reason
    "degrees.*.cert_no": frozenset({"invalid_characters", "duplicate"}),
    "degrees.*.school": frozenset({"invalid_characters"}),
    "degrees.*.major": frozenset({"invalid_characters"}),
    "degrees.*.obtained_on": frozenset({"in_future"}),
    "confirmation.name": frozenset({"mismatch"}),  # typed again: equal to name once both are normalised
    "confirmation.id_number": frozenset({"mismatch"}),
    "reason": frozenset({"required"}),  # a photo rejected or a change request refused needs its reason; not blank
    "records.*.ends_on": frozenset({"before_starts_on"}),
    "required_subjects.*": frozenset({"unknown_subject"}),
    "exemptions.*.subjects.*": frozenset({"not_required"}),
    # Account maintenance: a record added alone (its fields at the top level), the new question and answer
    # judged as at registration, and a new phone that is the account's own already.
    "cert_no": frozenset({"invalid_characters"}),
    "school": frozenset({"invalid_characters"}),
    "major": frozenset({"invalid_characters"}),
    "graduated_on": frozenset({"in_future"}),
    "obtained_on": frozenset({"in_future"}),
    "question": frozenset({"invalid_characters", "too_short"}),
    "answer": frozenset({"invalid_characters"}),
    "new_phone": frozenset({"same_as_current"}),
    # A score review's correction: one decimal at most, within the subject's full mark, not the current score.
    "score": frozenset({"one_decimal", "above_full_mark", "same_score"}),
    # A score review window closes after it opens, both within the years it takes.
    "opens_at": frozenset({"out_of_range"}),
    "closes_at": frozenset({"not_after_opens_at", "out_of_range"}),
}
# Refused in any field: U+0000, which no PostgreSQL text or jsonb column holds (gateway.bodies).
UNSTATED_EVERYWHERE = frozenset({"contains_nul"})
# Whole-request refusals of the same kind: the reset id or SMS code is not a live one, the username's
# failures call for a harder captcha, a merge patch is judged merged into the stored config.
STATE_REFUSALS = frozenset({"reset_invalid", "reset_attempts_exhausted", "code_invalid", "captcha_required",
                            "invalid_config", "photo_rejected", "import_rejected"})
# Payment notifications are refused (400) unless the provider signed them, which no schema states.
SIGNED_OPERATIONS = frozenset({"POST /api/v1/payments/notify/alipay", "POST /api/v1/payments/notify/wechat",
                               "POST /api/v1/payments/wechat/refund-notify"})


@dataclass
class Stack:
    """The running gateway, its tokens, and the data the requests can reach."""

    gateway: Process
    admin_token: str
    session_token: str
    loadtest_token: str
    exam_id: int
    registration_id: int
    spare_sessions: list[str] = field(default_factory=list)
    baseline_config: dict[str, Any] = field(default_factory=dict)
    cases: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)  # cases sent, per "METHOD /path"


STACK: list[Stack] = []  # the module's stack, for the auth provider (it cannot take fixtures)


def _call(stack: Stack, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request with the admin token: (status, decoded body)."""
    request = urllib.request.Request(stack.gateway.url + path, data=body, method=method, headers={
        "Authorization": f"Bearer {stack.admin_token}", "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _admin(stack: Stack, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    """An operator's request that must succeed: its decoded answer."""
    status, answer = _call(stack, method, path, None if body is None else json.dumps(body).encode(), headers)
    assert 200 <= status < 300, (method, path, status, answer)
    return answer


async def _data(pg_dsn: str, redis_url: str) -> tuple[int, int, list[str]]:
    """An exam open for registration, a candidate with a draft registration; (exam, registration, sessions)."""
    conn = await db.connect(pg_dsn)
    try:
        exam_id = await make_exam(conn, sites=[("11", 30), ("37", 30)])
        candidates = await make_candidates(conn, 1 + SPARE_SESSIONS)
        registration_id = (await make_registrations(conn, exam_id, candidates[:1]))[0]
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(redis_url)
    try:
        await refill(client, target=CAPTCHA_IMAGES, batch=CAPTCHA_IMAGES, inline=True)
    finally:
        await client.aclose()
    return exam_id, registration_id, await make_sessions(redis_url, candidates)


def _wait_version(gateway: Process, version: int, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while min(healthz_versions(gateway)) < version:
        assert time.monotonic() < deadline, f"config version {version} was not applied everywhere"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def stack(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two gateway processes with payment keys, the exam's waiting room enabled, and the tokens to call them."""
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    exam_id, registration_id, sessions = asyncio.run(_data(pg_dsn, TEST_REDIS_URL))
    keys_dir = tmp_path_factory.mktemp("openapi-keys") / "keys"
    payment_keys.ensure(keys_dir)
    gateway = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2, EXAMGATE_KEYS_DIR=str(keys_dir), **FAST_ARGON)
    try:
        made = Stack(gateway, gateway.admin_token(), sessions[0], "", exam_id, registration_id, sessions[1:])
        made.loadtest_token = _admin(made, "POST", "/admin/api/v1/loadtest-tokens", {"ttl_s": 3600})["token"]
        rules = _admin(made, "GET", "/admin/api/v1/config")["config"]["ratelimit"]["rules"]
        version = gateway.patch_config({
            "queue": {"exams": {str(exam_id): {"enabled": True}}},
            "ratelimit": {"rules": [{**rule, "mode": "enforce" if rule["id"] in ENFORCED_RULES else "shadow"}
                                    for rule in rules]},
        })
        _wait_version(gateway, version)
        made.baseline_config = _admin(made, "GET", "/admin/api/v1/config")["config"]
        STACK.append(made)
        yield made
    finally:
        STACK.clear()
        assert gateway.stop() == 0, gateway.log()
        with redis.Redis.from_url(TEST_REDIS_URL) as client:
            client.flushdb()
        # The fuzzed publish route leaves agreements in force that the session's later tests never accepted.
        asyncio.run(_forget_agreements(pg_dsn))


async def _forget_agreements(pg_dsn: str) -> None:
    conn = await db.connect(pg_dsn)
    try:
        await conn.execute("UPDATE candidates SET agreement_version = NULL, agreement_accepted_at = NULL")
        await conn.execute("DELETE FROM account_documents")
    finally:
        await conn.close()


# Asked for every case (sign-out needs a new session each time); a 401 is an answer to check, not a cue to re-login.
@SCHEMA.auth(refresh_interval=None, retry_on=[])
class BearerTokens:
    """The admin token for operations secured by ``admin``, a candidate session for those secured by ``session``."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str | None:
        schemes = {name for requirement in _security(case) for name in requirement}
        if not STACK:
            return None  # asked while the tests are collected, before the gateway runs
        stack = STACK[0]
        if "admin" in schemes:
            return stack.admin_token
        if "session" in schemes:
            if case.method.upper() == "DELETE" and case.path == "/api/v1/sessions/current":
                # Signing out ends the session: a spare one each time, the last reused when they run out.
                return stack.spare_sessions.pop() if len(stack.spare_sessions) > 1 else stack.spare_sessions[0]
            return stack.session_token
        return None

    def set(self, case: schemathesis.Case, data: str | None, context: schemathesis.AuthContext) -> None:
        if data is not None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _security(case: schemathesis.Case) -> list[dict[str, list[str]]]:
    raw = case.operation.definition.raw
    return raw.get("security", SCHEMA.raw_schema.get("security", []))


def _field_rule(path: str) -> frozenset[str]:
    return UNSTATED_FIELD_RULES.get(re.sub(r"\.[0-9]+(?=\.|$)", ".*", path), frozenset()) | UNSTATED_EVERYWHERE


def refused_only_for_unstated_rules(ctx: CheckContext, response: schemathesis.Response,
                                    case: schemathesis.Case) -> bool | None:
    """A schema-valid request is refused with 400 or 422 only for a rule or a state the schema cannot state."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return None
    if case.operation.label in SIGNED_OPERATIONS:
        return None
    try:
        error = response.json()["error"]
        problems = dict(error["details"].get("fields", {})) if error["code"] == "validation_failed" else {}
    except (ValueError, KeyError, TypeError, AttributeError):
        error, problems = {}, {}
    if error.get("code") in STATE_REFUSALS:
        return None
    if problems and all(problem in _field_rule(path) for path, problem in problems.items()):
        return None
    raise Failure(operation=case.operation.label, title="Schema-valid request rejected",
                  message=f"{response.status_code} {json.dumps(error, ensure_ascii=False)[:400]}")


CHECKS = [
    not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
    openapi_checks.ignored_auth,
    refused_only_for_unstated_rules,
]


def _with_real_ids(case: schemathesis.Case, stack: Stack) -> None:
    """Every other schema-valid case aims at the exam and registration that exist, to get past their 404s."""
    stack.cases += 1
    stack.by_operation[f"{case.method.upper()} {case.path}"] += 1
    if case.meta is None or not case.meta.generation.mode.is_positive or stack.cases % 2:
        return
    params = case.path_parameters or {}
    if "exam_id" in params:
        params["exam_id"] = stack.exam_id
    if "registration_id" in params:
        params["registration_id"] = stack.registration_id
    if isinstance(case.body, dict) and isinstance(case.body.get("exam_id"), int):
        case.body["exam_id"] = stack.exam_id


def _restore_config(stack: Stack) -> None:
    """Undo what a config PATCH changed, so the operations after it meet the same gateway."""
    current = _admin(stack, "GET", "/admin/api/v1/config")
    patch = _merge_patch(current["config"], stack.baseline_config)
    if patch:
        answer = _admin(stack, "PATCH", "/admin/api/v1/config", patch,
                       {"Content-Type": "application/merge-patch+json"})
        _wait_version(stack.gateway, int(answer["version"]))


def _merge_patch(current: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7396) that turns ``current`` into ``target``."""
    patch: dict[str, Any] = {key: None for key in current if key not in target}
    for key, value in target.items():
        now = current.get(key)
        if isinstance(value, dict) and isinstance(now, dict):
            inner = _merge_patch(now, value)
            if inner:
                patch[key] = inner
        elif now != value:
            patch[key] = value
    return patch


@SCHEMA.parametrize()
def test_every_operation_answers_as_documented(case: schemathesis.Case, stack: Stack) -> None:
    _with_real_ids(case, stack)
    headers = {}
    if case.meta is not None and case.meta.generation.mode.is_positive:
        headers["X-Loadtest-Token"] = stack.loadtest_token  # captcha passes, so the body itself is judged
    try:
        case.call_and_validate(base_url=stack.gateway.url, headers=headers, checks=CHECKS, timeout=15)
    finally:
        if case.method.upper() == "PATCH" and case.path == "/admin/api/v1/config":
            _restore_config(stack)


def test_the_fuzz_run_reached_every_operation(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs after the parametrized test: every documented operation got cases; the run's size is printed."""
    document = openapi.gateway_document()
    documented = {f"{method.upper()} {path}" for path, operations in document["paths"].items() for method in operations}
    assert documented <= set(stack.by_operation)
    # The coverage phase also sends the undocumented methods of each path (405 expected): counted apart.
    cases = sum(count for operation, count in stack.by_operation.items() if operation in documented)
    others = sum(stack.by_operation.values()) - cases
    with capsys.disabled():
        print(f"\nschemathesis: {len(documented)} operations, {cases} cases (and {others} with other methods); "
              f"seed {SEED}, at most {MAX_EXAMPLES} examples per phase")


def test_the_served_document_is_the_one_tested(stack: Stack) -> None:
    with urllib.request.urlopen(stack.gateway.url + "/api/v1/openapi.json", timeout=5) as resp:
        assert json.loads(resp.read()) == json.loads(json.dumps(openapi.gateway_document()))


def test_operators_and_scrapers_operations_declare_their_bearer_scheme() -> None:
    document = openapi.gateway_document()
    schemes = document["components"]["securitySchemes"]
    assert schemes["admin"] == {**schemes["admin"], "type": "http", "scheme": "bearer"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/admin/"):
                assert operation.get("security") == [{"admin": []}], (method, path)
                assert "401" in operation["responses"], (method, path)
    assert {name for requirement in document["paths"]["/metrics"]["get"]["security"] for name in requirement} \
        == {"metrics", "admin"}


def test_every_route_of_the_app_is_in_the_document(tmp_path: Path) -> None:
    from gateway.app import create_app
    from tests.gateway.test_app import make_settings

    app = create_app(make_settings("postgresql://postgres@127.0.0.1:1/examgate_nowhere", TEST_REDIS_URL, tmp_path))
    # Pages too (HTML and assets); a pattern's regex is not part of the documented path.
    served = {(route.method.lower(), re.sub(r"\{([a-z_]+):[^{}]*(?:\{[^{}]*\}[^{}]*)*\}", r"{\1}",
                                            route.resource.canonical))
              for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None and route.name is not None}  # not the catch-all
    documented = {(method, path) for path, operations in openapi.gateway_document()["paths"].items()
                  for method in operations}
    assert served == documented


def test_dead_letter_replay_refuses_null_ids(stack: Stack) -> None:
    status, answer = _call(stack, "POST", "/admin/api/v1/dead-letters/replay", b'{"ids": null}')
    assert status == 422, answer
    assert answer["error"]["details"]["fields"] == {"ids": "must be a list of dead-letter ids like 1700000000000-0"}


def test_stream_ids_beyond_what_redis_takes_are_refused_not_failed(stack: Stack) -> None:
    too_big = "99999999999999999999-0"  # 20 digits: more than a stream id's 64 bits
    status, answer = _call(stack, "POST", "/admin/api/v1/dead-letters/replay", json.dumps({"ids": [too_big]}).encode())
    assert status == 422, answer
    status, answer = _call(stack, "GET", f"/admin/api/v1/dead-letters?after={too_big}")
    assert status == 422, answer


def test_numbers_in_queries_and_headers_are_ascii_digits(stack: Stack) -> None:
    # str.isdigit() is true for "²" and "٣", which int() refuses or reads as another number.
    status, answer = _call(stack, "GET", "/admin/api/v1/audit?limit=%C2%B2")
    assert status == 422, answer
    status, answer = _call(stack, "GET", "/admin/api/v1/audit?limit=%D9%A3")
    assert status == 422, answer
    status, answer = _call(stack, "PATCH", "/admin/api/v1/config", b"{}",
                           {"If-Match": "\u00b2", "Content-Type": "application/merge-patch+json"})
    assert (status, answer["error"]["code"]) == (400, "invalid_if_match"), answer
    status, answer = _call(stack, "GET", f"/api/v1/exams/{stack.exam_id}/sites?province=%D9%A1%D9%A1")
    assert status == 422, answer


def test_a_whole_number_written_with_a_fraction_is_an_integer(stack: Stack) -> None:
    status, answer = _call(stack, "POST", "/admin/api/v1/loadtest-tokens", b'{"ttl_s": 60.0, "name": "whole"}')
    assert status == 201, answer
    status, answer = _call(stack, "POST", "/admin/api/v1/loadtest-tokens", b'{"ttl_s": 60.5}')
    assert status == 422, answer


def test_a_number_beyond_64_bits_is_refused_not_failed(stack: Stack) -> None:
    # orjson reads 126048385896644870144 as a float; made an int it fit neither a column nor the error's JSON.
    for path in ("/api/v1/tickets/lookup", "/api/v1/scores/lookup"):
        status, answer = _call(stack, "POST", path, b'{"exam_id": 126048385896644870144, "name": "a", '
                               b'"id_number": "b", "captcha": {"kind": "pow", "payload": "x"}}')
        assert (status, answer["error"]["details"]["fields"]) == (422, {"exam_id": "must_be_exam_id"}), answer


def test_a_nul_in_a_json_string_is_refused_not_failed(stack: Stack) -> None:
    # PostgreSQL text and jsonb take no U+0000: it reached the recovery lookup and the audit (500).
    status, answer = _call(stack, "POST", "/admin/api/v1/loadtest-tokens", b'{"name": "a\\u0000b", "ttl_s": 60}')
    assert (status, answer["error"]["details"]["fields"]) == (422, {"name": "contains_nul"}), answer
    status, answer = _call(stack, "POST", "/api/v1/password-resets/sms", json.dumps({
        "name": "张三", "id_number": "\u0000110", "phone": "13900000000",
        "captcha": {"kind": "pow", "payload": "x"}}).encode())
    assert (status, answer["error"]["details"]["fields"]) == (422, {"id_number": "contains_nul"}), answer
    status, answer = _call(stack, "PATCH", "/admin/api/v1/config", b'{"maintenance": {"x\\u0000": "m"}}',
                           {"Content-Type": "application/merge-patch+json"})
    assert (status, answer["error"]["details"]["fields"]) == (422, {"maintenance.x\x00": "contains_nul"}), answer


def test_dead_letter_replay_reads_a_body_sent_after_its_headers(stack: Stack) -> None:
    # The gateway waits for such a body before the handler runs; it must still be the body judged.
    body = b'{"ids": null}'
    host, port = stack.gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall((f"POST /admin/api/v1/dead-letters/replay HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {stack.admin_token}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode())
        time.sleep(0.3)
        conn.sendall(body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 422 "), answer[:300]

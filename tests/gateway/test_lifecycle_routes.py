"""The registration lifecycle over HTTP against a running gateway (2 processes) and worker.

Every transition and every refusal a candidate or an operator meets: the commitment route and the
integrity archive, the automatic review's answers, edit after rejection, withdraw and cancel with
their seat and order, operators' decisions (scope, If-Match, one decision each) — checked in the
answers, in PostgreSQL and in Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from loadtest.processes import Process
from payments import keys as payment_keys
from queueing import keys as qkeys
from tests.conftest import TEST_REDIS_URL
from tests.factories import give_approved_photos
from tests.gateway.seat_stack import (
    ENROLMENT,
    bearer,
    exam_ready,
    make_candidates,
    make_sessions,
    running_stack,
    seats_left,
    set_live,
    wait_inventory,
)
from tests.gateway.test_app import assert_error_shape

RULES = {
    "paths": [{"education": "bachelor", "min_work_years": 4}, {"education": "college", "min_work_years": 6}],
    "majors_same": ["金融学"], "majors_related": ["经济学"],
}


@pytest.fixture(scope="module")
def stack(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process]]:
    keys_dir = tmp_path_factory.mktemp("lifecycle-keys") / "keys"
    payment_keys.ensure(keys_dir)  # orders are refused for the registration's state, not for missing keys
    with running_stack(pg_dsn, TEST_REDIS_URL, EXAMGATE_KEYS_DIR=str(keys_dir)) as processes:
        yield processes


@pytest.fixture
def gateway(stack: tuple[Process, Process]) -> Process:
    return stack[0]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Client:
    """One caller (a candidate's or an operator's token) of the gateway."""

    def __init__(self, http: aiohttp.ClientSession, gateway: Process, token: str) -> None:
        self.http, self.base, self.token = http, gateway.url, token

    async def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": bearer(self.token, **headers)}
        if body is not None:
            kwargs["json"] = body
        async with self.http.request(method, self.base + path, **kwargs) as resp:
            payload = await resp.json() if resp.content_type == "application/json" else None
            self.last_headers = resp.headers
            return resp.status, payload

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200, **headers: str) -> Any:
        got, payload = await self.call(method, path, body, **headers)
        assert got == status, (method, path, got, payload)
        return payload

    async def refused(self, method: str, path: str, status: int, code: str, body: Any = None,
                      **headers: str) -> dict[str, Any]:
        got, payload = await self.call(method, path, body, **headers)
        assert got == status, (method, path, got, payload)
        assert_error_shape(payload, code)
        return dict(payload["error"])


async def candidates(http: aiohttp.ClientSession, gateway: Process, pg: asyncpg.Connection, redis_url: str,
                     count: int, *, level: str = "bachelor", major: str = "金融学",
                     photo: bool = True) -> list[tuple[int, Client]]:
    ids = await make_candidates(pg, count, photo=photo)
    await pg.execute("""INSERT INTO educations (candidate_id, cert_no, school, graduated_on, major, level, mode)
                        SELECT c, 'C' || c, '某大学', '2012-07-01', $2, $3, 'full_time' FROM unnest($1::bigint[]) c""",
                     ids, major, level)
    tokens = await make_sessions(redis_url, ids)
    return [(c, Client(http, gateway, t)) for c, t in zip(ids, tokens, strict=True)]


async def enrol(client: Client, exam_id: int, **changes: Any) -> int:
    made = await client.ok("POST", "/api/v1/registrations", {**ENROLMENT, "exam_id": exam_id, **changes}, status=201)
    return int(made["registration_id"])


async def status_in_pg(pg: asyncpg.Connection, registration_id: int) -> str:
    return str(await pg.fetchval("SELECT status FROM registrations WHERE id = $1", registration_id))


async def test_commitment_route_seat_order_and_withdrawn_commitment(
        gateway: Process, pg: asyncpg.Connection, redis_url: str, store: aioredis.Redis,
        http: aiohttp.ClientSession) -> None:
    exam_id, (site,) = await exam_ready(pg, gateway, [("11", 5)])
    await wait_inventory(store, exam_id, [site])
    await set_live(gateway, {"seats": {"hold_ttl_s": 600}})
    admin = Client(http, gateway, gateway.admin_token())
    [(_, alice)] = await candidates(http, gateway, pg, redis_url, 1)
    base = f"/api/v1/exams/{exam_id}/documents"
    await alice.refused("GET", f"{base}/commitment", 404, "document_not_found")
    await admin.ok("POST", f"/admin/api/v1/exams/{exam_id}/documents/notice", {"title": "报考须知", "text": "须知"},
                   status=201)
    published = await admin.ok("POST", f"/admin/api/v1/exams/{exam_id}/documents/commitment",
                               {"title": "告知承诺书", "text": "本人承诺符合报考条件。"}, status=201)
    text = await alice.ok("GET", f"{base}/commitment")
    assert (text["version"], text["title"], text["sha256"]) == (1, "告知承诺书", published["sha256"])
    await alice.refused("GET", f"{base}/rules", 404, "document_not_found")

    registration = await enrol(alice, exam_id)
    path = f"/api/v1/registrations/{registration}"
    # Not approved: neither a seat nor an order, whatever the page shows.
    await alice.refused("PUT", f"{path}/seat", 409, "not_approved", {"site_id": site})
    await alice.refused("POST", f"{path}/orders", 409, "not_approved", {"provider": "alipay"})
    await alice.refused("POST", f"{path}/confirm", 409, "commitment_required")
    await alice.refused("POST", f"{path}/commitment", 409, "document_version_changed", {"version": 7})
    signed = await alice.ok("POST", f"{path}/commitment", {"version": 1})
    assert signed["version"] == 1 and signed["signed_at"].endswith("+08:00")
    stored = await pg.fetchrow("SELECT text_sha256, address FROM registration_commitments WHERE registration_id = $1",
                               registration)
    assert stored["text_sha256"] == published["sha256"] and stored["address"] == "127.0.0.1"
    record = await alice.ok("GET", path)
    assert record["commitment"]["version"] == 1 and record["status"] == "draft"
    assert record["commitment_route"] is True and record["cancellation"] is None
    again = await alice.refused("POST", "/api/v1/registrations", 409, "already_registered",
                                {**ENROLMENT, "exam_id": exam_id})
    assert again["details"] == {"exam_id": exam_id, "registration_id": registration}  # where to continue

    confirmed = await alice.ok("POST", f"{path}/confirm", {})
    assert (confirmed["status"], confirmed["reasons"]) == ("approved", [])
    held = await alice.ok("PUT", f"{path}/seat", {"site_id": site})
    assert held["site_id"] == site and await seats_left(store, exam_id, site) == 4

    withdrawn = await alice.ok("DELETE", f"{path}/commitment")
    assert withdrawn["status"] == "cancelled"
    assert await seats_left(store, exam_id, site) == 5  # the seat came back at once
    assert await store.hget(qkeys.holds(exam_id), str(registration)) is None
    await alice.refused("PUT", f"{path}/seat", 409, "registration_inactive", {"site_id": site})
    await alice.refused("POST", f"{path}/confirm", 409, "cannot_confirm")
    assert [e["action"] for e in await alice.ok("GET", f"{path}/history")] == [
        "sign_commitment", "confirm", "withdraw_commitment"]


async def test_no_confirmation_without_an_approved_photo(gateway: Process, pg: asyncpg.Connection, redis_url: str,
                                                        http: aiohttp.ClientSession) -> None:
    exam_id, _ = await exam_ready(pg, gateway, [("11", 5)])
    [(member, carol)] = await candidates(http, gateway, pg, redis_url, 1, photo=False)
    registration = await enrol(carol, exam_id)
    path = f"/api/v1/registrations/{registration}"
    draft = await carol.ok("GET", path)
    assert (draft["photo_status"], draft["missing"]) == (None, ["photo"])
    refused = await carol.refused("POST", f"{path}/confirm", 409, "photo_required")
    assert refused["details"] == {"photo_status": None} and "上传" in refused["message"]
    # A photo the checks sent to review: still waiting.
    await give_approved_photos(pg, [member])
    await pg.execute("UPDATE photos SET status = 'needs_review', locked = false WHERE candidate_id = $1", member)
    waiting = await carol.refused("POST", f"{path}/confirm", 409, "photo_required")
    assert waiting["details"] == {"photo_status": "needs_review"} and "审核中" in waiting["message"]
    assert (await status_in_pg(pg, registration)) == "draft"
    await pg.execute("UPDATE photos SET status = 'approved', locked = true WHERE candidate_id = $1", member)
    assert (await carol.ok("GET", path))["missing"] == []
    assert (await carol.ok("POST", f"{path}/confirm"))["status"] == "approved"


async def test_archive_members_go_to_a_person(gateway: Process, pg: asyncpg.Connection, redis_url: str,
                                              http: aiohttp.ClientSession) -> None:
    exam_id, _ = await exam_ready(pg, gateway, [("11", 5)])
    admin = Client(http, gateway, gateway.admin_token())
    await admin.ok("POST", f"/admin/api/v1/exams/{exam_id}/documents/commitment", {"title": "承诺", "text": "承诺"},
                   status=201)
    [(member, bob)] = await candidates(http, gateway, pg, redis_url, 1)
    id_number = await pg.fetchval("SELECT id_number FROM candidates WHERE id = $1", member)
    # Typed by an operator with full-width digits and a trailing space: the same identity as the candidate's.
    spelled = "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in id_number) + " "
    csv_body = f"id_number,exam_family,violation,starts_on,ends_on\n{spelled},*,替考,2020-01-01,2099-12-31\n"
    async with http.post(f"{gateway.url}/admin/api/v1/integrity-records", data=csv_body.encode(),
                         headers=bearer(admin.token, **{"Content-Type": "text/csv"})) as resp:
        assert resp.status == 201, await resp.text()
        assert await resp.json() == {"imported": 1, "already_there": 0}
    bad = await admin.refused("POST", "/admin/api/v1/integrity-records", 422, "validation_failed",
                              {"records": [{"id_number": "X1234567", "violation": "v", "starts_on": "2020-02-02",
                                            "ends_on": "2020-01-01"}]})
    assert bad["details"]["fields"] == {"records.0.ends_on": "before_starts_on"}

    registration = await enrol(bob, exam_id)
    refused = await bob.refused("POST", f"/api/v1/registrations/{registration}/commitment", 403,
                                "commitment_not_allowed", {"version": 1})
    assert refused["details"]["reason"] == "integrity_record"
    confirmed = await bob.ok("POST", f"/api/v1/registrations/{registration}/confirm")
    assert confirmed["status"] == "under_review"
    assert [r["code"] for r in confirmed["reasons"]] == ["integrity_record"]


async def test_eligibility_mismatch_rejection_edit_and_locks(gateway: Process, pg: asyncpg.Connection,
                                                             redis_url: str, http: aiohttp.ClientSession) -> None:
    exam_id, (site,) = await exam_ready(pg, gateway, [("11", 5)])
    admin = Client(http, gateway, gateway.admin_token())
    invalid = await admin.refused("PUT", f"/admin/api/v1/exams/{exam_id}/eligibility/mid", 422, "validation_failed",
                                  {"paths": [{"education": "kindergarten"}]})
    assert "paths.0.education" in invalid["details"]["fields"]
    await admin.refused("PUT", f"/admin/api/v1/exams/{exam_id}/eligibility/nope", 404, "level_not_found", RULES)
    assert (await admin.ok("PUT", f"/admin/api/v1/exams/{exam_id}/eligibility/mid", RULES))["paths"]

    [(_, other)] = await candidates(http, gateway, pg, redis_url, 1, major="历史学")
    registration = await enrol(other, exam_id)
    warning = await other.refused("POST", f"/api/v1/registrations/{registration}/confirm", 422,
                                  "major_mismatch_unacknowledged")
    assert warning["details"] == {"major": "历史学", "majors_same": ["金融学"], "majors_related": ["经济学"]}
    acknowledged = await other.ok("POST", f"/api/v1/registrations/{registration}/confirm",
                                  {"acknowledge_major_mismatch": True})
    assert (acknowledged["status"], [r["code"] for r in acknowledged["reasons"]]) == ("under_review",
                                                                                      ["major_mismatch"])

    [(_, junior)] = await candidates(http, gateway, pg, redis_url, 1, level="college")
    registration = await enrol(junior, exam_id)  # college with 5 years: not enough
    path = f"/api/v1/registrations/{registration}"
    rejected = await junior.ok("POST", f"{path}/confirm")
    assert (rejected["status"], [r["code"] for r in rejected["reasons"]]) == ("rejected", ["education_insufficient"])
    assert (await junior.ok("GET", path))["reasons"][0]["message"]
    await junior.refused("PUT", f"{path}/seat", 409, "not_approved", {"site_id": site})
    for change, field in (({"level": "nope"}, "level"), ({"work_years": 99}, "work_years"),
                          ({"review_point": 10**9}, "review_point"), ({"exam_id": 1}, "exam_id")):
        problems = await junior.refused("PATCH", path, 422, "validation_failed", change)
        assert set(problems["details"]["fields"]) == {field}, problems
    edited = await junior.ok("PATCH", path, {"work_years": 7})
    assert edited["status"] == "draft"
    assert (await junior.ok("POST", f"{path}/confirm"))["status"] == "approved"
    locked = await junior.refused("PATCH", path, 409, "registration_locked", {"work_years": 8})
    assert locked["details"]["status"] == "approved" and "审核通过" in locked["message"]
    [(_, stranger)] = await candidates(http, gateway, pg, redis_url, 1)
    await stranger.refused("PATCH", path, 404, "registration_not_found", {"work_years": 8})
    await stranger.refused("POST", f"{path}/withdraw", 404, "registration_not_found")
    await stranger.refused("POST", f"{path}/cancel", 404, "registration_not_found")
    await stranger.refused("POST", f"{path}/confirm", 404, "registration_not_found")
    await stranger.refused("POST", f"{path}/commitment", 404, "registration_not_found", {"version": 1})
    await stranger.refused("GET", f"{path}/history", 404, "registration_not_found")


async def test_withdraw_and_cancel_release_the_seat_and_close_the_order(
        gateway: Process, pg: asyncpg.Connection, redis_url: str, store: aioredis.Redis,
        http: aiohttp.ClientSession) -> None:
    exam_id, (site, shandong_site) = await exam_ready(pg, gateway, [("11", 5), ("37", 5)])
    await wait_inventory(store, exam_id, [site, shandong_site])
    await set_live(gateway, {"seats": {"hold_ttl_s": 600}})
    admin = Client(http, gateway, gateway.admin_token())
    await admin.ok("PUT", f"/admin/api/v1/exams/{exam_id}/review-rules/37",
                   {"review_mode": "auto", "withdraw_rule": "locked"})
    (_, carol), (_, dave) = await candidates(http, gateway, pg, redis_url, 2)
    registration = await enrol(carol, exam_id)
    path = f"/api/v1/registrations/{registration}"
    await carol.refused("POST", f"{path}/withdraw", 409, "withdraw_not_allowed")  # a draft has nothing to withdraw
    await carol.ok("POST", f"{path}/confirm")
    await carol.ok("PUT", f"{path}/seat", {"site_id": site})
    await pg.execute("""INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at)
                        VALUES ($1, $2, 'alipay', 100, now() + interval '10 minutes')""", f"EGT{registration}",
                     registration)
    withdrawn = await carol.ok("POST", f"{path}/withdraw")
    assert withdrawn["status"] == "draft"
    assert await seats_left(store, exam_id, site) == 5
    assert await pg.fetchval("SELECT status FROM orders WHERE registration_id = $1", registration) == "closed"
    assert int(await store.hget(qkeys.seat_rights(exam_id), str(registration))) < 0  # revoked
    await carol.refused("PUT", f"{path}/seat", 409, "not_approved", {"site_id": site})
    cancelled = await carol.ok("POST", f"{path}/cancel")
    assert cancelled["status"] == "cancelled" and await status_in_pg(pg, registration) == "cancelled"
    await carol.refused("POST", f"{path}/cancel", 409, "invalid_state")

    locked = await enrol(dave, exam_id, province="37")
    await dave.ok("POST", f"/api/v1/registrations/{locked}/confirm")
    refused = await dave.refused("POST", f"/api/v1/registrations/{locked}/withdraw", 409, "withdraw_not_allowed")
    assert "不能撤回" in refused["message"]
    await pg.execute("UPDATE registrations SET status = 'paid', site_id = $2 WHERE id = $1", locked, shandong_site)
    request = await dave.ok("POST", f"/api/v1/registrations/{locked}/cancel", status=202)
    assert request["status"] == "paid"
    assert (await dave.ok("GET", f"/api/v1/registrations/{locked}"))["cancellation"] == "pending"
    assert await pg.fetchval("SELECT status FROM cancellation_requests WHERE registration_id = $1", locked) == "pending"

    # An operator approves it into a refund: cancelled, the seat back, the payment refunded through its provider.
    await pg.execute("""INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at, status,
                                            paid_at, provider_trade_no)
                        VALUES ($1, $2, 'wechat', 6000, now(), 'paid', now(), $3)""",
                     f"EGP{locked}", locked, f"TR{locked}")
    pending = await admin.ok("GET", "/admin/api/v1/cancellations")
    assert locked in [c["registration_id"] for c in pending["cancellations"]]
    decided = await admin.ok("POST", f"/admin/api/v1/registrations/{locked}/cancellation", {"decision": "approve"},
                             status=202)
    assert decided["status"] == "cancelled" and decided["refund_id"]
    refund = await pg.fetchrow("SELECT order_no, amount_fen, reason FROM refunds WHERE refund_id = $1",
                               decided["refund_id"])
    assert tuple(refund.values()) == (f"EGP{locked}", 6000, "cancellation")
    assert await status_in_pg(pg, locked) == "cancelled"
    await admin.refused("POST", f"/admin/api/v1/registrations/{locked}/cancellation", 409, "invalid_state",
                        {"decision": "approve"})


async def test_operators_review_within_their_scope_once(gateway: Process, pg: asyncpg.Connection, redis_url: str,
                                                        store: aioredis.Redis, http: aiohttp.ClientSession) -> None:
    exam_id, (beijing, jinan) = await exam_ready(pg, gateway, [("11", 5), ("37", 5)])
    await wait_inventory(store, exam_id, [beijing, jinan])
    admin = Client(http, gateway, gateway.admin_token())
    for province in ("11", "37"):
        await admin.ok("PUT", f"/admin/api/v1/exams/{exam_id}/review-rules/{province}", {"review_mode": "online"})
    name = f"sd{exam_id}"
    await admin.ok("POST", "/admin/api/v1/operators", {"name": name, "role": "reviewer", "provinces": ["37"]},
                   status=201)
    issued = await admin.ok("POST", f"/admin/api/v1/operators/{name}/tokens", {}, status=201)
    reviewer = Client(http, gateway, issued["token"])

    (_, erin), (_, frank) = await candidates(http, gateway, pg, redis_url, 2)
    in_beijing = await enrol(erin, exam_id)
    in_shandong = await enrol(frank, exam_id, province="37")
    for client, registration in ((erin, in_beijing), (frank, in_shandong)):
        assert (await client.ok("POST", f"/api/v1/registrations/{registration}/confirm"))["status"] == "under_review"

    # Out of scope is not there; other admin routes are not the reviewer's.
    await reviewer.refused("GET", f"/admin/api/v1/registrations/{in_beijing}", 404, "registration_not_found")
    await reviewer.refused("POST", f"/admin/api/v1/registrations/{in_beijing}/review", 404, "registration_not_found",
                           {"decision": "approve"})
    await reviewer.refused("GET", "/admin/api/v1/config", 403, "forbidden")
    await reviewer.refused("GET", "/admin/api/v1/refunds", 403, "forbidden")
    await reviewer.refused("POST", "/admin/api/v1/integrity-records", 403, "forbidden", {"records": []})
    await reviewer.refused("GET", "/admin/api/v1/integrity-records", 403, "forbidden")
    await reviewer.refused("GET", "/admin/api/v1/cancellations", 403, "forbidden")
    queue = await reviewer.ok("GET", f"/admin/api/v1/reviews?exam_id={exam_id}")
    assert [r["registration_id"] for r in queue["registrations"]] == [in_shandong]
    assert {r["registration_id"] for r in (await admin.ok("GET", f"/admin/api/v1/reviews?exam_id={exam_id}"))[
        "registrations"]} == {in_beijing, in_shandong}

    details = await reviewer.ok("GET", f"/admin/api/v1/registrations/{in_shandong}")
    etag = reviewer.last_headers["ETag"]
    assert etag == f'"{details["version"]}"' and details["educations"][0]["major"] == "金融学"
    review = f"/admin/api/v1/registrations/{in_shandong}/review"
    await reviewer.refused("POST", review, 422, "validation_failed", {"decision": "reject", "reasons": []})
    await reviewer.refused("POST", review, 412, "precondition_failed", {"decision": "approve"},
                           **{"If-Match": f'"{details["version"] - 1}"'})
    rejected = await reviewer.ok("POST", review, {"decision": "reject",
                                                  "reasons": ["materials_incomplete", "学历证书照片不清晰"]},
                                 **{"If-Match": etag})
    assert rejected["status"] == "rejected"
    assert rejected["reasons"] == [{"code": "materials_incomplete", "message": "证明材料不全或不清晰"},
                                   {"code": "other", "message": "学历证书照片不清晰"}]
    again = await reviewer.refused("POST", review, 409, "already_decided", {"decision": "approve"})
    assert again["details"]["status"] == "rejected"
    assert await pg.fetchval("SELECT decided_by FROM registrations WHERE id = $1", in_shandong) == name

    # The candidate sees why, edits, submits again; the reviewer approves; the seat follows.
    seen = await frank.ok("GET", f"/api/v1/registrations/{in_shandong}")
    assert seen["reasons"][1]["message"] == "学历证书照片不清晰"
    await frank.ok("PATCH", f"/api/v1/registrations/{in_shandong}", {"work_years": 6})
    await frank.ok("POST", f"/api/v1/registrations/{in_shandong}/confirm")
    bulk = await reviewer.ok("POST", "/admin/api/v1/reviews/approve",
                             {"registration_ids": [in_shandong, in_beijing, 10**12]})
    assert bulk["results"] == {str(in_shandong): {"result": "approved", "version": bulk["results"][str(in_shandong)][
        "version"]}, str(in_beijing): {"result": "not_found"}, str(10**12): {"result": "not_found"}}
    held = await frank.ok("PUT", f"/api/v1/registrations/{in_shandong}/seat", {"site_id": jinan})
    assert held["site_id"] == jinan
    actions = [(e["action"], e["to"]) for e in (await admin.ok("GET", f"/admin/api/v1/registrations/{in_shandong}"))[
        "history"]]
    assert actions == [("confirm", "under_review"), ("decide", "rejected"), ("edit", "draft"),
                       ("confirm", "under_review"), ("decide", "approved")]

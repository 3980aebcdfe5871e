"""``examgate ctl archive`` and ``examgate ctl cancellations`` against a running gateway."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

from examgate.ctl import CtlError, read_archive_file
from loadtest.processes import Process, start_gateway
from tests.examgate.test_cli_operators import ctl
from tests.factories import make_exam
from tests.gateway.seat_stack import make_candidates, make_registrations


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    from tests.conftest import TEST_REDIS_URL

    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=1)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()


def test_archive_import_list_remove(gateway: Process, tmp_path: Path) -> None:
    person = f"P{secrets.token_hex(5).upper()}"
    good = tmp_path / "archive.csv"
    good.write_text("id_number,exam_family,violation,starts_on,ends_on\n"
                    f"{person},DEMO-ECON,替考,2024-01-01,2028-12-31\n"
                    f"{person},*,携带电子设备,2025-01-01,2027-12-31\n", encoding="utf-8")
    done = ctl(gateway, "archive", "import", str(good))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported 2 record(s), 0 already there"
    assert "already there" in ctl(gateway, "archive", "import", str(good)).stdout  # idempotent
    assert ctl(gateway, "archive", "import", str(good)).stdout.strip() == "imported 0 record(s), 2 already there"

    bad = tmp_path / "bad.csv"
    bad.write_text("id_number,violation,starts_on,ends_on\nX1234567,v,2020-02-02,2020-01-01\n", encoding="utf-8")
    refused = ctl(gateway, "archive", "import", str(bad))
    assert refused.returncode == 1 and "line 2: ends_on: before_starts_on" in refused.stderr, refused.stderr
    wrong_header = tmp_path / "wrong.csv"
    wrong_header.write_text("name,date\nx,y\n", encoding="utf-8")
    assert "the header must be" in ctl(gateway, "archive", "import", str(wrong_header)).stderr

    listed = ctl(gateway, "archive", "list", "--id-number", person)
    assert listed.returncode == 0 and listed.stdout.count(person) == 2, listed.stdout
    record_id = listed.stdout.splitlines()[2].split()[0]
    assert ctl(gateway, "archive", "remove", record_id).stdout.strip() == f"record {record_id} removed"
    assert "removed" in ctl(gateway, "archive", "list", "--id-number", person).stdout
    assert ctl(gateway, "archive", "remove", record_id).returncode == 1  # no such record in force


def test_read_archive_file_takes_json_too(tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    path.write_text('{"records": [{"id_number": "X1234567", "violation": "v", "starts_on": "2020-01-01", '
                    '"ends_on": "2021-01-01"}]}', encoding="utf-8")
    assert read_archive_file(str(path))[0]["id_number"] == "X1234567"
    with pytest.raises(CtlError):
        read_archive_file(str(tmp_path / "missing.csv"))


async def test_cancellations_approve_and_refuse(gateway: Process, pg: asyncpg.Connection) -> None:
    exam_id = await make_exam(pg, sites=[("11", 5)])
    site = await pg.fetchval("SELECT min(id) FROM exam_sites WHERE exam_id = $1", exam_id)
    people = await make_candidates(pg, 2)
    kept, refunded = await make_registrations(pg, exam_id, people)
    for registration in (kept, refunded):
        await pg.execute("UPDATE registrations SET status = 'paid', site_id = $2 WHERE id = $1", registration, site)
        await pg.execute("""INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at, status,
                                                paid_at, provider_trade_no)
                            VALUES ($1, $2, 'alipay', 6000, now(), 'paid', now(), $3)""",
                         f"EGC{registration}", registration, f"TC{registration}")
        await pg.execute("INSERT INTO cancellation_requests (registration_id) VALUES ($1)", registration)
    listed = ctl(gateway, "cancellations")
    assert str(kept) in listed.stdout and str(refunded) in listed.stdout
    approved = ctl(gateway, "cancellations", "approve", str(refunded))
    assert approved.returncode == 0 and "refund RF" in approved.stdout, approved.stderr
    refused = ctl(gateway, "cancellations", "refuse", str(kept), "--note", "已开考")
    assert refused.returncode == 0, refused.stderr
    statuses = dict(await pg.fetch("SELECT id, status FROM registrations WHERE id = ANY($1::bigint[])",
                                   [kept, refunded]))
    assert statuses == {kept: "paid", refunded: "cancelled"}
    assert "cancellation_request_not_found" in ctl(gateway, "cancellations", "refuse", str(kept)).stderr

"""The catalogue kinds together: registered, the example files import cleanly, the catalogue shows the result."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from core.catalogue import load_catalogue
from core.imports.kinds import KINDS
from gateway.catalogue import CatalogueCache
from tests.imports.catalogue_data import CSV, NDJSON, csv_body, exam_line, imported, ndjson, new_code, open_pool

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "imports"
# In the order they depend on each other: sites and certificates name the exams, records their family.
EXAMPLE_FILES = (("exams", "exams.ndjson", NDJSON, 2), ("sites", "sites.csv", CSV, 5),
                 ("certificates", "certificates.csv", CSV, 3), ("integrity_records", "integrity_records.csv", CSV, 2))


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async for p in open_pool(pg_dsn):
        yield p


@pytest.mark.unit
def test_the_four_kinds_are_registered() -> None:
    assert {"exams", "sites", "certificates", "integrity_records"} <= KINDS.keys()
    assert all(KINDS[kind].name == kind for kind in KINDS)


async def test_the_example_files_import_cleanly_and_once(pool: asyncpg.Pool) -> None:
    for kind, name, content_type, rows in EXAMPLE_FILES:
        data = (EXAMPLES / name).read_bytes()
        result = await imported(pool, kind, data, content_type=content_type)
        assert (result.rows, result.applied) == (rows, rows), kind
    for kind, name, content_type, rows in EXAMPLE_FILES:  # again, as new batches: nothing to change
        result = await imported(pool, kind, (EXAMPLES / name).read_bytes(), content_type=content_type)
        assert (result.rows, result.applied) == (rows, 0), kind
    exam = (await load_catalogue(pool)).exams
    (example,) = [e for e in exam.values() if e.code == "EXAMPLE-2025-ECON"]
    assert await pool.fetchval("SELECT family FROM exams WHERE id = $1", example.id) == "EXAMPLE-ECON"
    assert example.specialty_subjects("ZJ", "JR") == ["ZJ01", "ZJ12"]
    assert sorted(site.capacity for site in example.sites.values()) == [300, 480, 600]
    assert sorted(point.city for point in example.review_points.values()) == ["济南市", "青岛市"]
    assert await pool.fetchval("SELECT count(*) FROM certificates WHERE exam_id = $1", example.id) == 3
    assert await pool.fetchval("SELECT count(*) FROM integrity_records WHERE exam_family IN ('EXAMPLE-ECON', '*')"
                               " AND batch_id IS NOT NULL") >= 2


async def test_the_gateways_catalogue_shows_an_imported_exam_and_its_sites(pool: asyncpg.Pool) -> None:
    cache = CatalogueCache(pool, refresh_s=5)
    code = new_code("CAT")
    await imported(pool, "exams", ndjson(exam_line(code)), content_type=NDJSON)
    await cache.refresh()  # what every gateway process does each EXAMGATE_CATALOGUE_REFRESH_S
    listed = {e["code"]: e for e in orjson.loads(cache.exams_json)}
    assert [lvl["code"] for lvl in listed[code]["levels"]] == ["CJ", "ZJ"]
    assert listed[code]["provinces"] == []
    exam_id = listed[code]["id"]
    header = ("exam_code", "province", "city", "name", "address", "capacity", "rooms", "seats_per_room", "kind")
    site = (code, "32", "南京市", "南京考点", "鼓楼区 1 号", 90, 3, None, "site")
    await imported(pool, "sites", csv_body(header, [site]))
    renamed = exam_line(code, name="改名后的考试")
    await imported(pool, "exams", ndjson(renamed), content_type=NDJSON)
    await cache.refresh()
    exam = cache.exam(exam_id)
    assert exam.name == "改名后的考试"
    assert exam.provinces == ["32"]
    assert [(s.name, s.capacity) for s in exam.sites_in("32")] == [("南京考点", 90)]

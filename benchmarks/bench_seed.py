"""Seeding a million candidates: the whole demo data set, from an empty schema to ANALYZE, in one timed call.

Runs ``seed.seed`` for 1,000,000 candidates into a scratch database (``examgate_bench_seed_<random>``
on ``EXAMGATE_BENCH_DATABASE_URL``, default ``postgresql://postgres@127.0.0.1:5432/``), counts what
it wrote and drops the database.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from benchmarks.common import scratch_database
from seed import seed

CANDIDATES = 1_000_000
TARGET_S = 60.0
_COUNTS = {
    "candidates": "SELECT count(*) FROM candidates",
    "educations": "SELECT count(*) FROM educations",
    "registrations": "SELECT count(*) FROM registrations",
    "admission_tickets": "SELECT count(*) FROM admission_tickets",
    "scores": "SELECT count(*) FROM scores",
    "exam_sites": "SELECT count(*) FROM exam_sites",
}


async def _seed_and_count(dsn: str, candidates: int) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    await seed(dsn, candidates)
    elapsed_s = time.perf_counter() - started
    conn = await asyncpg.connect(dsn)
    try:
        counts = {table: int(await conn.fetchval(sql)) for table, sql in _COUNTS.items()}
    finally:
        await conn.close()
    return elapsed_s, counts


def run(candidates: int = CANDIDATES) -> list[dict[str, Any]]:
    """Seed ``candidates`` into a scratch database once and report the wall time against the target."""
    with scratch_database("examgate_bench_seed") as dsn:
        elapsed_s, counts = asyncio.run(_seed_and_count(dsn, candidates))
    print(f"  seeded {candidates:,} candidates in {elapsed_s:.1f} s", flush=True)
    return [
        {
            "benchmark": "seed",
            "metric": "seed_1m_candidates_s" if candidates == CANDIDATES else f"seed_{candidates}_candidates_s",
            "value": round(elapsed_s, 2),
            "unit": "s",
            "target": f"<= {TARGET_S:g}",
            "passed": elapsed_s <= TARGET_S,
            "details": {"candidates_requested": candidates, "rows": counts},
        }
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure)

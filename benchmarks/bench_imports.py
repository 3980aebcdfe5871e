"""Importing a million scores: one exam's whole score file through ``core.imports.run_import``, then a correction.

In a scratch database (``examgate_bench_imports_<random>``): an exam with 1,000,000 paid
registrations and admission tickets, generated in SQL (benchmarks/import_data.py, not timed).
Timed: ``run_import`` of a 1,000,000-row scores CSV (one subject per ticket) — parse, COPY into
the staging table, every check, the apply of 1,000,000 new scores, the
batch row — then a correction batch of 1,000 rows whose scores differ, in the same exam. Each
import's stages are timed through its ``progress`` callback.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncpg

from benchmarks.common import scratch_database
from benchmarks.import_data import make_exam_with_tickets, score_csv
from core.imports import run_import

ROWS = 1_000_000
CORRECTION_ROWS = 1_000
TARGET_S = 60.0


async def _timed_import(pool: asyncpg.Pool, data: bytes, batch_id: str) -> tuple[float, int, dict[str, float]]:
    started = time.perf_counter()
    stages: dict[str, float] = {}
    last = started

    def progress(stage: str, done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        stages[stage] = round(now - last, 2)
        last = now

    result = await run_import(pool, "scores", data, content_type="text/csv", batch_id=batch_id, actor="bench",
                              progress=progress)
    return time.perf_counter() - started, result.applied, stages


async def _measure(dsn: str, rows: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        setup_started = time.perf_counter()
        exam = await make_exam_with_tickets(conn, rows)
        setup_s = time.perf_counter() - setup_started
    finally:
        await conn.close()
    data = score_csv(exam, range(1, rows + 1))
    correction = score_csv(exam, range(1, rows + 1, max(1, rows // CORRECTION_ROWS)), offset=0.5)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, command_timeout=600)
    assert pool is not None
    try:
        load_before = os.getloadavg()[0]
        seconds, applied, stages = await _timed_import(pool, data, "bench-scores-1")
        load_after = os.getloadavg()[0]
        fix_s, fixed, fix_stages = await _timed_import(pool, correction, "bench-scores-fix")
    finally:
        await pool.close()
    return {"rows": rows, "bytes": len(data), "setup_s": round(setup_s, 1), "seconds": seconds, "applied": applied,
            "stages_s": stages, "correction_rows": correction.count(b"\n") - 1, "correction_s": fix_s,
            "correction_applied": fixed, "correction_stages_s": fix_stages,
            # The machine's 1-minute load average around the import: other work shares the cores.
            "load_average": [round(load_before, 2), round(load_after, 2)]}


def run(rows: int = ROWS) -> list[dict[str, Any]]:
    """Import ``rows`` scores and a correction once, and report the times against the target."""
    with scratch_database("examgate_bench_imports") as dsn:
        found = asyncio.run(_measure(dsn, rows))
    seconds = found["seconds"]
    print(f"  imported {rows:,} scores in {seconds:.1f} s ({rows / seconds:,.0f} rows/s); "
          f"correction of {found['correction_rows']:,} in {found['correction_s']:.2f} s", flush=True)
    suffix = "1m" if rows == ROWS else str(rows)
    details = {key: value for key, value in found.items() if key not in ("seconds", "correction_s")}
    return [
        {"benchmark": "imports", "metric": f"import_{suffix}_scores_s", "value": round(seconds, 2), "unit": "s",
         "target": f"<= {TARGET_S:g}", "passed": seconds <= TARGET_S, "details": details},
        {"benchmark": "imports", "metric": "import_scores_rows_per_s", "value": round(rows / seconds), "unit": "rows/s",
         "target": None, "passed": None, "details": {}},
        {"benchmark": "imports", "metric": "import_correction_1k_s", "value": round(found["correction_s"], 3),
         "unit": "s", "target": None, "passed": None, "details": {"applied": found["correction_applied"],
                                                                  "stages_s": found["correction_stages_s"]}},
    ]


if __name__ == "__main__":
    import sys

    for figure in run(int(sys.argv[1]) if len(sys.argv) > 1 else ROWS):
        print(figure)

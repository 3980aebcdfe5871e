"""The exam catalogue held in process memory, with its JSON rendered once per refresh."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import orjson

from core.catalogue import Catalogue, Exam, load_catalogue
from core.timeutil import iso_local
from gateway.errors import NotFoundError
from gateway.pathids import path_id

log = logging.getLogger("examgate.catalogue")


def exam_summary(exam: Exam) -> dict[str, Any]:
    """One exam as ``GET /api/v1/exams`` shows it."""
    return {
        "id": exam.id,
        "code": exam.code,
        "name": exam.name,
        "registration_opens_at": iso_local(exam.registration_opens_at),
        "registration_closes_at": iso_local(exam.registration_closes_at),
        "ticket_print_opens_at": iso_local(exam.ticket_print_opens_at),
        "ticket_print_closes_at": iso_local(exam.ticket_print_closes_at),
        "exam_starts_at": iso_local(exam.exam_starts_at),
        "score_release_at": iso_local(exam.score_release_at),
        "fee_per_subject_fen": exam.fee_per_subject_fen,
        "levels": exam.levels,
        "provinces": exam.provinces,
        "family": exam.family_code,
        "year": exam.year,
        "validity_years": exam.validity_years,
    }


class ExamNotFound(NotFoundError):
    """No such exam in this process's catalogue (404 ``exam_not_found``; ``details.exam_id`` as asked)."""

    code, message = "exam_not_found", "考试不存在"

    def __init__(self, asked: int | str) -> None:
        super().__init__(details={"exam_id": asked})


class CatalogueCache:
    """The latest catalogue read from PostgreSQL; readers never wait for a refresh."""

    def __init__(self, pool: asyncpg.Pool, refresh_s: float) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self.catalogue = Catalogue({})
        self.exams_json = b"[]"
        self.loaded = False

    def exam(self, exam_id: int) -> Exam:
        """The exam, or ``ExamNotFound`` (also for one created after the last refresh)."""
        exam = self.catalogue.exam(exam_id)
        if exam is None:
            raise ExamNotFound(exam_id)
        return exam

    def exam_of_path(self, raw: str) -> Exam:
        """The exam a path's ``{exam_id}`` names (ASCII digits only), or ``ExamNotFound`` naming what was asked."""
        exam_id = path_id(raw)
        exam = self.catalogue.exam(exam_id) if exam_id is not None else None
        if exam is None:
            raise ExamNotFound(raw)
        return exam

    async def refresh(self) -> None:
        """Re-read the catalogue and re-render the exams list."""
        catalogue = await load_catalogue(self._pool)
        rendered = orjson.dumps([exam_summary(e) for e in catalogue.exams.values()])
        self.catalogue, self.exams_json, self.loaded = catalogue, rendered, True

    async def run(self) -> None:
        """Refresh periodically, keeping the last good catalogue when PostgreSQL fails."""
        while True:
            try:
                await self.refresh()
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("catalogue refresh failed, keeping the last one: %r", exc)
            await asyncio.sleep(self._refresh_s)

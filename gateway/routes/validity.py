"""Pass marks (合格标准), a candidate's subjects still valid at enrolment, and the families' validity periods.

``GET /api/v1/exams/{exam_id}/pass-marks`` answers from the in-memory catalogue (which loads the
published pass marks with the exams): its body is rendered once per exam and catalogue refresh and
served with an ETag, so a 合格标准 page at score release costs neither store. The candidate's own
routes ask PostgreSQL (``core.validity``): they are enrolment's, not the peak's.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

import orjson
from aiohttp import web
from pydantic import Field

from core import validity
from core.catalogue import Catalogue, Exam
from core.errors import storage_errors
from core.timeutil import iso_local, utcnow
from gateway import auth, keys
from gateway.adminauth import operator_of
from gateway.bodies import NO_STORE, json_response, read_body
from gateway.errors import ApiError, NotFoundError, ValidationFailed
from gateway.models import Body, Int, Reply, Text
from gateway.routes.operations import audit_note
from gateway.routing import CANDIDATE, OPERATOR, Answer, Param, Routes

routes = Routes("Validity")
log = logging.getLogger("examgate.audit")
PASS_MARKS_CACHE = web.AppKey("pass_marks_rendered", dict)
CACHE_CONTROL = "public, max-age=60"
FAMILY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_FAMILY = re.compile(FAMILY_PATTERN).fullmatch
ADMINS = ("admin",)
FAMILY_AUDIT_PATH = "exam_families.{family}"  # in the config audit (GET /admin/api/v1/audit)


class PassMarkRow(Reply):
    """The pass mark of one level and subject."""

    level: str
    level_name: str
    subject: str
    subject_name: str
    pass_mark: float
    full_mark: float
    published_at: str


class ValidPass(Reply):
    """A subject passed in an earlier exam of the family, still valid for this one."""

    code: str
    name: str
    level: str
    exam_id: int
    year: int
    score: float
    pass_mark: float
    valid_until: int


class Qualified(Reply):
    """A specialty of a level whose every subject is passed within one validity window."""

    level: str
    specialty: str
    subjects: list[ValidPass]


class MyValidSubjects(Reply):
    """What an old candidate carries into this exam of the family."""

    exam_id: int
    family: str
    year: int
    validity_years: int
    archive_no: str | None = Field(description="网报档案号 in the family; null: a new candidate")
    subjects: list[ValidPass] = Field(description="passes still valid: not offered at enrolment (422 "
                                                  "subjects_still_valid)")
    qualified: bool = Field(description="some specialty (of level, when asked) has every subject passed")
    qualifications: list[Qualified]


class FamilyChange(Body):
    """An exam family's name and validity period."""

    name: Text(1, 100)  # type: ignore[valid-type]
    validity_years: Int = Field(ge=1, le=10)


class Family(Reply):
    """An exam family as stored."""

    family: str
    name: str
    validity_years: int
    updated_by: str
    updated_at: str


def pass_marks_of(exam: Exam) -> list[dict[str, Any]]:
    """The exam's published pass marks, level by level and subject by subject in the catalogue's order."""
    rows = []
    for lvl in exam.levels:
        for code, subject in exam.subjects.items():
            mark = exam.pass_marks.get((lvl["code"], code))
            if mark is not None:
                rows.append({"level": lvl["code"], "level_name": lvl["name"], "subject": code,
                             "subject_name": subject.name, "pass_mark": mark.pass_mark,
                             "full_mark": subject.full_mark, "published_at": iso_local(mark.published_at)})
    return rows


def _rendered(app: web.Application, exam: Exam) -> tuple[bytes, str]:
    """The exam's pass marks as JSON and their ETag, rendered once per catalogue."""
    catalogue: Catalogue = app[keys.CATALOGUE].catalogue
    cache: dict[int, tuple[Catalogue, bytes, str]] = app[PASS_MARKS_CACHE]
    hit = cache.get(exam.id)
    if hit is not None and hit[0] is catalogue:
        return hit[1], hit[2]
    body = orjson.dumps(pass_marks_of(exam))
    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
    cache[exam.id] = (catalogue, body, etag)
    return body, etag


@routes.get("/api/v1/exams/{exam_id}/pass-marks", "exams.pass_marks",
            summary="The exam's pass marks (合格标准) per level and subject; an empty list before publication",
            params=(Param("If-None-Match", "header", {"type": "string"}, "the ETag of a copy held"),),
            answers={200: Answer(list[PassMarkRow], "the pass marks (ETag, Cache-Control: public)"),
                     304: Answer(None, "not modified: the copy named by If-None-Match is current")},
            errors={404: "exam_not_found"})
async def get_pass_marks(request: web.Request) -> web.Response:
    """Published pass marks from the in-memory catalogue, with an ETag (304 when the client's copy is current)."""
    exam = request.app[keys.CATALOGUE].exam_of_path(request.match_info["exam_id"])
    body, etag = _rendered(request.app, exam)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    asked = request.headers.get("If-None-Match", "")
    if any(tag.strip().removeprefix("W/") in (etag, "*") for tag in asked.split(",") if tag.strip()):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


def still_valid_refusal(exc: validity.SubjectsStillValid) -> ApiError:
    """422 ``subjects_still_valid`` naming each subject with the year it was passed and until when it counts."""
    return ApiError(exc.message, code="subjects_still_valid", status=422, details={
        "exam_id": exc.exam_id,
        "subjects": [{"code": p.subject, "year": p.year, "valid_until": p.valid_until} for p in exc.passes]})


async def refuse_still_valid(app: web.Application, candidate_id: int, exam: Exam, level: str,
                             subjects: tuple[str, ...]) -> None:
    """422 ``subjects_still_valid`` when the candidate chose subjects of ``level`` passed and still valid."""
    passes = await validity.earlier_passes(app[keys.PG], candidate_id, exam)
    try:
        validity.check_not_carried(exam, level, subjects, passes)
    except validity.SubjectsStillValid as exc:
        raise still_valid_refusal(exc) from None


@routes.get("/api/v1/exams/{exam_id}/my-valid-subjects", "exams.my_valid_subjects", caller=CANDIDATE,
            summary="The caller's passes in earlier exams of the family still valid for this one, and whether a "
                    "specialty is complete (all subjects within one validity window)",
            params=(Param("level", "query", {"type": "string"}, "only this level's qualifications"),),
            answers={200: Answer(MyValidSubjects, "the subjects carried and the qualifications")},
            errors={404: "exam_not_found"})
async def my_valid_subjects(request: web.Request) -> web.Response:
    """The subjects an old candidate need not take again in this exam, with the year passed and until when."""
    candidate = await auth.candidate_id(request)
    exam = request.app[keys.CATALOGUE].exam_of_path(request.match_info["exam_id"])
    level = request.query.get("level")
    pg = request.app[keys.PG]
    passes = await validity.earlier_passes(pg, candidate, exam)
    # The qualification counts this exam's own passes too, once its scores are out.
    own = await validity.passes_in_exam(pg, candidate, exam) if exam.score_release_at <= utcnow() else []
    found = validity.qualifications(exam, passes + own, level)
    return json_response({
        "exam_id": exam.id, "family": exam.family_code, "year": exam.year, "validity_years": exam.validity_years,
        "archive_no": await validity.archive_no(pg, candidate, exam),
        "subjects": [validity.pass_json(exam, p) for p in passes],
        "qualified": bool(found), "qualifications": [validity.qualification_json(exam, q) for q in found],
    }, headers=NO_STORE)


_UPSERT = """
INSERT INTO exam_families AS f (family, name, validity_years, updated_by, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (family) DO UPDATE SET name = excluded.name, validity_years = excluded.validity_years,
                                  updated_by = excluded.updated_by, updated_at = excluded.updated_at
RETURNING family, name, validity_years, updated_by, updated_at,
          (SELECT jsonb_build_object('name', o.name, 'validity_years', o.validity_years)
             FROM exam_families o WHERE o.family = $1) AS before
"""


@routes.put("/admin/api/v1/exam-families/{family}", "admin.exam_families.put", caller=OPERATOR, roles=ADMINS,
            body=FamilyChange,
            summary="Set an exam family's name and how many exam years a passed subject stays valid (audited)",
            params=(Param("family", "path", {"type": "string", "pattern": FAMILY_PATTERN},
                          "the family (exams.family, or an exam's code)"),),
            answers={200: Answer(Family, "the family as stored")},
            errors={404: "not_found: the family is not a valid family name",
                    422: "validation_failed: name (too_long, required), validity_years (1-10)"})
async def put_exam_family(request: web.Request) -> web.Response:
    """Create or change the family; who and when are kept on the row, old and new in the config audit."""
    family = request.match_info["family"]
    if not _FAMILY(family):
        raise NotFoundError("考试类别不存在", code="not_found", details={"family": family[:64]})
    change = await read_body(request, FamilyChange)
    name = change.name.strip()
    if not name:
        raise ValidationFailed({"name": "required"})
    actor = operator_of(request).name
    async with storage_errors(), request.app[keys.PG].acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_UPSERT, family, name, change.validity_years, actor)
        assert row is not None  # an upsert returns its row
        await audit_note(conn, actor, {"path": FAMILY_AUDIT_PATH.format(family=family), "old": row["before"],
                                       "new": {"name": name, "validity_years": change.validity_years}})
    log.info("exam family %s set by %s: name %r, validity_years %d (before: %s)", family, actor, name,
             change.validity_years, row["before"])
    await request.app[keys.CATALOGUE].refresh()  # this process serves the new period at once, the others soon
    return json_response({"family": row["family"], "name": row["name"], "validity_years": row["validity_years"],
                          "updated_by": row["updated_by"], "updated_at": iso_local(row["updated_at"])},
                         headers=NO_STORE)


class FamilyListed(Family):
    """An exam family with its exams (an exam without a family is one of its own, listed without a row)."""

    stored: bool = Field(description="false: no exam_families row, the period is 1 year")
    exam_ids: list[int]


_LIST = """
SELECT coalesce(f.family, x.family) AS family, f.name, coalesce(f.validity_years, 1) AS validity_years,
       f.updated_by, f.updated_at, f.family IS NOT NULL AS stored,
       coalesce(x.exam_ids, '{}') AS exam_ids
  FROM exam_families f
  FULL JOIN (SELECT coalesce(family, code) AS family, array_agg(id ORDER BY id) AS exam_ids
               FROM exams GROUP BY 1) x ON x.family = f.family
 ORDER BY 1
"""


@routes.get("/admin/api/v1/exam-families", "admin.exam_families.list", caller=OPERATOR,
            summary="Exam families with their validity periods and exams",
            answers={200: Answer(list[FamilyListed], "every family, by name")})
async def list_exam_families(request: web.Request) -> web.Response:
    """Every family stored or named by an exam, with its validity period (1 year without a row) and exams."""
    async with storage_errors():
        rows = await request.app[keys.PG].fetch(_LIST)
    return json_response([{
        "family": row["family"], "name": row["name"] or row["family"], "validity_years": row["validity_years"],
        "updated_by": row["updated_by"] or "", "updated_at": iso_local(row["updated_at"]) if row["updated_at"] else "",
        "stored": row["stored"], "exam_ids": list(row["exam_ids"])} for row in rows], headers=NO_STORE)


def setup(app: web.Application) -> None:
    """The rendered pass marks, per exam and catalogue."""
    app[PASS_MARKS_CACHE] = {}

"""The registration form (报名表): its facts from PostgreSQL, its verification code and its signed link.

1. **Facts.** ``read_facts`` is one query for everything a form prints: the registration, its
   candidate, their education records, the signed commitment with its document's title, whether the
   commitment route applies, and the current photo's facts (id, SHA-256, status — not its bytes).
   ``form_doc`` turns them and the catalogue's exam into the printed ``FormDoc``. ``read_photo``,
   a second query by primary key (``photo_blobs``, by SHA-256), reads the photo's bytes, and only
   when the PDF is not cached.
2. **Which registrations have a form.** One whose details are final and standing: under review,
   at on-site review, approved or paid (``AVAILABLE``). A draft is not final; a rejected one is open
   to editing again; a cancelled or expired one no longer stands.
3. **Verification code.** ``{registration id}-{version}-{mac}``: ``mac`` is the first 40 bits of
   HMAC-SHA256 over ``"{id}.{version}"`` under ``settings.derived_key(CODE_PURPOSE)``, in Crockford's
   base32 (8 characters without I, L, O or U; read back forgiving case and those look-alikes). The id
   and version are in clear, so an operator's check is one query, and the MAC makes a code nobody
   issued fail (one chance in 2^40 per guess, behind an operator token). ``version`` is the
   registration's, bumped by every transition: a form printed before a later one stays genuine and
   the check says it was superseded.
4. **Link.** ``/api/v1/registrations/{id}/form.pdf?exp=&sig=``: ``sig`` is the unpadded base64url
   HMAC-SHA256 of ``"form.{id}.{exp}"`` under ``settings.derived_key(LINK_PURPOSE)``; stateless, it
   lapses at ``exp``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from core.catalogue import Exam
from core.db import Conn
from core.errors import CoreError, storage_errors
from core.lifecycle import STATUS_NAMES
from core.qualification import EDUCATION_NAMES
from lookups.form_pdf import FormCommitment, FormDoc, FormEducation

__all__ = [
    "AVAILABLE", "CODE_PURPOSE", "LINK_PURPOSE", "FormFacts", "FormLinkInvalid",
    "form_code", "form_doc", "parse_code", "read_facts", "read_photo", "sign_form_link", "verify_form_link",
    "ID_TYPE_NAMES", "MODE_NAMES", "PROVINCE_NAMES",
]  # fmt: skip

PG = asyncpg.Pool | Conn

AVAILABLE = frozenset({"under_review", "onsite_review", "approved", "paid"})
CODE_PURPOSE = "form-code"
LINK_PURPOSE = "form-pdf"
PATH_TEMPLATE = "/api/v1/registrations/{registration_id}/form.pdf"
CODE_MAX_CHARS = 40
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_LOOK_ALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_CODE = re.compile(r"([1-9][0-9]{0,17})-([1-9][0-9]{0,8})-([0-9A-Z]{8})").fullmatch
_SIG = re.compile(r"[A-Za-z0-9_-]{43}").fullmatch
_EXP = re.compile(r"[0-9]{1,12}").fullmatch

ID_TYPE_NAMES = {"resident_id": "居民身份证", "passport": "护照", "military_officer": "军官证",
                 "hk_macau_permit": "港澳居民来往内地通行证", "taiwan_permit": "台湾居民来往大陆通行证"}
MODE_NAMES = {"full_time": "全日制", "part_time": "非全日制", "self_study": "自学考试", "online": "网络教育"}
# GB/T 2260 province codes, as registrations and sites carry them.
PROVINCE_NAMES = {
    "11": "北京市", "12": "天津市", "13": "河北省", "14": "山西省", "15": "内蒙古自治区", "21": "辽宁省",
    "22": "吉林省", "23": "黑龙江省", "31": "上海市", "32": "江苏省", "33": "浙江省", "34": "安徽省",
    "35": "福建省", "36": "江西省", "37": "山东省", "41": "河南省", "42": "湖北省", "43": "湖南省",
    "44": "广东省", "45": "广西壮族自治区", "46": "海南省", "50": "重庆市", "51": "四川省", "52": "贵州省",
    "53": "云南省", "54": "西藏自治区", "61": "陕西省", "62": "甘肃省", "63": "青海省", "64": "宁夏回族自治区",
    "65": "新疆维吾尔自治区", "71": "台湾省", "81": "香港特别行政区", "82": "澳门特别行政区",
}


class FormLinkInvalid(CoreError):
    """A form link that is tampered, malformed, another registration's or expired."""


# -- the facts ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FormFacts:
    """What ``read_facts`` found: the registration's stored facts, as codes, and its current photo's facts."""

    registration_id: int
    candidate_id: int
    exam_id: int
    status: str
    version: int
    province: str
    city: str
    level: str
    specialty: str
    subjects: tuple[str, ...]
    work_years: int
    review_point_id: int | None
    confirmed_at: datetime | None
    name: str
    id_type: str
    id_number: str
    phone: str
    educations: tuple[dict[str, Any], ...]
    commitment: dict[str, Any] | None  # {"version", "signed_at", "title"}
    commitment_route: bool
    photo_id: int | None
    photo_sha256: str | None
    photo_status: str | None
    archive_no: str | None = None  # 网报档案号 in the exam's family (``core.validity``); None: none assigned

    @property
    def printable_photo(self) -> bool:
        """The candidate has a current photo that was not rejected: the one the form prints."""
        return self.photo_id is not None and self.photo_status != "rejected"


_FACTS = """
SELECT r.id, r.candidate_id, r.exam_id, r.status, r.version, r.province, r.city, r.level_code, r.specialty_code,
       r.subjects, r.work_years, r.review_point_id, r.submitted_at,
       c.name, c.id_type, c.id_number, c.phone,
       (SELECT jsonb_agg(jsonb_build_object('level', e.level, 'school', e.school, 'major', e.major,
                                            'graduated_on', e.graduated_on, 'mode', e.mode, 'cert_no', e.cert_no)
                         ORDER BY e.graduated_on, e.id)
          FROM educations e WHERE e.candidate_id = r.candidate_id) AS educations,
       (SELECT jsonb_build_object('version', s.version, 'signed_at', s.signed_at, 'title', d.title)
          FROM registration_commitments s
          LEFT JOIN exam_documents d ON d.exam_id = r.exam_id AND d.kind = 'commitment' AND d.version = s.version
         WHERE s.registration_id = r.id AND s.withdrawn_at IS NULL) AS commitment,
       EXISTS (SELECT 1 FROM exam_documents d WHERE d.exam_id = r.exam_id AND d.kind = 'commitment')
         AND COALESCE((SELECT rr.commitment FROM exam_review_rules rr
                        WHERE rr.exam_id = r.exam_id AND rr.province = r.province), true) AS commitment_route,
       p.id AS photo_id, p.sha256 AS photo_sha256, p.status AS photo_status,
       (SELECT a.archive_no FROM archive_numbers a JOIN exams x ON x.id = r.exam_id
         WHERE a.candidate_id = r.candidate_id AND a.family = coalesce(x.family, x.code)) AS archive_no
  FROM registrations r
  JOIN candidates c ON c.id = r.candidate_id
  LEFT JOIN photos p ON p.candidate_id = r.candidate_id AND p.current
 WHERE r.id = $1
"""


async def read_facts(pg: PG, registration_id: int) -> FormFacts | None:
    """The registration's form facts (one query), or None when there is no such registration."""
    async with storage_errors():
        row = await pg.fetchrow(_FACTS, registration_id)
    if row is None:
        return None
    return FormFacts(
        row["id"], row["candidate_id"], row["exam_id"], row["status"], row["version"], row["province"],
        row["city"], row["level_code"], row["specialty_code"], tuple(row["subjects"]), row["work_years"],
        row["review_point_id"], row["submitted_at"], row["name"], row["id_type"], row["id_number"], row["phone"],
        tuple(row["educations"] or ()), row["commitment"], row["commitment_route"], row["photo_id"],
        row["photo_sha256"], row["photo_status"], row["archive_no"])


async def read_photo(pg: PG, sha256: str) -> bytes | None:
    """The JPEG with this SHA-256 (``photo_blobs``, by its primary key), or None."""
    async with storage_errors():
        jpeg: bytes | None = await pg.fetchval("SELECT jpeg FROM photo_blobs WHERE sha256 = $1", sha256)
    return jpeg


def form_doc(facts: FormFacts, exam: Exam, code: str) -> FormDoc:
    """The form as printed (without the photo's bytes): codes named from the catalogue and the tables above."""
    level_name, specialty_name = facts.level, facts.specialty
    for level in exam.levels:
        if level["code"] == facts.level:
            level_name = level["name"]
            specialty_name = next((s["name"] for s in level["specialties"] if s["code"] == facts.specialty),
                                  facts.specialty)
    names = {code: subject.name for code, subject in exam.subjects.items()}
    subjects = tuple(f"{c} {names[c]}" if c in names else c for c in facts.subjects)
    point = exam.review_points.get(facts.review_point_id) if facts.review_point_id is not None else None
    review_point = None if point is None else (f"{point.name}（{point.address}）" if point.address else point.name)
    educations = tuple(
        FormEducation(EDUCATION_NAMES.get(e["level"], e["level"]), e["school"], e["major"],
                      date.fromisoformat(e["graduated_on"]), MODE_NAMES.get(e["mode"], e["mode"]), e["cert_no"])
        for e in facts.educations)
    signed = facts.commitment
    commitment = None if signed is None else FormCommitment(
        signed["title"] or "告知承诺书", signed["version"], datetime.fromisoformat(signed["signed_at"]))
    return FormDoc(
        exam_name=exam.name, registration_id=facts.registration_id,
        status=STATUS_NAMES.get(facts.status, facts.status), code=code, name=facts.name,
        id_type=ID_TYPE_NAMES.get(facts.id_type, facts.id_type), id_number=facts.id_number, phone=facts.phone,
        archive_no=facts.archive_no,
        level=level_name, specialty=specialty_name, subjects=subjects,
        province=PROVINCE_NAMES.get(facts.province, facts.province), city=facts.city, review_point=review_point,
        work_years=facts.work_years, educations=educations, commitment=commitment,
        commitment_route=facts.commitment_route, confirmed_at=facts.confirmed_at)


# -- the verification code ------------------------------------------------------------------------


def _mac(key: bytes, registration_id: int, version: int) -> str:
    digest = hmac.new(key, f"{registration_id}.{version}".encode(), hashlib.sha256).digest()
    bits = int.from_bytes(digest[:5])
    return "".join(_CROCKFORD[(bits >> shift) & 31] for shift in range(35, -1, -5))


def form_code(key: bytes, registration_id: int, version: int) -> str:
    """The verification code printed on the form of ``registration_id`` at ``version``."""
    if not key:
        raise ValueError("key must not be empty")
    return f"{registration_id}-{version}-{_mac(key, registration_id, version)}"


def parse_code(key: bytes, code: str) -> tuple[int, int] | None:
    """(registration id, version) of a code we issued, read forgivingly (case, spaces, O/I/L); None otherwise."""
    if not isinstance(code, str) or len(code) > CODE_MAX_CHARS:
        return None
    found = _CODE("".join(code.split()).upper().translate(_LOOK_ALIKES))
    if found is None:
        return None
    registration_id, version = int(found[1]), int(found[2])
    if not hmac.compare_digest(_mac(key, registration_id, version), found[3]):
        return None
    return registration_id, version


# -- the link -------------------------------------------------------------------------------------


def _signature(key: bytes, registration_id: int, exp: str) -> str:
    mac = hmac.new(key, f"form.{registration_id}.{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def sign_form_link(key: bytes, registration_id: int, *, ttl_s: int, now: float | None = None) -> str:
    """Path and query of a link to the registration's form PDF, valid for ``ttl_s`` seconds."""
    if not key or ttl_s < 1:
        raise ValueError("a key and a positive ttl_s are needed")
    exp = str(math.ceil(time.time() if now is None else now) + ttl_s)
    path = PATH_TEMPLATE.format(registration_id=registration_id)
    return f"{path}?exp={exp}&sig={_signature(key, registration_id, exp)}"


def verify_form_link(key: bytes, registration_id: int, exp: str, sig: str, *, now: float | None = None) -> int:
    """The expiry (unix seconds) of a genuine, unexpired link; ``FormLinkInvalid`` otherwise (signature first)."""
    if not isinstance(exp, str) or _EXP(exp) is None or not isinstance(sig, str) or _SIG(sig) is None:
        raise FormLinkInvalid("malformed form link")
    if not hmac.compare_digest(_signature(key, registration_id, exp), sig):
        raise FormLinkInvalid("bad signature")
    if (time.time() if now is None else now) >= int(exp):
        raise FormLinkInvalid("expired")
    return int(exp)

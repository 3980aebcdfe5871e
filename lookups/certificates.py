"""Certificate verification (证书查询): the record Redis keeps, its PostgreSQL fallback, the match, the PDF link.

1. **Record.** One per certificate, found by its national number: the holder's name and id
   number, the exam and level (code and name, so an answer needs no catalogue: certificates
   outlive the exams the catalogue holds), the approval date and the management number.
   PostgreSQL writes the stored value itself (``VALUE_SQL``, JSON text), so the prewarm, the
   import hook and the fallback's write-back store one format. Redis keeps it in ``BUCKETS``
   hashes (``eg:cert:<bucket>``, field: the number): a million certificates cost ~60 fields a
   hash, kept compactly as listpacks.
2. **Complete buckets.** A prewarm ends by marking every bucket complete (``COMPLETE_FIELD``, a
   field no number can be); from then on the import hook keeps it so. A verification is one
   ``HMGET`` of the number and the mark: a record, or — in a complete bucket — no certificate,
   both answered from Redis, so an unknown number costs what a known one does.
3. **Fallback.** A miss in a bucket not marked (Redis flushed, the bucket evicted, no prewarm yet)
   or Redis down asks PostgreSQL through ``lookups.service.CachedRecords``: single-flight per
   number, capped per process (``LookupsBusy``, 503), remembered in memory.
4. **No enumeration.** ``match`` compares the name given with the stored one (both normalised
   as registration stores names) in constant time, against a stand-in when there is no record,
   and answers ``NoCertificate`` alike for an unknown number and another name.
5. **Link.** ``/api/v1/certificates/{cert_no}.pdf?exp=&sig=``: ``sig`` is the unpadded base64url
   HMAC-SHA256 of ``"cert.{cert_no}.{exp}"`` under ``settings.derived_key(LINK_PURPOSE)``; stateless,
   it lapses at ``exp``. A number holds only letters and digits, so the signed text is unambiguous.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
import unicodedata
import zlib
from datetime import date
from typing import Any, NamedTuple

import orjson

from core.errors import storage_errors
from core.identity import normalise_name
from lookups.rules import LookupRefused, same_name
from lookups.service import CachedRecords

__all__ = [
    "BUCKETS", "COMPLETE_FIELD", "LINK_PURPOSE", "META_KEY", "NO_CERTIFICATE", "Certificate", "CertificateLookups",
    "LinkInvalid", "NoCertificate", "answer", "bucket_key", "decode", "match", "normalise_cert_no", "sign_pdf_link",
    "verify_pdf_link",
]  # fmt: skip

BUCKETS = 16384
PREFIX = "eg:cert:"
META_KEY = PREFIX + "meta"  # what the last prewarm loaded (count, when)
COMPLETE_FIELD = "~complete"  # in a bucket holding every certificate of its numbers (a number is alphanumeric)
# Taken exclusively by a prewarm from before its snapshot to its last write, shared by an import's hook until
# its COMMIT: a prewarm never writes a certificate older than one an import wrote.
LOCK_SQL = "SELECT pg_advisory_xact_lock(17221, 0)"  # 0x4345, "CE"
LOCK_SHARED_SQL = "SELECT pg_advisory_xact_lock_shared(17221, 0)"
LINK_PURPOSE = "certificate-pdf"
PATH_TEMPLATE = "/api/v1/certificates/{cert_no}.pdf"
CERT_NO = re.compile(r"[0-9A-Za-z]{6,32}").fullmatch  # as the certificates table checks it
_SIG = re.compile(r"[A-Za-z0-9_-]{43}").fullmatch
_EXP = re.compile(r"[0-9]{1,12}").fullmatch
# Compared against when a number has no record, so a miss does the work a wrong name does.
_NOBODY = "\u3007" * 4
NO_CERTIFICATE = "未查询到证书信息，请核对证书编号和持证人姓名"


class NoCertificate(LookupRefused):
    """No certificate with this number and name (the one answer for an unknown number and another name)."""


class LinkInvalid(Exception):
    """A certificate PDF link that is tampered, malformed, another certificate's or expired."""


class Certificate(NamedTuple):
    """A certificate as verification answers it."""

    cert_no: str
    name: str
    id_number: str  # printed masked on the PDF, never answered
    exam_id: int
    exam_name: str
    level_code: str
    level_name: str
    approved_on: str  # ISO date, as PostgreSQL writes it
    management_no: str


def bucket_key(cert_no: str) -> str:
    """The hash holding the record of ``cert_no``."""
    return f"{PREFIX}{zlib.crc32(cert_no.encode()) % BUCKETS}"


def decode(raw: bytes | str) -> Certificate:
    """The certificate of a stored value (``VALUE_SQL``'s JSON array)."""
    cert_no, name, id_number, exam_id, exam_name, level_code, level_name, approved_on, management_no = \
        orjson.loads(raw)
    return Certificate(cert_no, name, id_number, exam_id, exam_name, level_code, level_name, approved_on,
                       management_no)


VALUE_SQL = """json_build_array(c.cert_no, c.name, c.id_number, c.exam_id, e.name, c.level_code, l.name,
                        c.approved_on, c.management_no)::text"""
_FROM = """
  FROM certificates c
  JOIN exams e ON e.id = c.exam_id
  JOIN exam_levels l ON l.exam_id = c.exam_id AND l.code = c.level_code
"""
ALL_SQL = f"SELECT c.cert_no, {VALUE_SQL} AS value {_FROM}"
ONE_SQL = f"SELECT {VALUE_SQL} AS value {_FROM} WHERE c.cert_no = $1"
SOME_SQL = f"SELECT c.cert_no, {VALUE_SQL} AS value {_FROM} WHERE c.cert_no = ANY($1::text[])"


class CertificateLookups(CachedRecords[str, Certificate]):
    """Certificates by number, Redis first; one per gateway process."""

    def location(self, key: str) -> tuple[str, str]:
        return bucket_key(key), key

    def decode(self, raw: bytes | str) -> Certificate:
        return decode(raw)

    async def query(self, key: str) -> str | None:
        async with storage_errors():
            found: str | None = await self.pool.fetchval(ONE_SQL, key)
            return found

    def read_command(self, key: str) -> tuple[bytes | str, ...]:
        return b"HMGET", bucket_key(key), key, COMPLETE_FIELD

    def read_reply(self, reply: Any) -> tuple[bool, Certificate | None]:
        value, complete = reply
        if value is not None:
            return True, decode(value)
        return complete is not None, None  # in a complete bucket, a number not there has no certificate


def normalise_cert_no(cert_no: str) -> str | None:
    """The number as stored (full-width digits and letters made ASCII, spaces dropped), or None when it is not one."""
    if not cert_no.isascii():
        cert_no = unicodedata.normalize("NFKC", cert_no)
    cert_no = "".join(cert_no.split())
    return cert_no if CERT_NO(cert_no) is not None else None


def match(record: Certificate | None, name: str) -> Certificate:
    """The certificate when ``name`` (normalised) is its holder's; ``NoCertificate`` for no record or another name.

    The comparison runs in constant time and runs also without a record, against a stand-in.
    """
    matched = same_name(normalise_name(record.name) if record is not None else _NOBODY, name)
    if record is None or not matched:
        raise NoCertificate()
    return record


def answer(record: Certificate, pdf_url: str) -> dict[str, Any]:
    """What a verification answers: the certificate, without the id number, and the PDF link."""
    return {"cert_no": record.cert_no, "name": record.name,
            "exam": {"id": record.exam_id, "name": record.exam_name},
            "level": {"code": record.level_code, "name": record.level_name},
            "approved_on": record.approved_on, "management_no": record.management_no, "pdf_url": pdf_url}


def approved_date(record: Certificate) -> date:
    """The approval date as a date."""
    return date.fromisoformat(record.approved_on)


def _signature(key: bytes, cert_no: str, exp: str) -> str:
    mac = hmac.new(key, f"cert.{cert_no}.{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def sign_pdf_link(key: bytes, cert_no: str, *, ttl_s: int, now: float | None = None) -> str:
    """Path and query of a link to the certificate's PDF, valid for ``ttl_s`` seconds."""
    if not key or ttl_s < 1 or CERT_NO(cert_no) is None:
        raise ValueError("a key, a positive ttl_s and a certificate number are needed")
    exp = str(math.ceil(time.time() if now is None else now) + ttl_s)
    return f"{PATH_TEMPLATE.format(cert_no=cert_no)}?exp={exp}&sig={_signature(key, cert_no, exp)}"


def verify_pdf_link(key: bytes, cert_no: str, exp: str, sig: str, *, now: float | None = None) -> int:
    """When a genuine, unexpired link lapses (unix seconds); ``LinkInvalid`` otherwise (the signature checked first)."""
    if CERT_NO(cert_no) is None or _EXP(exp) is None or _SIG(sig) is None:
        raise LinkInvalid("malformed link")
    if not hmac.compare_digest(_signature(key, cert_no, exp), sig):
        raise LinkInvalid("bad signature")
    if (time.time() if now is None else now) >= int(exp):
        raise LinkInvalid("expired")
    return int(exp)

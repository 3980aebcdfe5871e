"""The registry of import kinds: name → Kind. Each kind is a module of this package exposing ``KIND``."""

from __future__ import annotations

from core.imports import certificates, exams, integrity, pass_marks, scores, sites
from core.imports.base import Kind

__all__ = ["KINDS"]

KINDS: dict[str, Kind] = {
    scores.KIND.name: scores.KIND,
    pass_marks.KIND.name: pass_marks.KIND,
    exams.KIND.name: exams.KIND,
    sites.KIND.name: sites.KIND,
    certificates.KIND.name: certificates.KIND,
    integrity.KIND.name: integrity.KIND,
}

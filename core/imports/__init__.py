"""Operators' imports: files validated in full, applied in one transaction, recorded once per batch id.

A kind is a module here exposing ``KIND`` (base.Kind, documented in base.py) and registered in
kinds.py; ``run_import`` (runner.py) parses, stages, validates and applies a file of any kind.
"""

from core.imports.base import (
    REPORT_LIMIT,
    Applied,
    BatchConflict,
    ChangedHook,
    Check,
    Column,
    ImportRejected,
    ImportResult,
    Kind,
    UnknownKind,
)
from core.imports.parse import CONTENT_TYPES, UnsupportedContentType, media_type
from core.imports.runner import BATCH_ID_PATTERN, InvalidBatchId, Progress, run_import

__all__ = [
    "BATCH_ID_PATTERN", "CONTENT_TYPES", "REPORT_LIMIT",
    "Applied", "BatchConflict", "ChangedHook", "Check", "Column", "ImportRejected", "ImportResult",
    "InvalidBatchId", "Kind", "Progress", "UnknownKind", "UnsupportedContentType",
    "media_type", "run_import",
]

"""The hooks imports call inside their transaction, by kind: what must follow a change before it commits.

``import_hooks(app)`` maps a kind (``core.imports.kinds.KINDS``) to a ``ChangedHook`` awaited with
the keys the import changed, inside the apply transaction, before COMMIT. One line a kind.
"""

from __future__ import annotations

from aiohttp import web

from core.imports import ChangedHook
from gateway import keys
from lookups import cert_prewarm
from lookups.corrections import ScoreCorrections

__all__ = ["import_hooks"]


def import_hooks(app: web.Application) -> dict[str, ChangedHook]:
    """The hooks of this gateway's imports, by kind."""
    hooks: dict[str, ChangedHook] = {}
    hooks["certificates"] = cert_prewarm.changed_hook(app[keys.REDIS_PY])  # verification reads Redis only
    hooks["scores"] = ScoreCorrections(app[keys.PG], app[keys.REDIS_PY])  # lookups: no old score after COMMIT
    return hooks

"""The route modules: each declares its operations in a ``routes`` table (``gateway.routing``)."""

from __future__ import annotations

from types import ModuleType


def modules(*, bench: bool = False) -> list[ModuleType]:
    """The route modules in registration order; the benchmark routes only when asked for."""
    from gateway.routes import (
        account_codes,
        account_maintenance,
        accounts,
        admin,
        captcha,
        certificates,
        console,
        exams,
        forms,
        health,
        imports,
        lifecycle,
        lookups,
        operations,
        operators,
        pages,
        payments,
        photo_review,
        photos,
        queue,
        recovery,
        registrations,
        reviews,
        score_reviews,
        sessions,
        validity,
    )
    from gateway.routes import bench as bench_routes

    found = [health, exams, captcha, accounts, account_codes, sessions, recovery, queue, registrations, lifecycle,
             payments, lookups, admin, reviews, operations, operators, pages, console, photos, photo_review, forms,
             account_maintenance, validity, certificates, imports, score_reviews]
    return [*found, bench_routes] if bench else found

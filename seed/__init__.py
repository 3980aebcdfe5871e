"""Deterministic demo data (``examgate seed``): exams, sites and up to millions of candidates.

Above ``core`` and used by the gateway's CLI, the load tests, the benchmarks and the tests;
no product package imports it (see the import contracts in pyproject.toml).
"""

from seed.demo import (
    EXAM_A_CODE,
    EXAM_B_CODE,
    SEED_PASSWORD,
    SEED_PASSWORD_HASH,
    SEED_SECURITY_ANSWER,
    SEED_SECURITY_ANSWER_HASH,
    Credentials,
    LookupKeys,
    SeedError,
    SeedMismatch,
    SeedReport,
    candidate_credentials,
    lookup_keys,
    seed,
)

__all__ = [
    "EXAM_A_CODE", "EXAM_B_CODE", "SEED_PASSWORD", "SEED_PASSWORD_HASH", "SEED_SECURITY_ANSWER",
    "SEED_SECURITY_ANSWER_HASH", "Credentials", "LookupKeys", "SeedReport", "SeedError", "SeedMismatch",
    "candidate_credentials", "lookup_keys", "seed",
]  # fmt: skip

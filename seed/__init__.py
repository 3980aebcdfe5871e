"""Deterministic demo data (``examgate seed``): exams, sites, up to millions of candidates, the open exam's lifecycle.

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
from seed.lifecycle import ONSITE_REVIEW_PROVINCE, REVIEW_PROVINCE, in_archive, qualifies, review_rule

__all__ = [
    "EXAM_A_CODE", "EXAM_B_CODE", "SEED_PASSWORD", "SEED_PASSWORD_HASH", "SEED_SECURITY_ANSWER",
    "SEED_SECURITY_ANSWER_HASH", "Credentials", "LookupKeys", "SeedReport", "SeedError", "SeedMismatch",
    "candidate_credentials", "lookup_keys", "seed",
    "ONSITE_REVIEW_PROVINCE", "REVIEW_PROVINCE", "in_archive", "qualifies", "review_rule",
]  # fmt: skip

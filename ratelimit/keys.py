"""Redis key names of the rate limiter.

Every limiter key carries the same hash tag, ``eg:{rl}:<rule_id>:<subject>``, so all the
keys one request's script touches (its per-IP, per-account, global… rules) live in one
Redis Cluster slot and can be decided atomically in one call. The trade-off: the whole
limiter lands on one shard, so it scales with that node's CPU (a 3-rule check costs
Redis some 10-40 µs) rather than with the cluster. Tagging by subject instead would
spread the load but split one request's rules over several slots, costing one call per
slot and the all-or-nothing decision across rules.

Subjects are arbitrary text (IPs, account names, id numbers): ``[A-Za-z0-9._:@-]`` is
kept as is (readable in ``redis-cli``), anything else is percent-encoded as UTF-8, and a
subject still longer than ``MAX_SUBJECT_CHARS`` is replaced by ``#`` and a hash. A ``%``
or ``#`` in a subject is always escaped, so two subjects never share a key.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

PREFIX = "eg:{rl}:"
MAX_SUBJECT_CHARS = 96

_VERBATIM = re.compile(rf"[A-Za-z0-9._:@-]{{0,{MAX_SUBJECT_CHARS}}}").fullmatch


def encode_subject(subject: str) -> str:
    """The subject as it appears in a key: readable when it can be, never ambiguous."""
    if _VERBATIM(subject) is not None:
        return subject
    encoded = quote(subject, safe="._:@-", errors="surrogatepass")
    if len(encoded) <= MAX_SUBJECT_CHARS:
        return encoded
    digest = hashlib.blake2b(subject.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return "#" + digest


def rule_prefix(rule_id: str) -> str:
    """The part of a rule's keys before the subject: ``eg:{rl}:<rule_id>:``."""
    return f"{PREFIX}{rule_id}:"


def rule_key(rule_id: str, subject: str) -> str:
    """The TAT key of one rule for one subject: ``eg:{rl}:<rule_id>:<subject>``."""
    return f"{PREFIX}{rule_id}:{encode_subject(subject)}"

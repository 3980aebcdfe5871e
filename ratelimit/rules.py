"""Rate-limit rules as the live config states them, parsed and validated."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Literal

from ratelimit.errors import InvalidRule

KeyKind = Literal["ip", "candidate", "account", "id_number", "global"]
Mode = Literal["enforce", "shadow", "off"]
OnRedisError = Literal["open", "closed", "local"]
Counts = Literal["requests", "failures"]

KEY_KINDS: tuple[str, ...] = ("ip", "candidate", "account", "id_number", "global")
# Subjects a route's handler reads from the request body (the others come from the request itself).
BODY_KEY_KINDS = frozenset({"account", "id_number"})
MODES: tuple[str, ...] = ("enforce", "shadow", "off")
ON_REDIS_ERROR: tuple[str, ...] = ("open", "closed", "local")
COUNTS: tuple[str, ...] = ("requests", "failures")
_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_ROUTE = re.compile(r"^[a-z0-9_.*?-]{1,64}$")
FIELDS = ("id", "routes", "key", "rate", "period_s", "burst", "mode", "on_redis_error", "cost", "counts")


@dataclass(frozen=True)
class Rule:
    """``rate`` requests per ``period_s`` per key, bursts up to ``burst``, for the named routes.

    Routes are route names (``sessions.create``) or shell-style patterns (``scores.*``, ``*``).
    ``counts: failures`` makes the rule count only what the route reports as failed (wrong
    passwords): every request is checked against it, but only a failure consumes quota.
    """

    id: str
    routes: tuple[str, ...]
    key: KeyKind
    rate: int
    period_s: float
    burst: int
    mode: Mode = "enforce"
    on_redis_error: OnRedisError = "open"
    cost: int = 1
    counts: Counts = "requests"

    @property
    def emission_interval_s(self) -> float:
        """Time one request's worth of quota takes to come back."""
        return self.period_s / self.rate

    def matches(self, route: str) -> bool:
        """True when the rule applies to the route name."""
        return any(fnmatch.fnmatchcase(route, pattern) for pattern in self.routes)

    def as_dict(self) -> dict[str, Any]:
        """The rule as it appears in the live config."""
        return {f: (list(getattr(self, f)) if f == "routes" else getattr(self, f)) for f in FIELDS}


def _number(raw: dict[str, Any], name: str, path: str, *, integer: bool, minimum: float,
            maximum: float, default: Any = None) -> Any:
    value = raw.get(name, default)
    if value is None:
        raise InvalidRule(f"{path}.{name}", "is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise InvalidRule(f"{path}.{name}", "must be an integer" if integer else "must be a number")
    if not minimum <= value <= maximum:
        raise InvalidRule(f"{path}.{name}", f"must be between {minimum:g} and {maximum:g}")
    return value


def _choice(raw: dict[str, Any], name: str, path: str, options: tuple[str, ...], default: str | None) -> str:
    value = raw.get(name, default)
    if value not in options:
        raise InvalidRule(f"{path}.{name}", f"must be one of {', '.join(options)}")
    return str(value)


def parse_rule(raw: Any, path: str = "rule") -> Rule:
    """One rule from its JSON form; raises InvalidRule naming the bad field."""
    if not isinstance(raw, dict):
        raise InvalidRule(path, "must be an object")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise InvalidRule(f"{path}.{unknown[0]}", "is not a rule field")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
        raise InvalidRule(f"{path}.id", "must be 1-63 of a-z 0-9 _ . - starting with a letter or digit")
    routes = raw.get("routes")
    if isinstance(routes, str):
        routes = [routes]
    if not isinstance(routes, list) or not routes:
        raise InvalidRule(f"{path}.routes", "must be a non-empty list of route names or patterns")
    for index, route in enumerate(routes):
        if not isinstance(route, str) or not _ROUTE.match(route):
            raise InvalidRule(f"{path}.routes[{index}]", "must be a route name or pattern like scores.*")
    return Rule(
        id=rule_id,
        routes=tuple(routes),
        key=_choice(raw, "key", path, KEY_KINDS, None),  # type: ignore[arg-type]
        rate=_number(raw, "rate", path, integer=True, minimum=1, maximum=10_000_000),
        period_s=float(_number(raw, "period_s", path, integer=False, minimum=0.001, maximum=86_400 * 7)),
        burst=_number(raw, "burst", path, integer=True, minimum=1, maximum=10_000_000, default=1),
        mode=_choice(raw, "mode", path, MODES, "enforce"),  # type: ignore[arg-type]
        on_redis_error=_choice(raw, "on_redis_error", path, ON_REDIS_ERROR, "open"),  # type: ignore[arg-type]
        cost=_number(raw, "cost", path, integer=True, minimum=1, maximum=1_000_000, default=1),
        counts=_choice(raw, "counts", path, COUNTS, "requests"),  # type: ignore[arg-type]
    )


def parse_rules(raw: Any, path: str = "ratelimit.rules") -> list[Rule]:
    """The rule list; ids must be unique."""
    if not isinstance(raw, list):
        raise InvalidRule(path, "must be a list")
    rules = [parse_rule(item, f"{path}[{index}]") for index, item in enumerate(raw)]
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.id in seen:
            raise InvalidRule(f"{path}[{index}].id", f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
    return rules

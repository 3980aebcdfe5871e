"""The live operator config: its default document, validation into a typed view, merge patch and diff.

The document is what operators edit (API.md "Operators"); ``LiveConfig`` is the frozen view
the gateway reads on every request, with per-route lookups cached."""

from __future__ import annotations

import copy
import fnmatch
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from ratelimit.errors import InvalidRule
from ratelimit.rules import BODY_KEY_KINDS, Rule, parse_rule, parse_rules

CAPTCHA_MODES = ("image", "pow", "either", "off")
# The captcha an escalated rule asks for: a kind a bot farm cannot solve by spending CPU.
ESCALATION_KINDS = ("image",)
SHEDDING_CLASSES = ("candidate_read", "candidate_write", "login", "payment_notify", "admin")
SECTIONS = ("ratelimit", "captcha", "queue", "seats", "shedding", "maintenance")
QUEUE_EXAM_DEFAULTS: dict[str, Any] = {"enabled": False, "admit_per_s": 50, "place_ttl_s": 120, "admission_ttl_s": 600}
_ROUTE = re.compile(r"^[a-z0-9_.*?-]{1,64}$")
_EXAM_ID = re.compile(r"^[1-9][0-9]{0,9}$")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_MESSAGE_CHARS = 500

# Production defaults, in force at version 0 (nothing stored yet). Captcha and throttles guard
# the paths bots aim at; shedding limits are per process and generous: they stop collapse, not load.
DEFAULT: dict[str, Any] = {
    "ratelimit": {"rules": [
        {"id": "login-ip", "routes": ["sessions.create"], "key": "ip", "rate": 30, "period_s": 60,
         "burst": 10, "mode": "enforce", "on_redis_error": "local"},
        {"id": "login-account", "routes": ["sessions.create"], "key": "account", "rate": 10, "period_s": 600,
         "burst": 5, "mode": "enforce", "on_redis_error": "local", "counts": "failures"},
        {"id": "lookup-ip", "routes": ["tickets.lookup", "scores.lookup"], "key": "ip", "rate": 60,
         "period_s": 60, "burst": 20, "mode": "enforce", "on_redis_error": "open"},
        {"id": "recovery-ip", "routes": ["password_resets.*"], "key": "ip", "rate": 20, "period_s": 600,
         "burst": 10, "mode": "enforce", "on_redis_error": "local"},
        {"id": "recovery-id", "routes": ["password_resets.question.start", "password_resets.sms.start"],
         "key": "id_number", "rate": 5, "period_s": 3600, "burst": 5, "mode": "enforce", "on_redis_error": "local"},
        # Images: a person needs one per attempt, a class behind one NAT a few dozen at once. The global
        # rate stays below what the worker draws (~300-800/s on 2 cores) and the burst below the pool's
        # target (EXAMGATE_CAPTCHA_POOL_TARGET), so no flood, from however many addresses, empties it.
        {"id": "captcha-image-ip", "routes": ["captcha.image"], "key": "ip", "rate": 60, "period_s": 60,
         "burst": 30, "mode": "enforce", "on_redis_error": "local"},
        {"id": "captcha-image-global", "routes": ["captcha.image"], "key": "global", "rate": 300, "period_s": 1,
         "burst": 2000, "mode": "enforce", "on_redis_error": "local"},
        # Accounts: a school computer room registers a class at once behind one address, then a few more
        # an hour; the global rate bounds the PostgreSQL writes and password hashing one day's bots cost.
        {"id": "accounts-ip", "routes": ["accounts.create"], "key": "ip", "rate": 30, "period_s": 3600,
         "burst": 20, "mode": "enforce", "on_redis_error": "local"},
        {"id": "accounts-global", "routes": ["accounts.create"], "key": "global", "rate": 200, "period_s": 1,
         "burst": 200, "mode": "enforce", "on_redis_error": "local"},
        # Payment notifications: only failed verifications count, so a provider's signed ones never
        # spend it; a sender of 30 forgeries is refused before its body is parsed, one more per 2 s.
        {"id": "notify-failures-ip", "routes": ["payments.notify.*"], "key": "ip", "rate": 30, "period_s": 60,
         "burst": 30, "mode": "enforce", "on_redis_error": "local", "counts": "failures"},
    ]},
    "captcha": {
        "routes": {"accounts.create": "either", "sessions.create": "either",
                   "password_resets.question.start": "either", "password_resets.sms.start": "either",
                   "tickets.lookup": "either", "scores.lookup": "either"},
        "pow_maxnumber": 100_000,
        # Once an account's wrong passwords spend login-account, its sign-ins need an image captcha
        # (one guess per image solved) instead of a 429 that would lock its owner out too.
        "escalate": {"login-account": "image"},
    },
    "queue": {"exams": {}},
    "seats": {"hold_ttl_s": 1800},
    "shedding": {"candidate_read": 4096, "candidate_write": 1024, "login": 256, "payment_notify": 512,
                 "admin": 32, "max_loop_lag_ms": 250},
    "maintenance": {},
}


class LiveConfigError(Exception):
    """Base class of the live-config errors."""


class InvalidConfig(LiveConfigError):
    """A document is not a valid live config; ``problems`` maps each JSON path to what is wrong."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{path}: {problem}" for path, problem in problems.items()))
        self.problems = problems


@dataclass(frozen=True)
class QueueExam:
    """Waiting-room settings of one exam."""

    enabled: bool
    admit_per_s: float
    place_ttl_s: int
    admission_ttl_s: int


@dataclass(frozen=True, eq=False)
class LiveConfig:
    """A validated live config: typed fields, the document it came from, and its version."""

    rules: tuple[Rule, ...]
    captcha_routes: Mapping[str, str]
    pow_maxnumber: int
    captcha_escalate: Mapping[str, str]
    queue_exams: Mapping[int, QueueExam]
    hold_ttl_s: int
    shedding: Mapping[str, int]
    max_loop_lag_ms: int
    maintenance: Mapping[str, str]
    version: int
    document: dict[str, Any]
    _rules_by_route: dict[str, tuple[Rule, ...]] = field(default_factory=dict, init=False, repr=False)
    _body_keyed_by_route: dict[str, bool] = field(default_factory=dict, init=False, repr=False)
    _maintenance_by_route: dict[str, str | None] = field(default_factory=dict, init=False, repr=False)
    _captcha_by_route: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def rules_for(self, route_name: str) -> tuple[Rule, ...]:
        """The rules that apply to a route, in config order; rules in mode ``off`` are left out."""
        found = self._rules_by_route.get(route_name)
        if found is None:
            found = tuple(r for r in self.rules if r.mode != "off" and r.matches(route_name))
            self._rules_by_route[route_name] = found
        return found

    def body_keyed(self, route_name: str) -> bool:
        """True when a rule of the route keys on what the body says (its handler enforces them)."""
        found = self._body_keyed_by_route.get(route_name)
        if found is None:
            found = self._body_keyed_by_route[route_name] = any(
                rule.key in BODY_KEY_KINDS for rule in self.rules_for(route_name))
        return found

    def maintenance_for(self, route_name: str) -> str | None:
        """The maintenance message for a route (exact name first, then patterns), or None."""
        if route_name not in self._maintenance_by_route:
            self._maintenance_by_route[route_name] = _lookup(self.maintenance, route_name)
        return self._maintenance_by_route[route_name]

    def captcha_for(self, route_name: str) -> str:
        """The captcha kinds a route accepts: image, pow, either, or off (the default)."""
        mode = self._captcha_by_route.get(route_name)
        if mode is None:
            mode = self._captcha_by_route[route_name] = _lookup(self.captcha_routes, route_name) or "off"
        return mode

    def escalation_for(self, rule_ids: tuple[str, ...]) -> str | None:
        """The captcha kind that stands in for a refusal by exactly these rules, or None (answer it 429)."""
        kinds = {self.captcha_escalate.get(rule_id) for rule_id in rule_ids}
        if len(kinds) != 1 or None in kinds:
            return None
        return kinds.pop()


def _lookup(table: Mapping[str, str], route_name: str) -> str | None:
    if route_name in table:
        return table[route_name]
    for pattern, value in table.items():
        if fnmatch.fnmatchcase(route_name, pattern):
            return value
    return None


def join_path(path: str, key: str | int) -> str:
    """``path`` extended by a key: ``a.b``, ``a[3]``, or ``a["sessions.create"]`` for keys with dots."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _PLAIN_KEY.match(key):
        return f'{path}["{key}"]'
    return f"{path}.{key}" if path else key


class _Checker:
    """Collects every problem of a document instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: dict[str, str] = {}

    def obj(self, value: Any, path: str, allowed: tuple[str, ...] | None, required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            self.problems[path or "$"] = "must be an object"
            return {}
        unknown = [key for key in value if key not in allowed] if allowed is not None else []
        for key in unknown:
            self.problems[join_path(path, key)] = "is not a known setting"
        for key in (k for k in required if k not in value):
            self.problems[join_path(path, key)] = "is required"
        return value

    def section(self, parent: dict, name: str, fields: tuple[str, ...],
                required: tuple[str, ...] | None = None) -> dict:
        """A top-level section (every field required unless told); a missing one is reported once."""
        if name not in parent:
            return {}
        return self.obj(parent[name], name, fields, fields if required is None else required)

    def integer(self, value: Any, path: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.problems[path] = "must be an integer"
        elif not lo <= value <= hi:
            self.problems[path] = f"must be between {lo} and {hi}"
        else:
            return value
        return lo

    def number(self, value: Any, path: str, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problems[path] = "must be a number"
        elif not 0 < value <= hi:
            self.problems[path] = f"must be greater than 0 and at most {hi:g}"
        else:
            return float(value)
        return 1.0

    def route_key(self, key: str, path: str) -> None:
        if not _ROUTE.match(key):
            self.problems[path] = "must be a route name or pattern like scores.*"


def _rules(c: _Checker, section: dict) -> tuple[Rule, ...]:
    raw = section.get("rules")
    if "rules" in section and not isinstance(raw, list):
        c.problems["ratelimit.rules"] = "must be a list"
    if not isinstance(raw, list):
        return ()
    clean, seen = True, set[str]()
    for index, item in enumerate(raw):
        try:
            rule_id = parse_rule(item, f"ratelimit.rules[{index}]").id
        except InvalidRule as exc:
            c.problems[exc.path] = exc.problem
            clean, rule_id = False, item.get("id") if isinstance(item, dict) else None
        if isinstance(rule_id, str):
            if rule_id in seen:
                c.problems.setdefault(f"ratelimit.rules[{index}].id", f"duplicate rule id {rule_id!r}")
            seen.add(rule_id)
    if clean:
        try:
            return tuple(parse_rules(raw))
        except InvalidRule as exc:  # duplicate ids, already reported above
            c.problems.setdefault(exc.path, exc.problem)
    return ()


def _escalate(c: _Checker, raw: Any, rules: tuple[Rule, ...]) -> dict[str, str]:
    """``captcha.escalate``: rule id → captcha kind. An id no rule has does nothing (rules may be replaced alone)."""
    escalate = c.obj(raw, "captcha.escalate", None)
    counts = {rule.id: rule.counts for rule in rules}
    for rule_id, kind in escalate.items():
        path = join_path("captcha.escalate", rule_id)
        if kind not in ESCALATION_KINDS:
            c.problems[path] = f"must be one of {', '.join(ESCALATION_KINDS)}"
        elif counts.get(rule_id, "failures") != "failures":
            c.problems[path] = 'must name a rule with counts: "failures" (others refuse every request alike)'
    return escalate


def _queue_exams(c: _Checker, raw: Any) -> dict[int, QueueExam]:
    exams: dict[int, QueueExam] = {}
    for key, spec in c.obj(raw, "queue.exams", None).items():
        path = join_path("queue.exams", key)
        if not _EXAM_ID.match(key):
            c.problems[path] = "must be keyed by a numeric exam id"
            continue
        spec = {**QUEUE_EXAM_DEFAULTS, **c.obj(spec, path, tuple(QUEUE_EXAM_DEFAULTS))}
        if not isinstance(spec["enabled"], bool):
            c.problems[f"{path}.enabled"] = "must be true or false"
        exams[int(key)] = QueueExam(
            enabled=spec["enabled"] is True,
            admit_per_s=c.number(spec["admit_per_s"], f"{path}.admit_per_s", 1_000_000),
            place_ttl_s=c.integer(spec["place_ttl_s"], f"{path}.place_ttl_s", 10, 86_400),
            admission_ttl_s=c.integer(spec["admission_ttl_s"], f"{path}.admission_ttl_s", 10, 86_400),
        )
    return exams


def validate(doc: Any, version: int = 0) -> LiveConfig:
    """The typed view of ``doc``; raises InvalidConfig listing every problem with its JSON path."""
    c = _Checker()
    root = c.obj(doc, "", SECTIONS, SECTIONS)
    rules = _rules(c, c.section(root, "ratelimit", ("rules",)))

    captcha = c.section(root, "captcha", ("routes", "pow_maxnumber", "escalate"), ("routes", "pow_maxnumber"))
    captcha_routes = c.obj(captcha.get("routes", {}), "captcha.routes", None)
    for route, mode in captcha_routes.items():
        c.route_key(route, join_path("captcha.routes", route))
        if mode not in CAPTCHA_MODES:
            c.problems[join_path("captcha.routes", route)] = f"must be one of {', '.join(CAPTCHA_MODES)}"
    pow_maxnumber = c.integer(captcha.get("pow_maxnumber", 1000), "captcha.pow_maxnumber", 1000, 10_000_000)
    escalate = _escalate(c, captcha.get("escalate", {}), rules)

    queue = c.section(root, "queue", ("exams",))
    exams = _queue_exams(c, queue.get("exams", {}))

    seats = c.section(root, "seats", ("hold_ttl_s",))
    hold_ttl_s = c.integer(seats.get("hold_ttl_s", 60), "seats.hold_ttl_s", 60, 86_400)

    shedding_keys = (*SHEDDING_CLASSES, "max_loop_lag_ms")
    shedding = c.section(root, "shedding", shedding_keys)
    limits = {name: c.integer(shedding.get(name, 1), f"shedding.{name}", 1, 1_000_000) for name in SHEDDING_CLASSES}
    max_loop_lag_ms = c.integer(shedding.get("max_loop_lag_ms", 0), "shedding.max_loop_lag_ms", 0, 60_000)

    maintenance = c.obj(root["maintenance"], "maintenance", None) if "maintenance" in root else {}
    for route, message in maintenance.items():
        path = join_path("maintenance", route)
        c.route_key(route, path)
        if not isinstance(message, str) or not message.strip() or len(message) > _MAX_MESSAGE_CHARS:
            c.problems[path] = f"must be a message of 1-{_MAX_MESSAGE_CHARS} characters"

    if c.problems:
        raise InvalidConfig(c.problems)
    return LiveConfig(
        rules=rules,
        captcha_routes=MappingProxyType(dict(captcha_routes)),
        pow_maxnumber=pow_maxnumber,
        captcha_escalate=MappingProxyType(dict(escalate)),
        queue_exams=MappingProxyType(exams),
        hold_ttl_s=hold_ttl_s,
        shedding=MappingProxyType(limits),
        max_loop_lag_ms=max_loop_lag_ms,
        maintenance=MappingProxyType(dict(maintenance)),
        version=version,
        document=copy.deepcopy(root),
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: a new document sharing nothing with ``target`` or ``patch``."""
    return _merge(copy.deepcopy(target), patch)


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def diff(old: Any, new: Any) -> list[dict[str, Any]]:
    """The changes from ``old`` to ``new`` as ``[{"path", "old", "new"}]``; absent values are null."""
    changes: list[dict[str, Any]] = []
    _diff(old, new, "", changes)
    return changes


def _diff(old: Any, new: Any, path: str, changes: list[dict[str, Any]]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            _diff(old.get(key), new.get(key), join_path(path, key), changes)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (before, after) in enumerate(zip(old, new)):
            _diff(before, after, join_path(path, index), changes)
    elif old != new or type(old) is not type(new):
        changes.append({"path": path or "$", "old": old, "new": new})

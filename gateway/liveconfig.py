"""The live operator config: its default document, validation into a typed view, merge patch and diff.

The document is what operators edit (API.md "Operators"). ``Document`` and its sections are the
pydantic models that validate it (strict JSON types, unknown keys refused); each constrained type
states its problem in the document's own words, and ``validate`` maps pydantic's errors onto the
JSON paths the admin API answers with (``InvalidConfig.problems``). ``LiveConfig`` is the frozen
view the gateway reads on every request, built once from the validated document, with per-route
lookups cached. It stays a plain frozen dataclass: on a pydantic model a field read took 44 ns against
11 ns, and a cached ``rules_for`` 2.2 µs against 0.08 µs (its cache a private attribute, which
pydantic serves through ``__getattr__``); timeit, pydantic 2.14, one run on the 2-core dev host."""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from ratelimit.errors import InvalidRule
from ratelimit.rules import BODY_KEY_KINDS, Rule, parse_rule

CAPTCHA_MODES = ("image", "pow", "either", "off")
# The captcha an escalated rule asks for: a kind a bot farm cannot solve by spending CPU.
ESCALATION_KINDS = ("image",)
SHEDDING_CLASSES = ("candidate_read", "candidate_write", "login", "payment_notify", "admin")
SECTIONS = ("ratelimit", "captcha", "queue", "seats", "shedding", "maintenance")
QUEUE_EXAM_DEFAULTS: dict[str, Any] = {"enabled": False, "admit_per_s": 50, "place_ttl_s": 120, "admission_ttl_s": 600}
_ROUTE = r"^[a-z0-9_.*?-]{1,64}$"
_EXAM_ID = r"^[1-9][0-9]{0,9}$"
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
        {"id": "certificates-ip", "routes": ["certificates.verify"], "key": "ip", "rate": 60, "period_s": 60,
         "burst": 20, "mode": "enforce", "on_redis_error": "open"},
        # A checked PDF costs a hash of up to 1 MiB and a signature check: an employer's HR checks a few
        # dozen hires in a sitting, a script on one address no more than that a minute.
        {"id": "certificates-pdf-ip", "routes": ["certificates.check_pdf"], "key": "ip", "rate": 30,
         "period_s": 60, "burst": 20, "mode": "enforce", "on_redis_error": "local"},
        {"id": "recovery-ip", "routes": ["password_resets.*"], "key": "ip", "rate": 20, "period_s": 600,
         "burst": 10, "mode": "enforce", "on_redis_error": "local"},
        {"id": "recovery-id", "routes": ["password_resets.question.start", "password_resets.sms.start"],
         "key": "id_number", "rate": 5, "period_s": 3600, "burst": 5, "mode": "enforce", "on_redis_error": "local"},
        # A signed-in change confirmed with the password: wrong passwords count as at sign-in, per candidate,
        # so a borrowed session cannot guess the password there.
        {"id": "reauth-candidate", "routes": ["me.security_question.put", "me.email.put"], "key": "candidate",
         "rate": 5, "period_s": 600, "burst": 5, "mode": "enforce", "on_redis_error": "local", "counts": "failures"},
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
        # SMS codes: a class registering behind one address asks once or twice each; the global rate is
        # what the SMS provider's account sends (codes beyond it would only wait in the outbox, expiring).
        {"id": "sms-codes-ip", "routes": ["sms_codes.create"], "key": "ip", "rate": 60, "period_s": 3600,
         "burst": 30, "mode": "enforce", "on_redis_error": "local"},
        {"id": "sms-codes-global", "routes": ["sms_codes.create"], "key": "global", "rate": 200, "period_s": 1,
         "burst": 1000, "mode": "enforce", "on_redis_error": "local"},
        {"id": "username-recovery-ip", "routes": ["username_recoveries.create"], "key": "ip", "rate": 20,
         "period_s": 600, "burst": 10, "mode": "enforce", "on_redis_error": "local"},
        {"id": "username-recovery-id", "routes": ["username_recoveries.create"], "key": "id_number", "rate": 5,
         "period_s": 3600, "burst": 5, "mode": "enforce", "on_redis_error": "local"},
        # Payment notifications: only failed verifications count, so a provider's signed ones never
        # spend it; a sender of 30 forgeries is refused before its body is parsed, one more per 2 s.
        {"id": "notify-failures-ip", "routes": ["payments.notify.*"], "key": "ip", "rate": 30, "period_s": 60,
         "burst": 30, "mode": "enforce", "on_redis_error": "local", "counts": "failures"},
    ]},
    "captcha": {
        "routes": {"accounts.create": "either", "sessions.create": "either",
                   "password_resets.question.start": "either", "password_resets.sms.start": "either",
                   "tickets.lookup": "either", "scores.lookup": "either", "certificates.verify": "either",
                   "sms_codes.create": "either",
                   "username_recoveries.create": "either"},
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


_OUT_OF_RANGE = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def _say(problem: str, out_of_range: str | None = None) -> WrapValidator:
    """Word any error of one value as ``problem`` (``out_of_range`` when only its bounds are wrong)."""

    def reword(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            kinds = {error["type"] for error in exc.errors()}
            said = out_of_range if out_of_range and kinds <= _OUT_OF_RANGE else problem
            raise PydanticCustomError("live_config", said) from None

    return WrapValidator(reword)


def _not_blank(message: str) -> str:
    if not message.strip():  # what the server trims (str.strip), not only ASCII spaces
        raise ValueError("blank")
    return message


def _rule(raw: Any) -> Rule:
    """One rule, judged by ``ratelimit.rules`` (the owner of rule syntax); ``at`` is the bad field below it."""
    try:
        return parse_rule(raw, "")
    except InvalidRule as exc:
        raise PydanticCustomError("invalid_rule", "{problem}", {"problem": exc.problem, "at": exc.path}) from None


RouteKey = Annotated[str, StringConstraints(pattern=_ROUTE), _say("must be a route name or pattern like scores.*")]
ExamKey = Annotated[str, StringConstraints(pattern=_EXAM_ID), _say("must be keyed by a numeric exam id")]
CaptchaMode = Annotated[Literal["image", "pow", "either", "off"], _say(f"must be one of {', '.join(CAPTCHA_MODES)}")]
EscalationKind = Annotated[Literal["image"], _say(f"must be one of {', '.join(ESCALATION_KINDS)}")]
PowMaxNumber = Annotated[int, Field(ge=1000, le=10_000_000),
                         _say("must be an integer", "must be between 1000 and 10000000")]
HoldTtl = Annotated[int, Field(ge=60, le=86_400), _say("must be an integer", "must be between 60 and 86400")]
QueueTtl = Annotated[int, Field(ge=10, le=86_400), _say("must be an integer", "must be between 10 and 86400")]
AdmitRate = Annotated[float, Field(gt=0, le=1_000_000),
                      _say("must be a number", "must be greater than 0 and at most 1e+06")]
Switch = Annotated[bool, _say("must be true or false")]
ClassLimit = Annotated[int, Field(ge=1, le=1_000_000), _say("must be an integer", "must be between 1 and 1000000")]
LoopLag = Annotated[int, Field(ge=0, le=60_000), _say("must be an integer", "must be between 0 and 60000")]
Message = Annotated[str, StringConstraints(max_length=_MAX_MESSAGE_CHARS), AfterValidator(_not_blank),
                    _say(f"must be a message of 1-{_MAX_MESSAGE_CHARS} characters")]
RuleSpec = Annotated[Rule, PlainValidator(_rule)]


class _Section(BaseModel):
    # Strict: JSON types as written (true is no integer, 1.5 no integer, "5" no number); unknown keys refused.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class RatelimitSection(_Section):
    """``ratelimit``: the throttle rules, in the order they are checked."""

    rules: list[RuleSpec]


class CaptchaSection(_Section):
    """``captcha``: which routes ask for which captcha, the proof-of-work difficulty, escalations."""

    routes: dict[RouteKey, CaptchaMode]
    pow_maxnumber: PowMaxNumber
    # Rule id → captcha kind; an id no rule has does nothing (rules may be replaced alone).
    escalate: dict[str, EscalationKind] = Field(default_factory=dict)


class QueueExamSection(_Section):
    """``queue.exams.<id>``: one exam's waiting room."""

    enabled: Switch = QUEUE_EXAM_DEFAULTS["enabled"]
    admit_per_s: AdmitRate = QUEUE_EXAM_DEFAULTS["admit_per_s"]
    place_ttl_s: QueueTtl = QUEUE_EXAM_DEFAULTS["place_ttl_s"]
    admission_ttl_s: QueueTtl = QUEUE_EXAM_DEFAULTS["admission_ttl_s"]


class QueueSection(_Section):
    """``queue``: waiting rooms by exam id."""

    exams: dict[ExamKey, QueueExamSection]


class SeatsSection(_Section):
    """``seats``: how long a held seat waits for its payment."""

    hold_ttl_s: HoldTtl


class SheddingSection(_Section):
    """``shedding``: requests in flight per class and process, and the loop lag that sheds."""

    candidate_read: ClassLimit
    candidate_write: ClassLimit
    login: ClassLimit
    payment_notify: ClassLimit
    admin: ClassLimit
    max_loop_lag_ms: LoopLag


class Document(_Section):
    """The whole live config document; every section is required."""

    ratelimit: RatelimitSection
    captcha: CaptchaSection
    queue: QueueSection
    seats: SeatsSection
    shedding: SheddingSection
    maintenance: dict[RouteKey, Message]


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


def validate(doc: Any, version: int = 0) -> LiveConfig:
    """The typed view of ``doc``; raises InvalidConfig listing every problem with its JSON path."""
    model: Document | None = None
    try:
        model = Document.model_validate(doc)
        problems: dict[str, str] = {}
    except ValidationError as exc:
        problems = _problems(exc)
    # Checks across entries, made on the document itself so they are reported beside the others
    # (a rule's duplicate id while another rule is invalid, an escalation while shedding is wrong).
    duplicates = dict(_duplicate_rule_ids(doc))
    rules = () if duplicates else tuple(model.ratelimit.rules) if model else _rules_alone(doc)
    for path, problem in [*duplicates.items(), *_escalations_to_other_rules(doc, rules)]:
        problems.setdefault(path, problem)
    if problems or model is None:
        raise InvalidConfig(problems)
    return _view(model, doc, version)


_STRUCTURE = {
    "missing": "is required",
    "extra_forbidden": "is not a known setting",
    "model_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be a list",
}


def _problems(exc: ValidationError) -> dict[str, str]:
    """pydantic's errors as ``{JSON path: problem}``; a bad key hides what was found below it."""
    errors = exc.errors()
    bad_keys = [_path(error["loc"][:-1]) for error in errors if error["loc"][-1:] == ("[key]",)]
    problems: dict[str, str] = {}
    for error in errors:
        if error["loc"][-1:] == ("[key]",):
            path = _path(error["loc"][:-1])
        else:
            path = _path(error["loc"]) + str(error.get("ctx", {}).get("at", ""))
            if any(path == key or path.startswith((key + ".", key + "[")) for key in bad_keys):
                continue
        problems[path or "$"] = _STRUCTURE.get(error["type"], error["msg"])
    return problems


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for key in loc:
        path = join_path(path, key)
    return path


def _rules_alone(doc: Any) -> tuple[Rule, ...]:
    """The rules when they are valid though something else in the document is not, else none."""
    try:
        return tuple(RatelimitSection.model_validate(doc["ratelimit"]).rules)
    except (TypeError, KeyError, ValidationError):
        return ()


def _escalations_to_other_rules(doc: Any, rules: tuple[Rule, ...]) -> Iterator[tuple[str, str]]:
    """An escalation must name a rule that counts failures (others refuse every request alike)."""
    captcha = doc.get("captcha") if isinstance(doc, dict) else None
    escalate = captcha.get("escalate") if isinstance(captcha, dict) else None
    counts = {rule.id: rule.counts for rule in rules}
    for rule_id in escalate if isinstance(escalate, dict) else ():
        if counts.get(rule_id, "failures") != "failures":
            yield (join_path("captcha.escalate", rule_id),
                   'must name a rule with counts: "failures" (others refuse every request alike)')


def _duplicate_rule_ids(doc: Any) -> Iterator[tuple[str, str]]:
    ratelimit = doc.get("ratelimit") if isinstance(doc, dict) else None
    rules = ratelimit.get("rules") if isinstance(ratelimit, dict) else None
    seen: set[str] = set()
    for index, item in enumerate(rules if isinstance(rules, list) else ()):
        rule_id = item.get("id") if isinstance(item, dict) else None
        if isinstance(rule_id, str):
            if rule_id in seen:
                yield f"ratelimit.rules[{index}].id", f"duplicate rule id {rule_id!r}"
            seen.add(rule_id)


def _view(model: Document, doc: dict[str, Any], version: int) -> LiveConfig:
    """The frozen view the hot path reads, built once from the validated document."""
    return LiveConfig(
        rules=tuple(model.ratelimit.rules),
        captcha_routes=MappingProxyType(dict(model.captcha.routes)),
        pow_maxnumber=model.captcha.pow_maxnumber,
        captcha_escalate=MappingProxyType(dict(model.captcha.escalate)),
        queue_exams=MappingProxyType({int(exam_id): QueueExam(**spec.model_dump())
                                      for exam_id, spec in model.queue.exams.items()}),
        hold_ttl_s=model.seats.hold_ttl_s,
        shedding=MappingProxyType({name: getattr(model.shedding, name) for name in SHEDDING_CLASSES}),
        max_loop_lag_ms=model.shedding.max_loop_lag_ms,
        maintenance=MappingProxyType(dict(model.maintenance)),
        version=version,
        document=copy.deepcopy(doc),
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
        for index, (before, after) in enumerate(zip(old, new, strict=True)):
            _diff(before, after, join_path(path, index), changes)
    elif old != new or type(old) is not type(new):
        changes.append({"path": path or "$", "old": old, "new": new})

"""The live config document: validation naming every problem, defaults, merge patch, diff."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.liveconfig import (
    DEFAULT,
    InvalidConfig,
    QueueExam,
    diff,
    merge_patch,
    validate,
)

pytestmark = pytest.mark.unit


def problems_of(doc: Any) -> dict[str, str]:
    with pytest.raises(InvalidConfig) as caught:
        validate(doc)
    return caught.value.problems


def test_default_is_valid_and_typed() -> None:
    live = validate(DEFAULT, 0)
    assert live.version == 0
    assert live.document == DEFAULT and live.document is not DEFAULT
    assert {rule.id for rule in live.rules_for("sessions.create")} == {"login-ip", "login-account"}
    assert [rule.id for rule in live.rules_for("scores.lookup")] == ["lookup-ip"]
    assert live.rules_for("exams.list") == ()
    assert live.captcha_for("tickets.lookup") == "either" and live.captcha_for("exams.list") == "off"
    assert live.pow_maxnumber == 100_000 and live.hold_ttl_s == 1800 and live.max_loop_lag_ms == 250
    assert set(live.shedding) == {"candidate_read", "candidate_write", "login", "payment_notify", "admin"}
    assert live.maintenance_for("sessions.create") is None
    assert dict(live.queue_exams) == {}


def test_every_problem_is_named_with_its_path() -> None:
    doc = merge_patch(DEFAULT, {
        "ratelimit": {"rules": [
            {"id": "a", "routes": ["x"], "key": "ip", "rate": 0, "period_s": 1},
            {"id": "b", "routes": ["y"], "key": "zz", "rate": 1, "period_s": 1},
            {"id": "b", "routes": ["z"], "key": "ip", "rate": 1, "period_s": 1},
        ]},
        "captcha": {"routes": {"sessions.create": "maybe"}, "pow_maxnumber": "lots", "colour": "red"},
        "queue": {"exams": {"x": {}, "2": {"admit_per_s": 0, "enabled": "yes", "speed": 1}}},
        "seats": None,
        "shedding": {"login": 1.5, "max_loop_lag_ms": -1},
        "maintenance": {"scores.*": "", "Bad Route": "系统维护中"},
        "extra": {},
    })
    assert problems_of(doc) == {
        "extra": "is not a known setting",
        "seats": "is required",
        "ratelimit.rules[0].rate": "must be between 1 and 1e+07",
        "ratelimit.rules[1].key": "must be one of ip, candidate, account, id_number, global",
        "ratelimit.rules[2].id": "duplicate rule id 'b'",
        "captcha.colour": "is not a known setting",
        'captcha.routes["sessions.create"]': "must be one of image, pow, either, off",
        "captcha.pow_maxnumber": "must be an integer",
        "queue.exams.x": "must be keyed by a numeric exam id",
        "queue.exams.2.speed": "is not a known setting",
        "queue.exams.2.enabled": "must be true or false",
        "queue.exams.2.admit_per_s": "must be greater than 0 and at most 1e+06",
        "shedding.login": "must be an integer",
        "shedding.max_loop_lag_ms": "must be between 0 and 60000",
        'maintenance["scores.*"]': "must be a message of 1-500 characters",
        'maintenance["Bad Route"]': "must be a route name or pattern like scores.*",
    }


@pytest.mark.parametrize(
    ("patch", "path", "problem"),
    [
        ({"shedding": {"admin": None}}, "shedding.admin", "is required"),
        ({"ratelimit": {"rules": {}}}, "ratelimit.rules", "must be a list"),
        ({"captcha": {"routes": []}}, "captcha.routes", "must be an object"),
        ({"seats": {"hold_ttl_s": 10}}, "seats.hold_ttl_s", "must be between 60 and 86400"),
        ({"seats": {"hold_ttl_s": True}}, "seats.hold_ttl_s", "must be an integer"),
        ({"queue": {"exams": {"3": {"place_ttl_s": 5}}}}, "queue.exams.3.place_ttl_s", "must be between 10 and 86400"),
        ({"ratelimit": {"rules": [{"id": "x"}]}}, "ratelimit.rules[0].routes",
         "must be a non-empty list of route names or patterns"),
    ],
)
def test_single_problems(patch: dict[str, Any], path: str, problem: str) -> None:
    assert problems_of(merge_patch(DEFAULT, patch)) == {path: problem}


BAD_MESSAGE = "must be a message of 1-500 characters"
NOT_COUNTING_FAILURES = 'must name a rule with counts: "failures" (others refuse every request alike)'


@pytest.mark.parametrize(
    ("patch", "problems"),
    [
        # JSON types as written: no number from a string, no integer from 1.0 or true.
        ({"seats": {"hold_ttl_s": "900"}}, {"seats.hold_ttl_s": "must be an integer"}),
        ({"shedding": {"admin": 32.0}}, {"shedding.admin": "must be an integer"}),
        ({"queue": {"exams": {"7": {"admit_per_s": "5"}}}}, {"queue.exams.7.admit_per_s": "must be a number"}),
        ({"queue": {"exams": {"7": []}}}, {"queue.exams.7": "must be an object"}),
        ({"seats": 5}, {"seats": "must be an object"}),
        # A key that is wrong hides what is wrong below it: the operator fixes the key first.
        ({"queue": {"exams": {"07": {"enabled": "yes"}}}}, {"queue.exams.07": "must be keyed by a numeric exam id"}),
        # Blank as the server trims it, ideographic space included; 500 characters at most.
        ({"maintenance": {"scores.*": "\u3000"}}, {'maintenance["scores.*"]': BAD_MESSAGE}),
        ({"maintenance": {"scores.*": "维" * 501}}, {'maintenance["scores.*"]': BAD_MESSAGE}),
        # Checks across entries are made even while another section is wrong.
        ({"ratelimit": {"rules": [{**DEFAULT["ratelimit"]["rules"][1], "counts": "requests"}]}, "seats": None},
         {"seats": "is required", "captcha.escalate.login-account": NOT_COUNTING_FAILURES}),
    ],
)
def test_problems_in_the_documents_words(patch: dict[str, Any], problems: dict[str, str]) -> None:
    assert problems_of(merge_patch(DEFAULT, patch)) == problems


def test_queue_exam_defaults_fill_what_is_left_out() -> None:
    live = validate(merge_patch(DEFAULT, {"queue": {"exams": {"9": {"admit_per_s": 3}}}}))
    assert live.queue_exams[9] == QueueExam(enabled=False, admit_per_s=3.0, place_ttl_s=120, admission_ttl_s=600)
    assert live.document["queue"]["exams"]["9"] == {"admit_per_s": 3}  # the document is kept as written


def test_default_throttles_image_captchas_and_account_creation() -> None:
    from gateway.config import Settings

    live = validate(DEFAULT, 0)
    assert {rule.id: rule.key for rule in live.rules_for("captcha.image")} == {
        "captcha-image-ip": "ip", "captcha-image-global": "global"}
    assert {rule.id: rule.key for rule in live.rules_for("accounts.create")} == {
        "accounts-ip": "ip", "accounts-global": "global"}
    assert live.rules_for("captcha.pow") == ()
    # A flood from any number of addresses cannot take more than the worker keeps drawn ahead.
    image_global = next(rule for rule in live.rules if rule.id == "captcha-image-global")
    assert image_global.burst < Settings().captcha_pool_target


def test_escalations_name_failure_counting_rules() -> None:
    live = validate(DEFAULT, 0)
    assert dict(live.captcha_escalate) == {"login-account": "image"}
    assert live.escalation_for(("login-account",)) == "image"
    assert live.escalation_for(("login-ip",)) is None
    assert live.escalation_for(("login-account", "login-ip")) is None  # a per-address refusal stays a 429
    assert live.escalation_for(()) is None
    assert problems_of(merge_patch(DEFAULT, {"captcha": {"escalate": {"login-account": "pow"}}})) == {
        "captcha.escalate.login-account": "must be one of image"}
    assert problems_of(merge_patch(DEFAULT, {"captcha": {"escalate": {"login-ip": "image"}}})) == {
        'captcha.escalate.login-ip': 'must name a rule with counts: "failures" (others refuse every request alike)'}
    assert problems_of(merge_patch(DEFAULT, {"captcha": {"escalate": ["login-account"]}})) == {
        "captcha.escalate": "must be an object"}
    # Optional, and an entry whose rule is gone does nothing: the rules can be replaced on their own.
    assert dict(validate(merge_patch(DEFAULT, {"captcha": {"escalate": None}})).captcha_escalate) == {}
    alone = validate(merge_patch(DEFAULT, {"ratelimit": {"rules": []}}))
    assert alone.escalation_for(("login-account",)) == "image" and alone.rules == ()


def test_document_must_be_an_object() -> None:
    assert problems_of([1]) == {"$": "must be an object"}
    assert set(problems_of({})) == {"ratelimit", "captcha", "queue", "seats", "shedding", "maintenance"}


def test_typed_view_of_queues_maintenance_and_rules() -> None:
    live = validate(merge_patch(DEFAULT, {
        "queue": {"exams": {"2": {"enabled": True, "admit_per_s": 12.5}}},
        "maintenance": {"scores.*": "成绩查询维护中", "scores.lookup": "成绩查询暂停"},
        "ratelimit": {"rules": [{"id": "all", "routes": ["*"], "key": "global", "rate": 5, "period_s": 1},
                                {"id": "quiet", "routes": ["*"], "key": "ip", "rate": 5, "period_s": 1,
                                 "mode": "off"}]},
    }), version=4)
    assert live.version == 4
    assert live.queue_exams[2] == QueueExam(enabled=True, admit_per_s=12.5, place_ttl_s=120, admission_ttl_s=600)
    assert live.maintenance_for("scores.lookup") == "成绩查询暂停"  # the exact name wins over a pattern
    assert live.maintenance_for("scores.other") == "成绩查询维护中"
    assert live.maintenance_for("tickets.lookup") is None
    assert live.maintenance_for("tickets.lookup") is None  # cached, still right
    assert [rule.id for rule in live.rules_for("anything")] == ["all"]  # mode off is left out
    assert live.rules_for("anything") is live.rules_for("anything")
    with pytest.raises(TypeError):
        live.queue_exams[3] = live.queue_exams[2]  # type: ignore[index]


# RFC 7396, appendix A: (target, patch, result).
RFC_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_EXAMPLES)
def test_merge_patch_rfc_7396_examples(target: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == result
    assert target == before  # the target is never modified


def test_diff_lists_each_change_compactly() -> None:
    new = merge_patch(DEFAULT, {"seats": {"hold_ttl_s": 900}, "maintenance": {"scores.*": "维护中"},
                                "captcha": {"routes": {"accounts.create": None}}})
    new["ratelimit"]["rules"][0]["rate"] = 99
    assert diff(DEFAULT, new) == [
        {"path": "ratelimit.rules[0].rate", "old": 30, "new": 99},
        {"path": 'captcha.routes["accounts.create"]', "old": "either", "new": None},
        {"path": "seats.hold_ttl_s", "old": 1800, "new": 900},
        {"path": 'maintenance["scores.*"]', "old": None, "new": "维护中"},
    ]
    assert diff(DEFAULT, copy.deepcopy(DEFAULT)) == []
    shorter = merge_patch(DEFAULT, {"ratelimit": {"rules": DEFAULT["ratelimit"]["rules"][:1]}})
    assert [c["path"] for c in diff(DEFAULT, shorter)] == ["ratelimit.rules"]  # a list that changed length

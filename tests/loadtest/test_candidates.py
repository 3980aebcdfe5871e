"""Seeded candidates for load users: shares per worker process, addresses, enrolment bodies."""

from __future__ import annotations

from collections import Counter

import pytest

from loadtest.candidates import CandidatePool, client_address, enrolment
from seed import candidate_credentials, qualifies
from seed.data import education

pytestmark = pytest.mark.unit


def test_worker_processes_share_the_candidates_without_overlap() -> None:
    pools = [CandidatePool(100, 50, offset=7, worker_index=w, workers=3) for w in range(3)]
    drawn = [pool.next() for _ in range(16) for pool in pools]
    assert sorted(drawn[:48]) == sorted(set(drawn[:48]))  # 48 draws, 48 candidates
    assert all(100 <= index < 150 for index in drawn)
    assert Counter(pools[0].next() for _ in range(50)).most_common(1)[0][1] <= 3  # wraps round, evenly


def test_each_candidate_has_an_address_of_its_own() -> None:
    assert len({client_address(i) for i in range(100_000)}) == 100_000
    assert client_address(0) == "10.0.0.1"


def test_enrolment_is_in_the_candidates_province_with_every_subject_of_a_specialty() -> None:
    exam = {"id": 2, "provinces": ["11", "37", "44"], "levels": [
        {"code": "ZJ", "specialties": [{"code": "JR", "subjects": [{"code": "ZJ01"}, {"code": "ZJ12"}]}]}]}
    index = next(i for i in range(1000) if candidate_credentials(i).id_number.startswith("37"))
    body = enrolment(index, exam)
    assert body == {"exam_id": 2, "province": "37", "city": "济南市", "level": "ZJ", "specialty": "JR",
                    "subjects": ["ZJ01", "ZJ12"], "work_years": body["work_years"]}
    other = next(i for i in range(1000) if candidate_credentials(i).id_number[:2] not in exam["provinces"])
    assert enrolment(other, exam)["province"] in exam["provinces"]
    assert enrolment(index, exam, province="44")["city"] == "广州市"


EXAM = {"id": 2, "provinces": ["11", "37"], "levels": [
    {"code": code, "specialties": [{"code": "JR", "subjects": [{"code": f"{code}01"}, {"code": f"{code}12"}]}]}
    for code in ("CJ", "ZJ")]}


def test_candidates_enrol_in_a_level_they_qualify_for() -> None:
    bodies = [enrolment(i, EXAM) for i in range(2000)]
    assert all(qualifies(i, b["level"], b["work_years"]) for i, b in enumerate(bodies))
    assert {b["level"] for b in bodies} == {"CJ", "ZJ"}
    # who lacks the education or the years for 中级 enrols in 初级 (中专 never sits 中级)
    assert all(b["level"] == "CJ" for i, b in enumerate(bodies) if education(i).level == "secondary")


def test_the_review_point_is_the_one_of_the_candidates_city() -> None:
    points = [{"review_point_id": 7, "province": "37", "city": "青岛市"},
              {"review_point_id": 8, "province": "37", "city": "济南市"},
              {"review_point_id": 9, "province": "11", "city": "北京市"}]
    index = next(i for i in range(1000) if candidate_credentials(i).id_number.startswith("37"))
    assert enrolment(index, EXAM, review_points=points)["review_point"] == 8
    assert enrolment(index, EXAM, review_points=points[:1])["review_point"] == 7  # none in the city: the first
    assert "review_point" not in enrolment(index, EXAM, review_points=points[2:])

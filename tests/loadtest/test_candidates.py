"""Seeded candidates for load users: shares per worker process, addresses, enrolment bodies."""

from __future__ import annotations

from collections import Counter

import pytest

from loadtest.candidates import CandidatePool, client_address, enrolment
from seed import candidate_credentials

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
                    "subjects": ["ZJ01", "ZJ12"], "work_years": body["work_years"], "commitment": True}
    other = next(i for i in range(1000) if candidate_credentials(i).id_number[:2] not in exam["provinces"])
    assert enrolment(other, exam)["province"] in exam["provinces"]

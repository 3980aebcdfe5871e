"""The peak paths' Redis round trips, counted on a warm gateway (``scripts/call_path.py``, its own database)."""

from __future__ import annotations

from scripts.call_path import SCORE, SCORE_PROTECTED, SEAT, measure
from tests.conftest import TEST_PG_SERVER


async def test_a_seat_hold_takes_two_round_trips_and_a_score_lookup_one(redis_url: str) -> None:
    traces = {trace.request: trace for trace in await measure(redis_url, TEST_PG_SERVER)}
    # Session lookup, current hold and the candidate's rule together; then the hold script.
    assert traces[SEAT].status == 200 and traces[SEAT].redis_round_trips == 2
    # Captcha, rules and the record read in one round, with throttles and captcha off or on.
    assert traces[SCORE].redis_round_trips == 1
    assert traces[SCORE_PROTECTED].redis_round_trips == 1 and traces[SCORE_PROTECTED].redis_writes == 2

"""The photo benchmark, run tiny against real stores: its figures are made and every upload was answered 201."""

from __future__ import annotations

import pytest

from benchmarks import bench_photos, common
from tests.conftest import TEST_PG_SERVER, TEST_REDIS_URL

pytestmark = pytest.mark.timeout(240)


def test_a_tiny_run_measures_uploads_beside_the_bare_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "PG_SERVER", TEST_PG_SERVER)  # a scratch database of its own, dropped after
    monkeypatch.setattr(common, "REDIS_URL", TEST_REDIS_URL)

    figures = {f["metric"]: f for f in bench_photos.run(rounds=1, round_s=1.0, candidates=300, images=4)}

    assert set(figures) == {"upload_vs_bare_decode_resize_encode", "accepted_uploads_per_s_per_process",
                            "upload_cpu_ms_event_loop", "upload_cpu_ms_photo_threads", "bare_cpu_ms_per_image"}
    ratio = figures["upload_vs_bare_decode_resize_encode"]
    details = ratio["details"]
    assert ratio["unit"] == "×" and ratio["target"] == ">= 0.8" and ratio["value"] > 0
    assert details["unexpected_answers"] == {}, details["samples"]["statuses"]  # every upload 201, approved
    assert details["uploads_per_s"] > 0 and details["bare_per_s"] > 0
    assert details["samples"]["candidates_used"][0] <= 300  # each upload by a candidate of its own
    assert figures["accepted_uploads_per_s_per_process"]["value"] > 0
    for metric in ("upload_cpu_ms_event_loop", "upload_cpu_ms_photo_threads", "bare_cpu_ms_per_image"):
        assert figures[metric]["value"] > 0, metric
    # The one-thread profile splits both pipelines into Pillow's steps; decoding and resizing are in both.
    steps = details["where_the_time_goes"]["one_thread_ms_per_image"]
    for pipeline in ("process", "bare"):
        assert steps[pipeline]["ms_per_image"] > 0
        assert {"decode (load)", "resize", "encode (save)"} <= set(steps[pipeline]["steps_ms"]), steps[pipeline]

"""Redis key builders of the waiting room and seat inventory (all keys start ``eg:``).

Keys one script touches share the exam's hash tag ``{exam:N}`` so they live in one
Redis Cluster slot.
"""

from __future__ import annotations


def exam_tag(exam_id: int) -> str:
    """The hash tag shared by every key of one exam."""
    return f"{{exam:{exam_id}}}"


def site_left(exam_id: int, site_id: int) -> str:
    """Seats still free at a site (an integer that never goes below zero)."""
    return f"eg:{{exam:{exam_id}}}:site:{site_id}:left"

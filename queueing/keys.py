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


# -- waiting room: seven keys per exam, all under the exam's tag ------------------------------------


def room_meta(exam_id: int) -> str:
    """HASH of the room's counters and settings: opens_at, opened, tail, serving, last_ms, credit, rate…"""
    return f"eg:{{exam:{exam_id}}}:q:meta"


def room_candidates(exam_id: int) -> str:
    """HASH candidate id → the candidate's current ticket."""
    return f"eg:{{exam:{exam_id}}}:q:cand"


def room_tickets(exam_id: int) -> str:
    """HASH ticket → ``"<candidate_id>:<position>:<last_seen_ms>"`` (position 0: in the draw; seen 0: expired)."""
    return f"eg:{{exam:{exam_id}}}:q:tix"


def room_draw(exam_id: int) -> str:
    """ZSET of the tickets that joined before the opening, scored by a secret random draw key."""
    return f"eg:{{exam:{exam_id}}}:q:draw"


def room_order(exam_id: int) -> str:
    """HASH position → ticket of the places taken after the opening (first come, first served)."""
    return f"eg:{{exam:{exam_id}}}:q:order"


def room_admitted(exam_id: int) -> str:
    """HASH ticket → when the place was first polled admitted (ms, whole seconds): its admission runs from then."""
    return f"eg:{{exam:{exam_id}}}:q:adm"


def room_trail(exam_id: int) -> str:
    """LIST of ``"<position>:<passed_at_ms>"``: when the serving counter passed the positions (for forgetting them)."""
    return f"eg:{{exam:{exam_id}}}:q:trail"


def room_keys(exam_id: int) -> tuple[str, str, str, str, str, str, str]:
    """Every key of one exam's waiting room: meta, candidates, tickets, draw, order, admitted, trail."""
    return (room_meta(exam_id), room_candidates(exam_id), room_tickets(exam_id), room_draw(exam_id),
            room_order(exam_id), room_admitted(exam_id), room_trail(exam_id))  # fmt: skip


# --- seat holds (queueing/holds.py, writebehind.py, sweeper.py, reconcile.py) ---------------


def holds(exam_id: int) -> str:
    """Hash registration id → site id of every seat held in an exam (expiring or permanent)."""
    return f"eg:{{exam:{exam_id}}}:holds"


def hold_expiry(exam_id: int) -> str:
    """Sorted set of registrations scored by their hold's expiry (ms); permanent holds are absent."""
    return f"eg:{{exam:{exam_id}}}:holds:expiry"


def hold_last_event(exam_id: int) -> str:
    """Hash registration id → number of its latest hold event (the write-behind applies only that one)."""
    return f"eg:{{exam:{exam_id}}}:holds:last"


def hold_event_counter(exam_id: int) -> str:
    """The exam's last hold event number (starts at the first event's time in ms × 1000)."""
    return f"eg:{{exam:{exam_id}}}:holds:seq"


def holds_stream(exam_id: int) -> str:
    """Redis Stream of the exam's hold events, consumed by the write-behind."""
    return f"eg:{{exam:{exam_id}}}:holds:stream"


def seat_rights(exam_id: int) -> str:
    """Hash registration id → its version when approved (positive) or when no longer approved (negative)."""
    return f"eg:{{exam:{exam_id}}}:seat_rights"


# Not used by any script, so no exam hash tag: one place for operators to look.
HOLDS_DEAD_LETTERS = "eg:holds:dead"
HOLDS_FAILURES = "eg:holds:failures"


def exam_of_holds_stream(stream: str | bytes) -> int:
    """The exam id a ``holds_stream`` key belongs to; ``ValueError`` for any other key."""
    name = stream.decode() if isinstance(stream, bytes) else stream
    prefix, suffix = "eg:{exam:", "}:holds:stream"
    if not (name.startswith(prefix) and name.endswith(suffix)):
        raise ValueError(f"not a holds stream: {name!r}")
    return int(name[len(prefix):-len(suffix)])

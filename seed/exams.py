"""The two demo exams: structure (levels, specialties, subjects), windows, family and sites."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import NamedTuple

import asyncpg

from core.timeutil import SHANGHAI
from seed.data import (
    EXAM_A_CODE,
    EXAM_B_CODE,
    EXAM_FAMILY,
    SEATS_PER_ROOM,
    site_rooms,
    sites_needed,
)
from seed.names import DISTRICT_WORDS, PROVINCES, ROADS, SITE_KINDS, chinese_number

FEE_PER_SUBJECT_FEN = 6_000
FULL_MARK, PASS_MARK = 140, 84

# (code, name); 中级 is taken by more candidates than 初级.
LEVELS = (("CJ", "初级"), ("ZJ", "中级"))
SPECIALTIES = (
    ("GS", "工商管理"), ("JR", "金融"), ("CS", "财政税收"),
    ("RL", "人力资源管理"), ("JZ", "建筑与房地产经济"), ("ZS", "知识产权"),
)  # fmt: skip
# How often each specialty is chosen, out of sum(SPECIALTY_WEIGHTS), in SPECIALTIES order.
SPECIALTY_WEIGHTS = (5, 5, 3, 4, 2, 1)
BASIC_SUBJECT = "01"  # 经济基础知识, shared by every specialty of a level


def basic_subject_code(level: str) -> str:
    """Code of the level's shared subject (经济基础知识)."""
    return level + BASIC_SUBJECT


def practice_subject_code(level: str, specialty_pos: int) -> str:
    """Code of a specialty's own subject (专业知识和实务)."""
    return f"{level}{11 + specialty_pos}"


class ExamSpec(NamedTuple):
    """One demo exam's identity and windows."""

    code: str
    name: str
    registration_opens_at: datetime
    registration_closes_at: datetime
    ticket_print_opens_at: datetime
    ticket_print_closes_at: datetime
    exam_day: datetime  # local midnight of the first exam day
    score_release_at: datetime


def exam_specs(now: datetime) -> tuple[ExamSpec, ExamSpec]:
    """Exam A (sat a month ago, tickets printable, scores out now) and exam B (registration open)."""
    today = datetime.combine(now.astimezone(SHANGHAI).date(), time(), SHANGHAI)
    a = ExamSpec(
        EXAM_A_CODE, "2026年度全国经济专业技术资格考试（演示·已考）",
        now - timedelta(days=120), now - timedelta(days=90),
        now - timedelta(days=1), now + timedelta(days=30),
        today - timedelta(days=30), now,
    )  # fmt: skip
    b_day = today + timedelta(days=52)
    b = ExamSpec(
        EXAM_B_CODE, "2026年度全国经济专业技术资格考试（演示·报名中）",
        now - timedelta(hours=1), now + timedelta(days=30),
        b_day - timedelta(days=7), b_day + timedelta(days=2),
        b_day, b_day + timedelta(days=60),
    )  # fmt: skip
    return a, b


def _subject_times(exam_day: datetime, level_pos: int, practice: bool) -> tuple[datetime, datetime]:
    # 中级 sits on the first day, 初级 on the second; 09:00–10:30 and 14:00–16:30 local time.
    day = exam_day + timedelta(days=1 - level_pos)
    if practice:
        return day + timedelta(hours=14), day + timedelta(hours=16, minutes=30)
    return day + timedelta(hours=9), day + timedelta(hours=10, minutes=30)


async def insert_exam(conn: asyncpg.Connection, spec: ExamSpec) -> int:
    """Insert one exam with its levels, specialties and subjects; return its id."""
    starts = min(_subject_times(spec.exam_day, pos, False)[0] for pos in range(len(LEVELS)))
    exam_id: int = await conn.fetchval(
        """INSERT INTO exams (code, name, registration_opens_at, registration_closes_at, ticket_print_opens_at,
                              ticket_print_closes_at, exam_starts_at, score_release_at, fee_per_subject_fen, family)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id""",
        spec.code, spec.name, spec.registration_opens_at, spec.registration_closes_at,
        spec.ticket_print_opens_at, spec.ticket_print_closes_at, starts, spec.score_release_at,
        FEE_PER_SUBJECT_FEN, EXAM_FAMILY,
    )  # fmt: skip
    levels, specialties, subjects, links = [], [], [], []
    for lpos, (level, level_name) in enumerate(LEVELS):
        levels.append((exam_id, level, level_name, lpos))
        basic = basic_subject_code(level)
        times = _subject_times(spec.exam_day, lpos, False)
        subjects.append((exam_id, basic, f"经济基础知识（{level_name}）", *times, FULL_MARK, PASS_MARK, lpos * 10))
        for spos, (spec_code, spec_name) in enumerate(SPECIALTIES):
            specialties.append((exam_id, level, spec_code, spec_name, spos))
            practice = practice_subject_code(level, spos)
            times = _subject_times(spec.exam_day, lpos, True)
            name = f"{spec_name}专业知识和实务（{level_name}）"
            subjects.append((exam_id, practice, name, *times, FULL_MARK, PASS_MARK, lpos * 10 + spos + 1))
            links += [(exam_id, level, spec_code, basic), (exam_id, level, spec_code, practice)]
    await conn.copy_records_to_table("exam_levels", records=levels, columns=["exam_id", "code", "name", "position"])
    await conn.copy_records_to_table(
        "exam_specialties", records=specialties, columns=["exam_id", "level_code", "code", "name", "position"]
    )
    await conn.copy_records_to_table(
        "exam_subjects",
        records=subjects,
        columns=["exam_id", "code", "name", "starts_at", "ends_at", "full_mark", "pass_mark", "position"],
    )
    await conn.copy_records_to_table(
        "exam_specialty_subjects",
        records=links,
        columns=["exam_id", "level_code", "specialty_code", "subject_code"],
    )
    return exam_id


class SiteRow(NamedTuple):
    """A demo site: province position, its number within the province, and what goes in exam_sites."""

    province_pos: int
    site_no: int
    province: str
    city: str
    name: str
    address: str
    rooms: int


def demo_sites(candidates: int) -> list[SiteRow]:
    """Sites in every province, enough for each province's share of ``candidates``, in (province, number) order."""
    sites = []
    for p, prov in enumerate(PROVINCES):
        cities = prov.cities
        for j in range(sites_needed(p, candidates)):
            city = cities[j % len(cities)]
            num = j // len(cities) + 1
            kind = SITE_KINDS[(num - 1) % len(SITE_KINDS)]
            numeral = chinese_number(num) if num < 1000 else str(num)
            place = city if city == prov.name else prov.name + city
            street = f"{DISTRICT_WORDS[j % len(DISTRICT_WORDS)]}{ROADS[(p + j) % len(ROADS)]}{(j * 37) % 400 + 1}号"
            address = place + street
            sites.append(SiteRow(p, j + 1, prov.code, city, f"{city}第{numeral}{kind}", address, site_rooms(p, j)))
    return sites


async def insert_sites(conn: asyncpg.Connection, exam_id: int, sites: list[SiteRow], first_id: int) -> None:
    """Insert the sites with ids ``first_id``, ``first_id + 1``, … in list order."""
    await conn.copy_records_to_table(
        "exam_sites",
        records=[
            (first_id + n, exam_id, s.province, s.city, s.name, s.address, s.rooms * SEATS_PER_ROOM, s.rooms,
             SEATS_PER_ROOM)
            for n, s in enumerate(sites)
        ],  # fmt: skip
        columns=["id", "exam_id", "province", "city", "name", "address", "capacity", "rooms", "seats_per_room"],
    )

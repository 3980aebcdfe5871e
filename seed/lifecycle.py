"""The open exam's registration lifecycle as demo data: who may sit it, how provinces review, texts, the archive.

Exam B (open for registration) gets eligibility rules per level, a review rule for every province
(most review automatically under the signed commitment; two review online, one on site), a review
point (审核点) per city, its notice, commitment and instructions texts, and both demo exams a
family (``exams.family``) that a few seeded candidates' integrity-archive records name. Exam A was
sat under whatever rules it had; its paid registrations are left as they are.

The rules fit the seeded candidates (``seed.data.education``): almost every education record
qualifies for 初级, and for 中级 with the years of work the paths ask; the majors of twelve of the
sixteen seeded majors are 本专业 and three 相近专业, so a sixteenth of the candidates (土木工程)
land in 其他专业 and must acknowledge it before a person reviews them. ``qualifies`` and
``in_archive`` answer for a seeded candidate without the database, as the load tests need.

``apply`` writes it all with ``ON CONFLICT DO NOTHING``: a seed run finding the demo data in place
adds what is missing and changes nothing else (an operator's new rule, text version or removed
record stays). Dates are counted from exam B's registration opening, not from today, so a later
run writes the same rows.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any, NamedTuple

import asyncpg

from core.documents import text_hash
from core.qualification import Education, EligibilityRules, ReviewRule, parse_rules, review
from core.timeutil import SHANGHAI
from seed import data as sd
from seed.data import EXAM_FAMILY, SEEDED_USERNAME_PATTERN
from seed.exams import LEVELS, SPECIALTIES, basic_subject_code, practice_subject_code
from seed.names import DISTRICT_WORDS, PROVINCES, ROADS

__all__ = [
    "ARCHIVE_STRIDE", "DOCUMENTS", "ELIGIBILITY", "EXAM_FAMILY", "MAJORS_RELATED", "MAJORS_SAME",
    "ONSITE_REVIEW_PROVINCE", "REVIEW_PROVINCE", "REVIEW_RULES", "SEED_ACTOR",
    "ArchiveEntry", "apply", "archive_entries", "in_archive", "qualifies", "review_points", "review_rule",
]  # fmt: skip

SEED_ACTOR = "seed"  # published_by / updated_by / created_by of what the seed writes

MAJORS_SAME = (
    "经济学", "金融学", "财政学", "税收学", "会计学", "工商管理", "人力资源管理", "市场营销", "国际经济与贸易",
    "保险学", "物流管理", "农林经济管理",
)  # fmt: skip
MAJORS_RELATED = ("统计学", "法学", "计算机科学与技术")


def _rules(*paths: tuple[str, int], level: str) -> dict[str, Any]:
    return {"paths": [{"education": education, "min_work_years": years} for education, years in paths],
            "majors_same": list(MAJORS_SAME), "majors_related": list(MAJORS_RELATED),
            "required_subjects": [basic_subject_code(level)]}


# Per level of the exam: 初级 asks for 中专 (or more); 中级 for years of related work that shrink
# as the education rises. Everyone sits 经济基础知识.
ELIGIBILITY: dict[str, dict[str, Any]] = {
    "CJ": _rules(("secondary", 0), level="CJ"),
    "ZJ": _rules(("college", 6), ("bachelor", 4), ("master", 1), ("doctorate", 0), level="ZJ"),
}
assert set(ELIGIBILITY) == {code for code, _ in LEVELS}

_AUTO = ReviewRule("auto", "online", True, "until_payment")
REVIEW_PROVINCE = "46"  # 海南省 reviews online: the load tests' review scenario registers there
ONSITE_REVIEW_PROVINCE = "54"  # 西藏自治区 reviews at its review points
# Provinces not listed review automatically under the commitment (``_AUTO``).
REVIEW_RULES: dict[str, ReviewRule] = {
    REVIEW_PROVINCE: ReviewRule("online", "online", False, "until_payment"),
    "63": ReviewRule("online", "online", False, "until_payment"),  # 青海省
    ONSITE_REVIEW_PROVINCE: ReviewRule("onsite", "onsite", False, "until_review"),
    "64": ReviewRule("auto", "onsite", True, "until_payment"),  # 宁夏: a person looks on site
}


def review_rule(province: str) -> ReviewRule:
    """How ``province`` reviews the open exam."""
    return REVIEW_RULES.get(province, _AUTO)


class DocumentText(NamedTuple):
    """One of the exam's texts."""

    title: str
    text: str


DOCUMENTS: dict[str, DocumentText] = {
    "notice": DocumentText("2026年度全国经济专业技术资格考试（演示）报名公告", """\
一、报考条件
（一）初级：具备中专及以上学历。
（二）中级：具备大学专科学历，从事相关专业工作满6年；具备大学本科学历或学士学位，从事相关专业工作满4年；\
具备硕士学位，从事相关专业工作满1年；具备博士学位。
经济学、管理学类专业为本专业，统计学、法学、计算机科学与技术为相近专业；其他专业的报考人员须确认提示后由人工审核。
二、报名
报名时间以本系统公布的时间为准，逾期不予补报。每名报考人员每次考试只能报名一次。
三、资格审核
实行告知承诺制的地区，报考人员签署告知承诺书、确认报名信息后由系统自动审核；海南省、青海省实行网上审核，\
西藏自治区实行现场审核，报考人员须按要求提交证明材料。
四、缴费
资格审核通过后须在规定时间内选择考点并网上缴费，逾期未缴费视为放弃报名。
五、诚信
报考人员须如实填报信息。提供虚假信息或材料的，按照《专业技术人员资格考试违纪违规行为处理规定》处理，\
并记入专业技术人员资格考试诚信档案库。"""),
    "commitment": DocumentText("专业技术人员资格考试报名证明事项告知承诺书", """\
本人郑重承诺：
一、已认真阅读本次考试的报名公告，了解报考条件和有关要求；
二、所填报的学历、专业、工作年限等信息真实、准确、完整，符合所报级别的报考条件；
三、知晓考试管理机构将对承诺内容进行核查，如有不实，愿承担取消考试资格、考试成绩无效等后果，\
并同意记入专业技术人员资格考试诚信档案库；
四、遵守考试纪律，服从考试工作人员管理。
本承诺书以电子方式签署，与手写签名具有同等效力。"""),
    "instructions": DocumentText("考生须知", """\
一、考生凭准考证和有效身份证件原件参加考试，两证缺一不得入场。
二、考试开始前30分钟入场，开考5分钟后不得入场，考试结束前不得交卷离场。
三、除规定的文具外，不得携带手机、智能手表等电子设备及任何资料进入考场。
四、服从监考人员管理，违纪违规行为按照有关规定处理并记入诚信档案库。"""),
}


# The account's texts (core.agreements), version 1; seeded candidates accepted the agreement when they registered.
ACCOUNT_DOCUMENTS: dict[str, DocumentText] = {
    "agreement": DocumentText("网上报名协议", """\
一、本系统为专业技术人员资格考试网上报名服务平台（演示）。用户注册、报名即表示同意本协议。
二、用户应使用本人真实身份信息注册，一人一个账号；账号、密码由用户妥善保管，因保管不善造成的后果由用户承担。
三、用户填报的身份、学历、学位、工作年限等信息应真实、准确、完整，并对其真实性负责；提供虚假信息的，\
按照有关规定处理并记入专业技术人员资格考试诚信档案库。
四、用户绑定的手机号码用于接收验证码和考试通知，更换手机号码须通过原号码和新号码验证。
五、本平台依法保护用户个人信息，仅用于考试报名、资格审核、成绩查询和证书管理。
六、本协议更新后，用户须阅读并同意新版本后方可继续报名。"""),
    "notice": DocumentText("注册须知", """\
一、注册前请准备好本人有效身份证件、学历（学位）证书和本人常用手机。
二、姓名、证件号码注册后不能修改，请核对无误后提交；请再次输入姓名和证件号码进行确认。
三、手机号码须接收短信验证码完成绑定；验证码5分钟内有效。若收不到验证码，请确认号码无误、\
手机未拦截短信，等待60秒后重新获取；同一号码每小时最多获取5次。
四、请牢记用户名和密码；忘记用户名或密码的，可通过注册时绑定的手机找回。"""),
}


class ReviewPoint(NamedTuple):
    """A review point (审核点): one per city of every province."""

    province: str
    city: str
    name: str
    address: str


def review_points() -> list[ReviewPoint]:
    """Every province's review points, one per exam-site city: the city's personnel examination centre."""
    points = []
    for p, prov in enumerate(PROVINCES):
        for j, city in enumerate(prov.cities):
            place = city if city == prov.name else prov.name + city
            district, road = DISTRICT_WORDS[(p + j) % len(DISTRICT_WORDS)], ROADS[(3 * p + j) % len(ROADS)]
            street = f"{district}{road}{p * 7 + j + 1}号"
            points.append(ReviewPoint(prov.code, city, f"{city}人事考试中心审核点", place + street))
    return points


# -- the integrity archive --------------------------------------------------------------------------

ARCHIVE_STRIDE, ARCHIVE_OFFSET = 250, 123  # candidates 123, 373, 623, … are in the archive
VIOLATIONS = ("由他人冒名代替参加考试", "使用通讯工具作弊", "抄袭他人答案", "携带与考试内容相关的资料")


class ArchiveEntry(NamedTuple):
    """A seeded candidate's integrity record, its period counted from the open exam's registration opening."""

    candidate: int  # the seeded candidate's index
    family: str  # EXAM_FAMILY, or '*' (every exam)
    violation: str
    starts_days_before: int
    ends_days_after: int  # negative: the record ended before registration opened

    @property
    def in_force(self) -> bool:
        """Whether the record is in force while the open exam takes registrations."""
        return self.ends_days_after > 0


def _archive_entry(index: int) -> ArchiveEntry | None:
    if index % ARCHIVE_STRIDE != ARCHIVE_OFFSET:
        return None
    k = index // ARCHIVE_STRIDE
    violation = VIOLATIONS[k % len(VIOLATIONS)]
    if k % 4 == 3:  # served: over a month before registration opened
        return ArchiveEntry(index, EXAM_FAMILY, violation, 3 * 365 + 30 + k % 30, -(30 + k % 30))
    return ArchiveEntry(index, "*" if k % 4 == 2 else EXAM_FAMILY, violation, 200 + k % 100, 3 * 365 - 200)


def archive_entries(candidates: int) -> list[ArchiveEntry]:
    """The integrity records of the first ``candidates`` seeded candidates."""
    return [entry for index in range(ARCHIVE_OFFSET, candidates, ARCHIVE_STRIDE)
            if (entry := _archive_entry(index)) is not None]


def in_archive(index: int) -> bool:
    """Whether seeded candidate ``index`` has an integrity record in force for the demo exams."""
    entry = _archive_entry(index)
    return entry is not None and entry.in_force


# -- what the automatic review says of a seeded candidate --------------------------------------------

_PARSED = {level: EligibilityRules.model_validate(rules) for level, rules in ELIGIBILITY.items()}


def qualifies(index: int, level: str, work_years: int) -> bool:
    """Whether seeded candidate ``index``'s education and ``work_years`` meet ``level``'s paths (major aside)."""
    verdict = review(_PARSED[level], [Education(*sd.education(index))], work_years=work_years,
                     subjects=ELIGIBILITY[level]["required_subjects"], rule=_AUTO, archived=False,
                     acknowledged_major=True)
    return verdict.status != "rejected"


# -- writing it ------------------------------------------------------------------------------------


def _subjects() -> list[str]:
    practice = [practice_subject_code(level, pos) for level, _ in LEVELS for pos in range(len(SPECIALTIES))]
    return [basic_subject_code(level) for level, _ in LEVELS] + practice


async def apply(conn: asyncpg.Connection, exam_ids: list[int], open_exam_id: int, candidates: int) -> None:
    """Write the lifecycle data of the open exam (and the demo exams' family); what is there already is kept."""
    await conn.execute("UPDATE exams SET family = $2 WHERE id = ANY($1) AND family IS NULL", exam_ids, EXAM_FAMILY)
    subjects = _subjects()
    for level, document in ELIGIBILITY.items():
        rules = parse_rules(document, subjects)  # the shape an operator's PUT must have, checked the same way
        await conn.execute(
            """INSERT INTO eligibility_rules (exam_id, level_code, rules, updated_by) VALUES ($1, $2, $3::jsonb, $4)
               ON CONFLICT (exam_id, level_code) DO NOTHING""",
            open_exam_id, level, json.dumps(rules.model_dump(), ensure_ascii=False), SEED_ACTOR)
    await conn.executemany(
        """INSERT INTO exam_review_rules (exam_id, province, review_mode, manual_mode, commitment, withdraw_rule)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (exam_id, province) DO NOTHING""",
        [(open_exam_id, prov.code, rule.review_mode, rule.manual_mode, rule.commitment, rule.withdraw_rule)
         for prov in PROVINCES for rule in (review_rule(prov.code),)])
    await conn.executemany(
        """INSERT INTO review_points (exam_id, province, city, name, address) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (exam_id, province, name) DO NOTHING""",
        [(open_exam_id, *point) for point in review_points()])
    await conn.executemany(
        """INSERT INTO exam_documents (exam_id, kind, version, title, body, sha256, published_by)
           VALUES ($1, $2, 1, $3, $4, $5, $6) ON CONFLICT (exam_id, kind, version) DO NOTHING""",
        [(open_exam_id, kind, doc.title, doc.text, text_hash(doc.title, doc.text), SEED_ACTOR)
         for kind, doc in DOCUMENTS.items()])
    await conn.executemany(
        """INSERT INTO account_documents (kind, version, title, body, sha256, published_by)
           VALUES ($1, 1, $2, $3, $4, $5) ON CONFLICT (kind, version) DO NOTHING""",
        [(kind, doc.title, doc.text, text_hash(doc.title, doc.text), SEED_ACTOR)
         for kind, doc in ACCOUNT_DOCUMENTS.items()])
    # Candidates seeded before the agreement existed accept it as the ones seeded since (the candidates' COPY).
    await conn.execute("""UPDATE candidates SET agreement_version = 1, agreement_accepted_at = created_at
                           WHERE username ~ $1 AND agreement_version IS NULL""", SEEDED_USERNAME_PATTERN)
    opens_at = await conn.fetchval("SELECT registration_opens_at FROM exams WHERE id = $1", open_exam_id)
    opened: date = opens_at.astimezone(SHANGHAI).date()
    await conn.executemany(
        """INSERT INTO integrity_records (id_number, exam_family, violation, starts_on, ends_on, created_by)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id_number, exam_family, starts_on) DO NOTHING""",
        [(sd.resident_id(e.candidate), e.family, e.violation, opened - timedelta(days=e.starts_days_before),
          opened + timedelta(days=e.ends_days_after), SEED_ACTOR) for e in archive_entries(candidates)])

"""Kind ``sites``: exam sites (考点) and review points (审核点) from CSV
``exam_code,province,city,name,address,capacity,rooms,seats_per_room,kind``.

``kind`` is ``site`` (or empty) for an exam site and ``review_point`` for a review point. A site
needs ``capacity`` and ``rooms`` (``seats_per_room`` defaults to 30); a review point has none of the
three. Sites are upserted by (exam, name), review points by (exam, province, name); rows not in the
file are left as they are (nothing is deleted). Checks, every failing row reported:

1. the exam exists; the province is a real province code;
2. a site's capacity fits its rooms (capacity ≤ rooms × seats_per_room);
3. a stored site keeps at least the seats already taken (registrations with that site in any status
   but cancelled and expired, as the seat inventory counts them), and a site with seats taken keeps
   its province and city (the registrations name them);
4. no site or review point twice in the file.

Changed keys: the ids of the exams whose sites or review points changed. The gateways read the
catalogue again every ``EXAMGATE_CATALOGUE_REFRESH_S`` (5 s by default); the worker creates the
seat counts of new sites in Redis on its next inventory check. A changed capacity reaches the seat
counts already in Redis with ``examgate reconcile --exam <id>``.
"""

from __future__ import annotations

from core.db import Conn
from core.imports.base import ROWS_TABLE, Applied, Column, Kind
from core.operators import PROVINCES

__all__ = ["KIND", "apply"]

DEFAULT_SEATS_PER_ROOM = 30
_PROVINCES = "ARRAY[" + ", ".join(f"'{p}'" for p in sorted(PROVINCES)) + "]"
# The statuses in which a registration's site counts as taken (queueing.inventory.SEAT_TAKING_STATUSES).
_FREED = "('cancelled', 'expired')"

COLUMNS = (
    Column("exam_code", "考试代码", max_len=32),
    Column("province", "省份代码", max_len=2, pattern="^[0-9]{2}$", pattern_hint="两位数字"),
    Column("city", "城市", max_len=32),
    Column("name", "名称", max_len=64),
    Column("address", "地址", max_len=200, required=False),
    Column("capacity", "容量", type="int", required=False, minimum=0),
    Column("rooms", "考场数", type="int", required=False, minimum=1),
    Column("seats_per_room", "每考场座位数", type="int", required=False, minimum=1),
    Column("kind", "类型", max_len=12, required=False, pattern="^(site|review_point)$",
           pattern_hint="site 或 review_point"),
)

PREPARE = (
    # The stored sites named stay locked until COMMIT: a registration taking a seat in one (its foreign
    # key shares the site's row) waits, so the seats counted below are the ones the apply keeps.
    f"""SELECT 1 FROM exam_sites s JOIN exams e ON e.id = s.exam_id
         WHERE (e.code, s.name) IN (SELECT exam_code, name FROM {ROWS_TABLE} WHERE COALESCE(kind, 'site') = 'site')
         ORDER BY s.id FOR UPDATE OF s""",
    # Each row with its exam, kind and the stored site of that name with the seats it has taken.
    f"""CREATE TEMP TABLE import_sites ON COMMIT DROP AS
        SELECT r.line, r.exam_code, r.province, r.city, r.name, COALESCE(r.address, '') AS address,
               COALESCE(r.kind, 'site') AS kind, r.capacity, r.rooms,
               COALESCE(r.seats_per_room, {DEFAULT_SEATS_PER_ROOM}) AS seats_per_room,
               r.seats_per_room IS NULL AS default_seats, e.id AS exam_id,
               s.id AS site_id, s.province AS old_province, s.city AS old_city,
               (SELECT count(*) FROM registrations g
                 WHERE g.site_id = s.id AND g.status NOT IN {_FREED}) AS taken
          FROM {ROWS_TABLE} r
          LEFT JOIN exams e ON e.code = r.exam_code
          LEFT JOIN exam_sites s ON s.exam_id = e.id AND s.name = r.name AND COALESCE(r.kind, 'site') = 'site'""",
)

CHECKS = (
    """SELECT line, '考试代码 ' || quote_literal(exam_code) || ' 不存在' FROM import_sites WHERE exam_id IS NULL""",
    f"""SELECT line, '省份代码 ' || province || ' 无效' FROM import_sites
         WHERE NOT province = ANY({_PROVINCES})""",
    """SELECT line, '考点须填写' || array_to_string(ARRAY[
                  CASE WHEN capacity IS NULL THEN '容量（capacity）' END,
                  CASE WHEN rooms IS NULL THEN '考场数（rooms）' END], '、')
         FROM import_sites WHERE kind = 'site' AND (capacity IS NULL OR rooms IS NULL)""",
    """SELECT line, '考点须填写地址（address）' FROM import_sites WHERE kind = 'site' AND address = ''""",
    """SELECT line, '审核点不填写容量、考场数和每考场座位数' FROM import_sites
        WHERE kind = 'review_point' AND (capacity IS NOT NULL OR rooms IS NOT NULL OR NOT default_seats)""",
    """SELECT line, '容量 ' || capacity || ' 超过考场数 × 每考场座位数（' || rooms || ' × ' || seats_per_room
                  || ' = ' || rooms::bigint * seats_per_room || '）'
         FROM import_sites WHERE kind = 'site' AND capacity > rooms::bigint * seats_per_room""",
    """SELECT line, '考点已有 ' || taken || ' 个座位被占用，容量不能减到 ' || capacity FROM import_sites
        WHERE site_id IS NOT NULL AND capacity < taken""",
    """SELECT line, '考点已有 ' || taken || ' 个座位被占用，不能改变所在省份和城市（现为 '
                  || old_province || ' ' || old_city || '）'
         FROM import_sites
        WHERE site_id IS NOT NULL AND taken > 0 AND (province, city) IS DISTINCT FROM (old_province, old_city)""",
    """SELECT line, CASE kind WHEN 'site' THEN '考点' ELSE '审核点' END || ' ' || name || ' 与第 ' || first_line
                  || ' 行重复'
         FROM (SELECT line, kind, name, min(line) OVER (
                   PARTITION BY exam_code, kind, CASE kind WHEN 'site' THEN '' ELSE province END, name) AS first_line
                 FROM import_sites) d
        WHERE line <> first_line""",
)


async def apply(conn: Conn, batch_id: str, actor: str) -> Applied:
    """Upsert the sites and review points; the rows that changed something and their exams' ids."""
    sites = await conn.fetch(
        """INSERT INTO exam_sites AS s (exam_id, province, city, name, address, capacity, rooms, seats_per_room)
           SELECT exam_id, province, city, name, address, capacity, rooms, seats_per_room
             FROM import_sites WHERE kind = 'site'
           ON CONFLICT (exam_id, name) DO UPDATE
              SET province = EXCLUDED.province, city = EXCLUDED.city, address = EXCLUDED.address,
                  capacity = EXCLUDED.capacity, rooms = EXCLUDED.rooms, seats_per_room = EXCLUDED.seats_per_room
            WHERE (s.province, s.city, s.address, s.capacity, s.rooms, s.seats_per_room)
                  IS DISTINCT FROM (EXCLUDED.province, EXCLUDED.city, EXCLUDED.address, EXCLUDED.capacity,
                                    EXCLUDED.rooms, EXCLUDED.seats_per_room)
           RETURNING s.exam_id""")
    points = await conn.fetch(
        """INSERT INTO review_points AS p (exam_id, province, city, name, address)
           SELECT exam_id, province, city, name, address FROM import_sites WHERE kind = 'review_point'
           ON CONFLICT ON CONSTRAINT review_points_name_key DO UPDATE
              SET city = EXCLUDED.city, address = EXCLUDED.address
            WHERE (p.city, p.address) IS DISTINCT FROM (EXCLUDED.city, EXCLUDED.address)
           RETURNING p.exam_id""")
    changed = [row["exam_id"] for row in (*sites, *points)]
    return Applied(len(changed), sorted(set(changed)))


KIND = Kind(
    name="sites",
    columns=COLUMNS,
    prepare=PREPARE,
    checks=CHECKS,
    apply=apply,
    description="考点与审核点：考点按（考试, 名称）更新，审核点按（考试, 省份, 名称）更新",
)

"""The seeded candidates' registration photo: one approved, locked photo each, its bytes stored once.

A registration is confirmed only with an approved photo, so three seeded candidates in four have
one, as after an upload the checks approved; the fourth (``has_photo``, spread by a hash of the
index so every load-generator process's share has some) has not uploaded yet — the candidates the
photo-upload scenario takes, while the scenarios that confirm take the others.

The picture is drawn here (a light background, an oval face, shoulders), put through the same
checks and normalisation as an upload, and kept once in ``photo_blobs``: a million seeded
candidates cost a million small rows, not a million JPEGs.
"""

from __future__ import annotations

import functools
import io

import asyncpg
from PIL import Image, ImageDraw, ImageFilter

from core import photos

__all__ = ["demo_photo", "give_photos", "has_photo"]

# Knuth's multiplicative hash of the index: the same in Python and in the seed's SQL.
_SPREAD, _MODULUS = 2654435761, 2**32


def has_photo(index: int) -> bool:
    """Whether seeded candidate ``index`` (0-based) has uploaded a photo: three in four do."""
    return index * _SPREAD % _MODULUS % 4 != 3


@functools.cache
def demo_photo() -> photos.Processed:
    """The seeded candidates' photo, normalised and approved by the checks."""
    width, height = 413, 578
    image = Image.new("RGB", (width, height), (236, 241, 247))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.3, height * 0.18, width * 0.7, height * 0.62), fill=(214, 178, 150))
    draw.ellipse((width * 0.4, height * 0.33, width * 0.46, height * 0.38), fill=(45, 35, 35))
    draw.ellipse((width * 0.54, height * 0.33, width * 0.6, height * 0.38), fill=(45, 35, 35))
    draw.rectangle((width * 0.2, height * 0.7, width * 0.8, height), fill=(32, 44, 84))
    out = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(1)).save(out, "JPEG", quality=92)
    made = photos.process(out.getvalue())
    if made.status != "approved":
        raise RuntimeError(f"the demo photo does not pass the checks: {made.problems}")
    return made


async def give_photos(conn: asyncpg.Connection, username_pattern: str, *, seeded: bool = True) -> int:
    """Each candidate whose username matches, has no photo and (``seeded``: usernames c0000001…) ``has_photo``,
    gets the demo photo; how many did."""
    photo = demo_photo()
    await conn.execute("INSERT INTO photo_blobs (sha256, jpeg) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                       photo.sha256, photo.jpeg)
    status = await conn.execute(
        """INSERT INTO photos (candidate_id, sha256, bytes, width, height, status, locked)
           SELECT c.id, $2, $3, $4, $5, 'approved', true FROM candidates c
            WHERE c.username ~ $1 AND NOT EXISTS (SELECT 1 FROM photos p WHERE p.candidate_id = c.id AND p.current)
              AND (NOT $6 OR (substring(c.username FROM 2)::bigint - 1) * $7 % $8 % 4 <> 3)""",
        username_pattern, photo.sha256, len(photo.jpeg), photo.width, photo.height, seeded, _SPREAD, _MODULUS)
    return int(status.split()[-1])

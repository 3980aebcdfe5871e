"""A candidate's photo written straight to PostgreSQL, for tests of what prints it (ticket, registration form)."""

from __future__ import annotations

import asyncpg

from core import photos


async def give_photo(pg: asyncpg.Connection, candidate_id: int, photo: photos.Processed) -> int:
    """``photo`` as the candidate's current, approved (locked) photo, as after a granted change; its id."""
    await pg.execute("INSERT INTO photo_blobs (sha256, jpeg) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                     photo.sha256, photo.jpeg)
    await pg.execute("UPDATE photos SET current = false WHERE candidate_id = $1 AND current", candidate_id)
    return int(await pg.fetchval(
        """INSERT INTO photos (candidate_id, sha256, bytes, width, height, status, locked)
           VALUES ($1, $2, $3, $4, $5, 'approved', true) RETURNING id""",
        candidate_id, photo.sha256, len(photo.jpeg), photo.width, photo.height))


async def current_jpeg(pg: asyncpg.Connection, candidate_id: int) -> bytes:
    """The bytes of the candidate's current photo."""
    return bytes(await pg.fetchval("""SELECT b.jpeg FROM photos p JOIN photo_blobs b USING (sha256)
                                       WHERE p.candidate_id = $1 AND p.current""", candidate_id))

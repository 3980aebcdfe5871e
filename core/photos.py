"""Candidates' registration photos: the checks, the normalised JPEG, the bounded pool that makes it, and its store.

A photo is judged and normalised in one pass (``process``): a real JPEG by its content, not a
decompression bomb, decodable to the end, large enough and near the portrait aspect; then cropped
to 295 × 413 (the 2-inch ID photo), its background measured at the top, left and right borders and
its variance checked (a blank image is refused). Accepted photos are re-encoded without metadata at
the highest quality that keeps them within ``MAX_OUTPUT_BYTES`` (about 10 KB). Hard problems refuse
the photo (``PhotoRejected`` names each); soft, borderline ones accept it as ``needs_review`` with
the borderline checks named.

Decoding runs on a bounded thread pool (Pillow releases the GIL while decoding and resizing) like
the password hasher: when ``threads`` jobs run and ``max_queue`` more wait, the next upload gets
``ImagePoolFull`` at once (503 with Retry-After) instead of queueing.

The store keeps one row per version; exactly one is the candidate's current photo (a partial unique
index). The bytes are kept once per content (``photo_blobs``, keyed by SHA-256, as an object store
would key them): the same picture uploaded again, or given to every seeded candidate, costs one
copy. An approved current photo is locked and cannot be replaced (``PhotoLocked``) until an
operator grants a change request (``core.photo_review``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from PIL import Image, ImageOps, ImageStat, UnidentifiedImageError

from core.errors import CoreError

__all__ = [
    "WIDTH", "HEIGHT", "MAX_OUTPUT_BYTES", "MAX_PIXELS", "PROBLEM_MESSAGES",
    "Processed", "PhotoRejected", "PhotoLocked", "ImagePoolFull", "PhotoPool", "process",
    "PhotoRow", "PhotoStore", "PgPhotoStore", "sign_photo_link", "verify_photo_link", "PhotoLinkInvalid",
]  # fmt: skip

WIDTH, HEIGHT = 295, 413  # the 2-inch ID photo
ASPECT = WIDTH / HEIGHT
MAX_OUTPUT_BYTES = 12 * 1024  # the normalised JPEG lands near 10 KB; the quality is lowered until it fits
QUALITIES = (90, 85, 80, 75, 70, 65, 60, 55, 50, 45, 40, 35, 30)
MAX_PIXELS = 40_000_000  # more than any camera photo needs; beyond, refused before decoding (a bomb)
ORIENTATION = 0x0112  # the EXIF tag of a camera's orientation
BORDER = 12  # pixels of the top, left and right borders that measure the background
SIDE_BORDER_DOWN = 0.55  # the left and right borders are measured this far down (above the shoulders)
# Background (grey level 0–255 of the borders): clearly light and even passes; clearly dark or busy fails.
BACKGROUND_LIGHT, BACKGROUND_DARK = 170.0, 130.0
BACKGROUND_EVEN, BACKGROUND_BUSY = 25.0, 45.0
BLANK_STDDEV = 6.0  # the whole picture's grey-level spread below this: nothing is on it
# Aspect ratio (width / height) relative to 295/413: beyond these the crop would cut too much away.
ASPECT_SOFT, ASPECT_HARD = 1.12, 2.0

# Every problem code with the message a candidate reads (hard ones refuse; soft ones ask for review).
PROBLEM_MESSAGES = {
    "not_jpeg": "照片必须是 JPG 格式（不能只改扩展名）",
    "corrupt": "照片文件已损坏或不完整，请重新导出后上传",
    "too_large_image": "照片像素尺寸过大，请缩小后上传",
    "too_small": f"照片尺寸过小，至少需要 {WIDTH}×{HEIGHT} 像素",
    "wrong_aspect": "照片比例不符，请上传竖版证件照（宽高比约 5:7）",
    "colour_mode": "照片颜色模式不受支持，请使用彩色 JPG",
    "background": "照片背景须为浅色纯色背景（白色或浅蓝色）",
    "blank": "照片内容为空白，请上传本人正面免冠照片",
    # Soft checks: the photo is kept, an operator looks at it.
    "aspect": "照片比例与证件照差异较大，已自动裁剪，待人工审核",
    "background_uneven": "照片背景不够均匀，待人工审核",
    "grayscale": "照片为黑白照片，待人工审核",
    "file_size": "照片压缩后仍偏大，待人工审核",
}
HARD = frozenset({"not_jpeg", "corrupt", "too_large_image", "too_small", "wrong_aspect", "colour_mode",
                  "background", "blank"})
_JPEG_MAGIC = b"\xff\xd8\xff"


class PhotoRejected(CoreError):
    """The photo fails hard checks: ``problems`` names each (codes of ``PROBLEM_MESSAGES``)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"photo rejected: {', '.join(problems)}")
        self.problems = problems


class PhotoLocked(CoreError):
    """The candidate's current photo is locked (reviewed for a registration) and cannot be replaced."""

    def __init__(self, candidate_id: int) -> None:
        super().__init__(f"photo of candidate {candidate_id} is locked")
        self.candidate_id = candidate_id


class ImagePoolFull(CoreError):
    """The image pool is saturated; try again after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"image pool is full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Processed:
    """An accepted photo: the normalised JPEG and what was found about it."""

    jpeg: bytes
    sha256: str
    width: int
    height: int
    status: str  # approved | needs_review
    problems: tuple[str, ...] = field(default=())  # the soft checks that were borderline


# -- the checks -----------------------------------------------------------------------------------


def process(data: bytes) -> Processed:
    """Judge and normalise an uploaded photo; raise ``PhotoRejected`` naming every hard problem found."""
    if not data.startswith(_JPEG_MAGIC):
        raise PhotoRejected(["not_jpeg"])
    try:
        image = Image.open(io.BytesIO(data), formats=("JPEG",))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoRejected(["too_large_image"]) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise PhotoRejected(["corrupt"]) from None
    with image:
        if image.format not in ("JPEG", "MPO"):  # MPO: a phone's JPEG with a second picture after the first
            raise PhotoRejected(["not_jpeg"])
        width, height = image.size
        if width < 1 or height < 1 or width * height > MAX_PIXELS:
            raise PhotoRejected(["too_large_image" if width * height > MAX_PIXELS else "corrupt"])
        try:
            turned = image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)  # a quarter turn: upright, w and h swap
        except (OSError, SyntaxError, ValueError):
            turned = False
        upright = (height, width) if turned else (width, height)
        # Decode at the smallest power-of-two scale that still covers the 295 × 413 crop (the JPEG
        # decoder's DCT scaling): a 12 MP camera photo is decoded as 0.75 MP, a quarter of the work.
        reduce = _reduction(*upright)
        if reduce >= 2:
            image.draft("RGB", (math.ceil(width / reduce), math.ceil(height / reduce)))
        try:
            image.load()  # the whole file decoded now: a truncated one fails here
            ImageOps.exif_transpose(image, in_place=True)  # a camera's orientation applied before its EXIF is dropped
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise PhotoRejected(["too_large_image"]) from None
        except (OSError, SyntaxError, ValueError, MemoryError):
            raise PhotoRejected(["corrupt"]) from None
        return _judge(image, upright)


def _reduction(width: int, height: int) -> float:
    """How many times smaller than ``width`` × ``height`` the picture may be decoded and still cover the crop."""
    crop_w, crop_h = (height * ASPECT, height) if width / height > ASPECT else (width, width / ASPECT)
    return min(crop_w / WIDTH, crop_h / HEIGHT)


def _judge(image: Image.Image, size: tuple[int, int]) -> Processed:
    """Judge the decoded, upright ``image`` whose size as uploaded (upright) is ``size``."""
    hard: list[str] = []
    soft: list[str] = []
    if image.mode == "L":
        soft.append("grayscale")
    elif image.mode not in ("RGB", "CMYK", "YCbCr"):
        raise PhotoRejected(["colour_mode"])
    width, height = size
    if width < WIDTH or height < HEIGHT:
        hard.append("too_small")
    off = (width / height) / ASPECT
    off = max(off, 1 / off)
    if off > ASPECT_HARD:
        hard.append("wrong_aspect")
    elif off > ASPECT_SOFT:
        soft.append("aspect")
    if "wrong_aspect" in hard:  # its crop would not be the photo: the picture cannot be judged
        raise PhotoRejected(hard)
    # A picture too small is judged too (scaled up): every problem is named at once.
    rgb = _normalised(image if image.mode == "RGB" else image.convert("RGB"))
    grey = rgb.convert("L")
    side = round(HEIGHT * SIDE_BORDER_DOWN)  # the shoulders reach the sides further down
    border = [grey.crop(box) for box in ((0, 0, WIDTH, BORDER), (0, 0, BORDER, side), (WIDTH - BORDER, 0, WIDTH, side))]
    means = [ImageStat.Stat(part).mean[0] for part in border]
    spreads = [ImageStat.Stat(part).stddev[0] for part in border]
    darkest, busiest = min(means), max(spreads)
    whole = ImageStat.Stat(grey).stddev[0]
    if whole < BLANK_STDDEV:
        hard.append("blank")
    if darkest < BACKGROUND_DARK or busiest > BACKGROUND_BUSY:
        hard.append("background")
    elif darkest < BACKGROUND_LIGHT or busiest > BACKGROUND_EVEN:
        soft.append("background_uneven")
    if hard:
        raise PhotoRejected(hard)
    jpeg = _encode(rgb)
    if len(jpeg) > MAX_OUTPUT_BYTES:
        soft.append("file_size")
    return Processed(jpeg, hashlib.sha256(jpeg).hexdigest(), WIDTH, HEIGHT,
                     "needs_review" if soft else "approved", tuple(soft))


def _normalised(image: Image.Image) -> Image.Image:
    """``image`` cropped (centred) to the portrait aspect, then resized to exactly 295 × 413."""
    width, height = image.size
    if width / height > ASPECT:  # too wide: cut the sides
        crop_w = round(height * ASPECT)
        left = (width - crop_w) // 2
        box = (left, 0, left + crop_w, height)
    else:  # too tall: cut the top and bottom
        crop_h = round(width / ASPECT)
        top = (height - crop_h) // 2
        box = (0, top, width, top + crop_h)
    return image.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS, box=box)  # no full-size copy for the crop


def _encode(image: Image.Image) -> bytes:
    """``image`` as a metadata-free baseline JPEG, at the highest quality within ``MAX_OUTPUT_BYTES``."""
    encoded = b""
    for quality in QUALITIES:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, optimize=True)  # no exif, icc or comment is passed on
        encoded = out.getvalue()
        if len(encoded) <= MAX_OUTPUT_BYTES:
            break
    return encoded


# -- the pool -------------------------------------------------------------------------------------


PHOTO_THREAD_NICENESS = 10


def _yield_to_the_loop() -> None:
    """Lower this photo thread's CPU priority (Linux: per thread): when the cores are busy with photos,
    the event loop's thread still runs on time, and a photo just takes longer."""
    with contextlib.suppress(AttributeError, OSError):  # no per-thread priority here: run as it is
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PHOTO_THREAD_NICENESS)


class PhotoPool:
    """``process`` on a bounded pool of threads; refuses at once (``ImagePoolFull``) when full."""

    def __init__(self, threads: int = 2, max_queue: int = 4) -> None:
        if threads < 1 or max_queue < 0:
            raise ValueError("threads must be at least 1 and max_queue not negative")
        self.threads, self.capacity = threads, threads + max_queue
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="photo",
                                            initializer=_yield_to_the_loop)
        self._lock = threading.Lock()
        self._in_flight = 0
        self.rejected = 0

    @property
    def in_flight(self) -> int:
        """Jobs running or waiting."""
        return self._in_flight

    def check_capacity(self) -> None:
        """Raise ``ImagePoolFull`` now if a job submitted now would be refused: callers refuse before reading."""
        with self._lock:
            if self._in_flight >= self.capacity:
                self.rejected += 1
                raise ImagePoolFull(self._retry_after())

    async def process(self, data: bytes) -> Processed:
        """The judged, normalised photo (``PhotoRejected`` for a refused one)."""
        with self._lock:
            if self._in_flight >= self.capacity:
                self.rejected += 1
                raise ImagePoolFull(self._retry_after())
            self._in_flight += 1
        try:
            job = self._executor.submit(process, data)
        except BaseException:
            self._release()
            raise
        job.add_done_callback(lambda _: self._release())  # counted until the job ends on its thread
        return await asyncio.wrap_future(job)

    def close(self) -> None:
        """Drop waiting jobs and wait for the running ones."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _retry_after(self) -> int:
        return max(1, math.ceil(self._in_flight / self.threads))

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1


# -- the store ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoRow:
    """One stored version of a candidate's photo (``jpeg`` empty when only its facts were read)."""

    photo_id: int
    candidate_id: int
    sha256: str
    width: int
    height: int
    status: str
    problems: tuple[str, ...]
    uploaded_at: datetime
    current: bool
    locked: bool
    size: int
    jpeg: bytes = b""


class PhotoStore(Protocol):
    """Where photos are kept: one row per version, one current per candidate."""

    async def save(self, candidate_id: int, photo: Processed, *, sampled: bool = False) -> PhotoRow:
        """Store ``photo`` as the candidate's current one (the previous stays, not current).

        An approved photo is stored locked (``sampled``: and marked for a human look). ``PhotoLocked``
        when the current photo is locked and no change request is granted; a granted one is used up.
        """
        ...

    async def current(self, candidate_id: int) -> PhotoRow | None:
        """The candidate's current photo's facts (no bytes), or None."""
        ...

    async def fetch(self, photo_id: int) -> PhotoRow | None:
        """A photo with its bytes, or None."""
        ...


_FACTS = """id, candidate_id, sha256, width, height, status, problems, uploaded_at, current, locked,
            bytes AS size"""
_EVENT = """INSERT INTO photo_events (candidate_id, photo_id, request_id, action, actor, reason)
            VALUES ($1, $2, $3, $4, $5, $6)"""


def candidate_actor(candidate_id: int) -> str:
    """How the photo audit names a candidate."""
    return f"candidate:{candidate_id}"


def _row(r: Any, with_bytes: bool = False) -> PhotoRow:
    return PhotoRow(r["id"], r["candidate_id"], r["sha256"], r["width"], r["height"], r["status"],
                    tuple(r["problems"]), r["uploaded_at"], r["current"], r["locked"], r["size"],
                    r["jpeg"] if with_bytes else b"")


class PgPhotoStore:
    """``PhotoStore`` in PostgreSQL (table ``photos``, migration 0008)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def save(self, candidate_id: int, photo: Processed, *, sampled: bool = False) -> PhotoRow:
        async with self.pool.acquire() as conn, conn.transaction():
            # One upload per candidate at a time: two first uploads would both find no current row.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('photo:' || $1::bigint::text, 0))",
                               candidate_id)
            locked = await conn.fetchval("SELECT locked FROM photos WHERE candidate_id = $1 AND current",
                                         candidate_id)
            grant = None
            if locked:  # only a granted change request lets one new photo in
                grant = await conn.fetchval("""SELECT id FROM photo_change_requests
                                               WHERE candidate_id = $1 AND status = 'granted'""", candidate_id)
                if grant is None:
                    raise PhotoLocked(candidate_id)
            await conn.execute("UPDATE photos SET current = false WHERE candidate_id = $1 AND current", candidate_id)
            approved = photo.status == "approved"
            await conn.execute("INSERT INTO photo_blobs (sha256, jpeg) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                               photo.sha256, photo.jpeg)
            record = await conn.fetchrow(
                f"""INSERT INTO photos (candidate_id, sha256, bytes, width, height, status, problems, locked, sampled)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_FACTS}""",
                candidate_id, photo.sha256, len(photo.jpeg), photo.width, photo.height, photo.status,
                list(photo.problems), approved, sampled and approved)
            assert record is not None  # INSERT … RETURNING gives its row
            await conn.execute(_EVENT, candidate_id, record["id"], grant, "upload", candidate_actor(candidate_id),
                               ",".join(photo.problems) or None)
            if grant is not None:
                await conn.execute("""UPDATE photo_change_requests SET status = 'used', used_at = now(),
                                      new_photo_id = $2 WHERE id = $1""", grant, record["id"])
                await conn.execute(_EVENT, candidate_id, record["id"], grant, "change_used",
                                   candidate_actor(candidate_id), None)
        return _row(record)

    async def current(self, candidate_id: int) -> PhotoRow | None:
        record = await self.pool.fetchrow(f"SELECT {_FACTS} FROM photos WHERE candidate_id = $1 AND current",
                                          candidate_id)
        return None if record is None else _row(record)

    async def fetch(self, photo_id: int) -> PhotoRow | None:
        record = await self.pool.fetchrow(f"""SELECT {_FACTS}, b.jpeg FROM photos p JOIN photo_blobs b USING (sha256)
                                               WHERE p.id = $1""", photo_id)
        return None if record is None else _row(record, with_bytes=True)


# -- signed links ---------------------------------------------------------------------------------

PHOTO_PATH = "/api/v1/photos/{photo_id}.jpg"
_SIG = re.compile(r"[A-Za-z0-9_-]{43}").fullmatch
_EXP = re.compile(r"[0-9]{1,12}").fullmatch


class PhotoLinkInvalid(CoreError):
    """A photo link that is tampered, malformed, another photo's or expired."""


def _signature(key: bytes, photo_id: int, exp: str) -> str:
    mac = hmac.new(key, f"photo.{photo_id}.{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def sign_photo_link(key: bytes, photo_id: int, *, ttl_s: int, now: float | None = None) -> tuple[str, int]:
    """Path and query of a link to photo ``photo_id`` valid for ``ttl_s`` seconds, and its expiry (unix seconds)."""
    if not key or ttl_s < 1:
        raise ValueError("a key and a positive ttl_s are needed")
    exp = math.ceil(time.time() if now is None else now) + ttl_s
    path = PHOTO_PATH.format(photo_id=photo_id)
    return f"{path}?exp={exp}&sig={_signature(key, photo_id, str(exp))}", exp


def verify_photo_link(key: bytes, photo_id: int, exp: str, sig: str, *, now: float | None = None) -> int:
    """The expiry (unix seconds) of a genuine, unexpired link; ``PhotoLinkInvalid`` otherwise."""
    if _EXP(exp) is None or _SIG(sig) is None:
        raise PhotoLinkInvalid("malformed photo link")
    if not hmac.compare_digest(_signature(key, photo_id, exp), sig):
        raise PhotoLinkInvalid("bad signature")
    if (time.time() if now is None else now) >= int(exp):
        raise PhotoLinkInvalid("expired")
    return int(exp)

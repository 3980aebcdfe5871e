"""The photo checks and normalisation (core.photos) on image files made here with Pillow, and the photo pool."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading

import pytest
from PIL import Image, ImageStat

from core import photos
from tests import photo_images

pytestmark = pytest.mark.unit


def rejected(data: bytes) -> list[str]:
    with pytest.raises(photos.PhotoRejected) as caught:
        photos.process(data)
    return caught.value.problems


def test_good_photo_is_approved_normalised_and_without_exif() -> None:
    original = photo_images.portrait(exif=True)
    assert Image.open(io.BytesIO(original)).getexif()  # the upload carries a camera's EXIF
    done = photos.process(original)
    assert done.status == "approved" and done.problems == ()
    image = Image.open(io.BytesIO(done.jpeg))
    assert image.format == "JPEG" and image.size == (photos.WIDTH, photos.HEIGHT) == (295, 413)
    assert len(done.jpeg) <= photos.MAX_OUTPUT_BYTES
    assert not image.getexif() and "exif" not in image.info and "icc_profile" not in image.info
    assert done.sha256 == hashlib.sha256(done.jpeg).hexdigest()


def test_camera_photo_is_cropped_and_resized() -> None:
    done = photos.process(photo_images.portrait(4000, 3000))
    assert Image.open(io.BytesIO(done.jpeg)).size == (295, 413)
    assert len(done.jpeg) <= photos.MAX_OUTPUT_BYTES
    assert done.status == "needs_review" and done.problems == ("aspect",)  # half its width was cut away


def test_large_portrait_of_the_right_aspect_is_approved() -> None:
    done = photos.process(photo_images.portrait(1200, 1680))
    assert done.status == "approved" and Image.open(io.BytesIO(done.jpeg)).size == (295, 413)


def test_renamed_png_is_not_jpeg() -> None:
    assert rejected(photo_images.portrait(fmt="PNG")) == ["not_jpeg"]
    assert rejected(b"") == ["not_jpeg"]
    assert rejected(b"GIF89a not a jpeg") == ["not_jpeg"]


def test_dark_background() -> None:
    assert rejected(photo_images.portrait(background=(40, 40, 50))) == ["background"]


def test_grey_background_goes_to_review() -> None:
    done = photos.process(photo_images.portrait(background=(160, 160, 160)))
    assert done.status == "needs_review" and done.problems == ("background_uneven",)


def test_blank_image() -> None:
    assert rejected(photo_images.blank()) == ["blank"]


def test_truncated_jpeg_is_corrupt() -> None:
    data = photo_images.portrait()
    assert rejected(data[: len(data) // 2]) == ["corrupt"]
    assert rejected(data[:40]) == ["corrupt"]


@pytest.mark.parametrize(("width", "height"), [(60_000, 60_000), (9000, 6000), (10_000, 10_000), (65_000, 20_000)])
def test_decompression_bomb_is_refused_cleanly(width: int, height: int) -> None:
    data = photo_images.bomb(width, height)
    assert len(data) < 10_000
    assert rejected(data) == ["too_large_image"]


def test_too_small_and_wrong_aspect() -> None:
    assert rejected(photo_images.portrait(200, 280)) == ["too_small"]
    assert rejected(photo_images.portrait(2000, 500)) == ["wrong_aspect"]


def test_every_hard_problem_is_named_at_once() -> None:
    assert rejected(photo_images.portrait(200, 280, background=(40, 40, 50))) == ["too_small", "background"]
    assert rejected(photo_images.blank(100, 100)) == ["too_small", "blank"]


def test_every_problem_has_a_chinese_message() -> None:
    assert photos.HARD <= set(photos.PROBLEM_MESSAGES)
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in text) for text in photos.PROBLEM_MESSAGES.values())


def test_links_are_signed_and_expire() -> None:
    key = b"k" * 32
    url, exp = photos.sign_photo_link(key, 7, ttl_s=60, now=1000)
    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    assert url.startswith("/api/v1/photos/7.jpg?") and exp == 1060
    assert photos.verify_photo_link(key, 7, query["exp"], query["sig"], now=1001) == 1060
    for photo_id, exp_s, sig, now in [(8, query["exp"], query["sig"], 1001), (7, "1061", query["sig"], 1001),
                                      (7, query["exp"], query["sig"][:-1] + "A", 1001),
                                      (7, query["exp"], query["sig"], 1060), (7, "x", query["sig"], 1001)]:
        with pytest.raises(photos.PhotoLinkInvalid):
            photos.verify_photo_link(key, photo_id, exp_s, sig, now=now)


async def test_pool_refuses_at_once_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = photos.process

    def slow(data: bytes) -> photos.Processed:
        release.wait(10)
        return real(data)

    monkeypatch.setattr(photos, "process", slow)
    pool = photos.PhotoPool(threads=1, max_queue=1)
    try:
        data = photo_images.portrait()
        first = asyncio.ensure_future(pool.process(data))
        second = asyncio.ensure_future(pool.process(data))
        await asyncio.sleep(0.05)
        with pytest.raises(photos.ImagePoolFull) as caught:
            await pool.process(data)
        assert caught.value.retry_after_s >= 1 and pool.rejected == 1
        with pytest.raises(photos.ImagePoolFull):
            pool.check_capacity()
        release.set()
        assert (await first).status == (await second).status == "approved"
        assert pool.in_flight == 0
        pool.check_capacity()
    finally:
        release.set()
        pool.close()


def test_a_phone_photo_stored_sideways_is_judged_upright_and_decoded_small() -> None:
    # A phone keeps the sensor's landscape pixels and says "turn a quarter" in EXIF (orientation 6).
    upright = Image.open(io.BytesIO(photo_images.portrait(1200, 1680)))
    sideways = upright.rotate(90, expand=True)  # counter-clockwise: orientation 6 turns it back
    tags = Image.Exif()
    tags[0x0112] = 6
    out = io.BytesIO()
    sideways.save(out, "JPEG", exif=tags.tobytes(), quality=92)
    done = photos.process(out.getvalue())
    assert done.status == "approved" and done.problems == ()  # judged as the portrait it is, not as too wide
    image = Image.open(io.BytesIO(done.jpeg))
    assert image.size == (295, 413) and not image.getexif()
    top = image.crop((0, 0, 295, 12)).convert("L")
    assert ImageStat.Stat(top).extrema[0][0] > 200  # the light background is at the top: the picture was turned upright


def test_a_large_photo_is_decoded_at_a_reduced_scale_and_still_judged_by_its_size() -> None:
    assert photos._reduction(4000, 5600) >= 8  # a 22 MP portrait can be decoded an eighth of the size
    assert photos._reduction(295, 413) == 1
    # Large enough either way: the size checks read the uploaded size, not the decoded one.
    done = photos.process(photo_images.portrait(2950, 4130))
    assert done.status == "approved" and Image.open(io.BytesIO(done.jpeg)).size == (295, 413)
    assert rejected(photo_images.portrait(200, 280)) == ["too_small"]

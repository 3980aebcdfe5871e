"""Registration photos for load users and benchmarks: portrait-like camera JPEGs drawn with Pillow, one per seed.

A candidate on the opening day uploads what a phone or a photo studio gave them: a JPEG of
1–2 megapixels, upright, near the ID photo's 5:7, a light even background (white, light blue or
light grey, lit a little unevenly), a face, hair and shoulders, and sensor noise, so it weighs
what a camera's file weighs (a few hundred KB) rather than a flat drawing's few KB. Each seed
draws a different picture (size, colours, face, quality), so no two users send the same bytes;
the same seed always draws the same one. ``grayscale=True`` draws it in black and white, which the
checks accept for review (``needs_review``) rather than approve.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageChops, ImageDraw, ImageFilter

__all__ = ["MAX_UPLOAD_BYTES", "portrait_jpeg"]

MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # the upload route's limit (API.md: 2 MiB)
MIN_WIDTH, MAX_WIDTH = 846, 1196  # × 7/5: 1.0 to 2.0 megapixels
BACKGROUNDS = ((246, 246, 244), (236, 240, 245), (205, 225, 245), (190, 215, 240), (228, 230, 232))
SKINS = ((224, 188, 160), (210, 170, 140), (196, 156, 124), (232, 200, 176))
HAIR = ((28, 24, 22), (45, 35, 30), (60, 48, 40), (20, 20, 26))
CLOTHES = ((30, 40, 80), (40, 40, 44), (220, 222, 226), (90, 30, 40), (36, 70, 60))
DRAW_SCALE = 4  # drawn at a quarter of the size, then scaled up: the soft edges of a lens, cheaply
GRAIN = 9  # a phone sensor's grain, ± levels: keeps the file camera-sized, the background still even


def _jitter(rng: random.Random, colour: tuple[int, int, int], by: int) -> tuple[int, int, int]:
    r, g, b = (max(0, min(255, c + rng.randint(-by, by))) for c in colour)
    return r, g, b


def portrait_jpeg(seed: int, *, grayscale: bool = False) -> bytes:
    """A portrait-like camera JPEG of 1–2 MP drawn from ``seed`` (black and white when ``grayscale``).

    Drawn at a quarter of its size, softened and scaled up (a lens, not a vector drawing), then
    given grain at full size: about 40 ms of CPU, most of it in Pillow's C code (the GIL released).
    """
    rng = random.Random(seed)
    width = rng.randrange(MIN_WIDTH, MAX_WIDTH + 1, 2)
    height = round(width * 7 / 5 * rng.uniform(0.97, 1.03))  # a camera's crop, near the ID photo's aspect
    w, h = width // DRAW_SCALE, height // DRAW_SCALE
    background = _jitter(rng, rng.choice(BACKGROUNDS), 6)
    # A studio light from above: the background a few levels lighter at the top than at the bottom.
    shade = Image.linear_gradient("L").resize((w, h)).point(lambda v: v // 24)
    image = Image.merge("RGB", [shade.point(lambda v, c=c: max(0, c - v)) for c in background])
    draw = ImageDraw.Draw(image)
    cx = w * rng.uniform(0.47, 0.53)
    face_w, face_h = w * rng.uniform(0.36, 0.42), h * rng.uniform(0.35, 0.39)
    top = h * rng.uniform(0.13, 0.17)
    skin, hair, clothes = (_jitter(rng, rng.choice(choices), 8) for choices in (SKINS, HAIR, CLOTHES))
    # Shoulders and clothes from about 65 % down (the side borders above 55 % stay background), then the neck.
    shoulders = h * rng.uniform(0.63, 0.67)
    draw.ellipse((w * 0.04, shoulders, w * 0.96, h * 1.5), fill=clothes)
    draw.rectangle((cx - face_w * 0.22, top + face_h * 0.8, cx + face_w * 0.22, shoulders + h * 0.03), fill=skin)
    draw.ellipse((cx - face_w * 0.56, top - face_h * 0.12, cx + face_w * 0.56, top + face_h * 0.62), fill=hair)
    draw.ellipse((cx - face_w / 2, top, cx + face_w / 2, top + face_h), fill=skin)
    eye_y, eye_dx, eye_r = top + face_h * 0.42, face_w * 0.2, face_w * 0.055
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse((ex - eye_r * 1.6, eye_y - eye_r, ex + eye_r * 1.6, eye_y + eye_r), fill=(245, 245, 240))
        draw.ellipse((ex - eye_r * 0.8, eye_y - eye_r * 0.8, ex + eye_r * 0.8, eye_y + eye_r * 0.8), fill=(35, 28, 25))
        draw.line((ex - eye_r * 2, eye_y - eye_r * 2.4, ex + eye_r * 2, eye_y - eye_r * 2.6), fill=hair,
                  width=max(1, round(eye_r * 0.6)))
    mouth_y = top + face_h * 0.76
    draw.chord((cx - face_w * 0.15, mouth_y - face_h * 0.05, cx + face_w * 0.15, mouth_y + face_h * 0.05), 0, 180,
               fill=(160, 80, 80))
    draw.line((cx, top + face_h * 0.48, cx - face_w * 0.03, top + face_h * 0.62), fill=_jitter(rng, skin, 30),
              width=max(1, round(face_w * 0.02)))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.8)))
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    # Sensor grain, the same for the same seed: uniform, ±GRAIN levels around zero.
    grain = Image.frombytes("L", (width, height), rng.randbytes(width * height))
    grain = grain.point(lambda v: 128 + (v - 128) * GRAIN // 128)
    if grayscale:
        image = ImageChops.add(image.convert("L"), grain, scale=1.0, offset=-128)
    else:
        image = ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), scale=1.0, offset=-128)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=rng.randint(86, 93))
    data = out.getvalue()
    if len(data) > MAX_UPLOAD_BYTES:  # not reached with these sizes and qualities; a guard for later changes
        raise ValueError(f"photo of seed {seed} is {len(data):,} bytes, above the {MAX_UPLOAD_BYTES:,} limit")
    return data

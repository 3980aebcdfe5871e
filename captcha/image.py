"""Image captchas: five random digits drawn with noise and distortion into a small PNG.

Glyphs are rendered once per process (Pillow's built-in Aileron face, so no font file
is needed on the host) and then, per image, rotated, scaled and offset one by one,
crossed by curves and dots in the glyphs' own colours (so colour filtering does not
strip the noise), and warped by a sine mesh. The image is drawn in RGB and saved as a
16-colour palette PNG (fast octree quantizer, zlib level 6: measured ~2-3 ms and ~2.0 KB an
image on one core, against ~5 ms and ~2.6 KB with median cut and level 9).
"""

from __future__ import annotations

import io
import math
import random
import secrets
from functools import lru_cache
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont

__all__ = ["DIGITS", "HEIGHT_PX", "WIDTH_PX", "Drawn", "draw", "draw_batch", "random_answer", "render"]

WIDTH_PX = 160
HEIGHT_PX = 60
DIGITS = 5

_FONT_SIZE_PX = 56
_PALETTE_COLOURS = 16
_INK = ((20, 40, 120), (120, 20, 20), (20, 90, 30), (80, 30, 110), (30, 30, 30))


class Drawn(NamedTuple):
    """One drawn captcha: the digits it shows and the PNG bytes."""

    answer: str
    png: bytes


def random_answer(digits: int = DIGITS) -> str:
    """``digits`` decimal digits from the OS's CSPRNG (leading zeros allowed)."""
    return "".join(secrets.choice("0123456789") for _ in range(digits))


@lru_cache(maxsize=1)
def _glyphs() -> dict[str, Image.Image]:
    """A tightly cropped ``L`` mask per digit, rendered once per process."""
    font = ImageFont.load_default(size=_FONT_SIZE_PX)
    scale = 1
    if not isinstance(font, ImageFont.FreeTypeFont):
        # Pillow without FreeType only has its ~11 px bitmap font: render small, scale up.
        font = ImageFont.load_default()
        scale = 4
    masks: dict[str, Image.Image] = {}
    for digit in "0123456789":
        # Pillow types the box as floats for any font; both kinds return whole pixels.
        left, top, right, bottom = map(int, font.getbbox(digit))
        mask = Image.new("L", (right - left + 4, bottom - top + 4), 0)
        ImageDraw.Draw(mask).text((2 - left, 2 - top), digit, fill=255, font=font)
        if scale != 1:
            mask = mask.resize((mask.width * scale, mask.height * scale), Image.Resampling.BILINEAR)
        masks[digit] = mask
    return masks


def _background(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randint(225, 250), rng.randint(225, 250), rng.randint(225, 250))


def _wave_mesh(rng: random.Random, width_px: int, height_px: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """A MESH transform that shifts vertical strips up and down along a random sine."""
    amplitude_px = rng.uniform(2.0, 4.0)
    period_px = rng.uniform(60.0, 110.0)
    phase = rng.uniform(0, 2 * math.pi)
    strip_px = 8
    mesh: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for x0 in range(0, width_px, strip_px):
        x1 = min(x0 + strip_px, width_px)
        dy0 = amplitude_px * math.sin(2 * math.pi * x0 / period_px + phase)
        dy1 = amplitude_px * math.sin(2 * math.pi * x1 / period_px + phase)
        # Quad corners in the source: upper-left, lower-left, lower-right, upper-right.
        quad = (x0, dy0, x0, height_px + dy0, x1, height_px + dy1, x1, dy1)
        mesh.append(((x0, 0, x1, height_px), tuple(round(v) for v in quad)))
    return mesh


def render(answer: str, *, width_px: int = WIDTH_PX, height_px: int = HEIGHT_PX, seed: int | None = None) -> bytes:
    """Draw ``answer`` (digits) as a distorted, noisy PNG; ``seed`` fixes the noise (tests)."""
    rng = random.Random(secrets.randbits(64) if seed is None else seed)
    glyphs = _glyphs()
    background = _background(rng)
    image = Image.new("RGB", (width_px, height_px), background)
    ink = rng.choice(_INK)

    cell_px = (width_px - 16) / len(answer)
    for index, digit in enumerate(answer):
        mask = glyphs[digit]
        target_h = rng.uniform(0.58, 0.72) * height_px
        factor = target_h / mask.height
        glyph = mask.resize((max(1, round(mask.width * factor)), max(1, round(target_h))), Image.Resampling.BILINEAR)
        glyph = glyph.rotate(rng.uniform(-25, 25), resample=Image.Resampling.BILINEAR, expand=True)
        x = round(8 + index * cell_px + (cell_px - glyph.width) / 2 + rng.uniform(-4, 4))
        y = round((height_px - glyph.height) / 2 + rng.uniform(-6, 6))
        shade = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in ink)
        image.paste(shade, (x, y), glyph)

    pen = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 3)):
        # A wavy line across the digits, as thick as a glyph stroke in places.
        points = []
        y0 = rng.uniform(0.25, 0.75) * height_px
        amplitude_px = rng.uniform(4, 12)
        period_px = rng.uniform(40, 120)
        phase = rng.uniform(0, 2 * math.pi)
        for x in range(0, width_px + 1, 8):
            points.append((x, y0 + amplitude_px * math.sin(2 * math.pi * x / period_px + phase)))
        pen.line(points, fill=ink, width=rng.randint(1, 2))
    for _ in range(140):
        x, y = rng.randrange(width_px), rng.randrange(height_px)
        colour = ink if rng.random() < 0.5 else (rng.randint(90, 200), rng.randint(90, 200), rng.randint(90, 200))
        pen.point((x, y), fill=colour)

    image = image.transform(image.size, Image.Transform.MESH, _wave_mesh(rng, width_px, height_px),
                            resample=Image.Resampling.BILINEAR, fillcolor=background)
    palette = image.quantize(colors=_PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    palette.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def draw(*, digits: int = DIGITS, width_px: int = WIDTH_PX, height_px: int = HEIGHT_PX) -> Drawn:
    """A fresh captcha: random digits and their image."""
    answer = random_answer(digits)
    return Drawn(answer, render(answer, width_px=width_px, height_px=height_px))


def draw_batch(count: int) -> list[Drawn]:
    """``count`` fresh captchas; a top-level function so a process pool can run it."""
    return [draw() for _ in range(count)]

"""The benchmark report's PNG: every ratio figure as a bar beside its target, drawn with Pillow."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

WIDTH = 1100
ROW_PX = 34
LEFT_PX = 470
RIGHT_PX = 60
TOP_PX = 56
COLOURS = {True: (46, 139, 87), False: (200, 60, 50), None: (90, 110, 160)}
_TARGET = re.compile(r">=\s*([\d.]+)")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def ratio_figures(figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The figures that are ratios (``×``): the ones a bar can compare with a target."""
    return [f for f in figures if f["unit"] == "×" and isinstance(f["value"], (int, float))]


def draw(figures: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Write the chart of ``figures``' ratios to ``path``; None when there is no ratio to draw."""
    rows = ratio_figures(figures)
    if not rows:
        return None
    targets = [float(m[1]) for f in rows if f["target"] and (m := _TARGET.search(str(f["target"])))]
    scale_max = max([1.0, *targets, *(min(float(f["value"]), 10.0) for f in rows)]) * 1.1
    height = TOP_PX + ROW_PX * len(rows) + 40
    image = Image.new("RGB", (WIDTH, height), "white")
    pen = ImageDraw.Draw(image)
    text, small = _font(15), _font(12)
    pen.text((12, 12), title, fill="black", font=_font(18))
    span = WIDTH - LEFT_PX - RIGHT_PX

    def x(value: float) -> float:
        return LEFT_PX + span * min(value, scale_max) / scale_max

    step = 0.25 if scale_max <= 1.5 else 0.5 if scale_max <= 4 else 1.0
    for tick in [t * step for t in range(0, int(scale_max / step) + 1)]:
        pen.line([(x(tick), TOP_PX - 6), (x(tick), height - 34)], fill=(225, 225, 225))
        pen.text((x(tick) - 8, height - 30), f"{tick:g}x", fill="gray", font=small)
    for index, figure in enumerate(rows):
        top = TOP_PX + index * ROW_PX
        value = float(figure["value"])
        pen.text((12, top + 6), f"{figure['benchmark']}: {figure['metric']}"[:58], fill="black", font=text)
        pen.rectangle([LEFT_PX, top + 5, x(value), top + ROW_PX - 7], fill=COLOURS[figure["passed"]])
        pen.text((x(value) + 6, top + 8), f"{value:g}x", fill="black", font=small)
        found = _TARGET.search(str(figure["target"] or ""))
        if found:
            marker = x(float(found[1]))
            pen.line([(marker, top + 1), (marker, top + ROW_PX - 3)], fill="black", width=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path

"""The rehearsal report's charts: line charts over a run as inline SVG, and the overview PNG (Pillow, as
``benchmarks/chart.py`` draws the benchmarks' one).

Both are plain drawings with no script and no outside asset, so ``index.html`` opens from a file, a
mail attachment or a CI artefact alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont

Points = list[tuple[float, float]]

# Colour-blind-safe (Okabe–Ito, then Tol's muted), in the order series are given.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
           "#332288", "#88ccee", "#44aa99", "#117733", "#999933", "#ddcc77", "#882255", "#aa4499")
SVG_W, SVG_H = 560, 230
PAD_L, PAD_R, PAD_T, PAD_B = 58, 12, 26, 28
LEGEND_ROW_PX = 15
MAX_LEGEND = 16


class Limit(NamedTuple):
    """A horizontal line on a chart: a target or a threshold."""

    value: float
    label: str


def nice_ceiling(value: float) -> float:
    """The axis top: 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * 1.0000001:
            return float(step * power)
    return float(10 * power)


def _figure(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart(title: str, series: dict[str, Points], unit: str, *, limits: Sequence[Limit] = (),
               x_max: float | None = None, note: str = "") -> str:
    """An SVG line chart of ``series`` (seconds from the run's start, value) with ``limits`` as dashed lines.

    A chart without a single point says so instead of drawing empty axes.
    """
    drawn = {name: points for name, points in series.items() if points}
    shown = list(drawn.items())[:MAX_LEGEND]
    legend_rows = math.ceil(len(shown) / 2)
    height = SVG_H + legend_rows * LEGEND_ROW_PX
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {SVG_W} {height}" '
            f'width="{SVG_W}" height="{height}"><title>{escape(title)}</title>'
            f'<text x="{PAD_L}" y="16" class="ct">{escape(title)}'
            f'{f" ({escape(unit)})" if unit else ""}</text>')
    if not drawn:
        return (head + f'<text x="{SVG_W / 2}" y="{SVG_H / 2}" text-anchor="middle" class="empty">'
                f'{escape(note or "not measured in this run")}</text></svg>')
    xs = [x for points in drawn.values() for x, _ in points]
    ys = [y for points in drawn.values() for _, y in points]
    x_top = max(x_max or 0.0, max(xs), 1.0)
    y_top = nice_ceiling(max([*ys, *(limit.value for limit in limits)]))
    plot_w, plot_h = SVG_W - PAD_L - PAD_R, SVG_H - PAD_T - PAD_B

    def px(x: float) -> float:
        return PAD_L + plot_w * x / x_top

    def py(y: float) -> float:
        return PAD_T + plot_h * (1 - max(0.0, y) / y_top)

    parts = [head]
    for step in range(5):
        value = y_top * step / 4
        parts.append(f'<line x1="{PAD_L}" x2="{SVG_W - PAD_R}" y1="{py(value):.1f}" y2="{py(value):.1f}" '
                     f'class="grid"/><text x="{PAD_L - 4}" y="{py(value) + 4:.1f}" text-anchor="end" '
                     f'class="tick">{_figure(value)}</text>')
    x_step = nice_ceiling(x_top / 6)
    tick = 0.0
    while tick <= x_top + 1e-9:
        parts.append(f'<text x="{px(tick):.1f}" y="{SVG_H - PAD_B + 14}" text-anchor="middle" '
                     f'class="tick">{_figure(tick)}</text>')
        tick += x_step
    parts.append(f'<text x="{SVG_W - PAD_R}" y="{SVG_H - 2}" text-anchor="end" class="tick">s into the run</text>')
    for limit in limits:
        parts.append(f'<line x1="{PAD_L}" x2="{SVG_W - PAD_R}" y1="{py(limit.value):.1f}" y2="{py(limit.value):.1f}" '
                     f'class="limit"/><text x="{SVG_W - PAD_R - 2}" y="{py(limit.value) - 3:.1f}" text-anchor="end" '
                     f'class="limitlabel">{escape(limit.label)}</text>')
    for index, (name, points) in enumerate(shown):
        colour = PALETTE[index % len(PALETTE)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(points))
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6">'
                     f'<title>{escape(name)}</title></polyline>')
        row, column = divmod(index, 2)
        lx, ly = PAD_L + column * (plot_w / 2), SVG_H + row * LEGEND_ROW_PX + 4
        parts.append(f'<rect x="{lx:.0f}" y="{ly:.0f}" width="10" height="3" fill="{colour}"/>'
                     f'<text x="{lx + 14:.0f}" y="{ly + 5:.0f}" class="legend">{escape(name[:44])}</text>')
    if len(drawn) > len(shown):
        parts.append(f'<text x="{SVG_W - PAD_R}" y="{height - 2}" text-anchor="end" class="tick">'
                     f'and {len(drawn) - len(shown)} more</text>')
    parts.append(f'<line x1="{PAD_L}" x2="{PAD_L}" y1="{PAD_T}" y2="{SVG_H - PAD_B}" class="axis"/></svg>')
    return "".join(parts)


# --- the overview PNG ---------------------------------------------------------------------------------------

class Bar(NamedTuple):
    """One run's figure beside its criterion: ``passed`` None when there was none to judge it by."""

    value: float | None
    limit: float | None
    passed: bool | None
    note: str = ""  # which figure, when not the run's overall one


class OverviewRow(NamedTuple):
    """One scenario and phase: achieved requests/s against the target, p95 against its limit."""

    label: str
    rps: Bar
    p95_ms: Bar
    invalid: str | None


WIDTH = 1200
ROW_PX = 34
LABEL_PX = 330
GAP_PX = 40
TOP_PX = 64
COLOURS = {True: (46, 139, 87), False: (200, 60, 50), None: (90, 110, 160)}
INVALID = (170, 170, 170)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def draw_overview(rows: Sequence[OverviewRow], path: Path, title: str) -> Path:
    """Write the overview: per scenario and phase, requests/s answered as due against the target (left) and the
    served requests' p95 against its limit (right); a black tick is the criterion, grey an invalid run."""
    height = TOP_PX + ROW_PX * max(1, len(rows)) + 44
    image = Image.new("RGB", (WIDTH, height), "white")
    pen = ImageDraw.Draw(image)
    text, small = _font(15), _font(12)
    pen.text((12, 10), title, fill="black", font=_font(18))
    panel_w = (WIDTH - LABEL_PX - GAP_PX - 20) // 2
    panels = ((LABEL_PX, "requests/s answered as due (tick: target)", "rps", "{:,.1f}"),
              (LABEL_PX + panel_w + GAP_PX, "p95 of served requests, ms (tick: limit; the type nearest its limit)",
               "p95_ms", "{:,.0f} ms"))
    if not rows:
        pen.text((12, TOP_PX), "no run measured", fill="gray", font=text)
    for left, caption, field, fmt in panels:
        bars: list[Bar] = [getattr(row, field) for row in rows]
        scale = nice_ceiling(max([1.0, *(b.value or 0.0 for b in bars), *(b.limit or 0.0 for b in bars)]) * 1.05)
        pen.text((left, TOP_PX - 24), caption, fill="black", font=small)

        def x(value: float, left: int = left, scale: float = scale) -> float:
            return left + panel_w * min(max(value, 0.0), scale) / scale

        for step in range(5):
            tick = scale * step / 4
            pen.line([(x(tick), TOP_PX - 6), (x(tick), height - 38)], fill=(225, 225, 225))
            pen.text((x(tick) - 10, height - 32), _figure(tick), fill="gray", font=small)
        for index, (row, bar) in enumerate(zip(rows, bars, strict=True)):
            top = TOP_PX + index * ROW_PX
            if bar.value is not None:
                colour = INVALID if row.invalid else COLOURS[bar.passed]
                pen.rectangle([left, top + 5, x(bar.value), top + ROW_PX - 7], fill=colour)
                shown = (fmt.format(bar.value) + (f" ({bar.note})" if bar.note else ""))[:44]
                width = pen.textlength(shown, font=small)
                if x(bar.value) + 6 + width <= min(left + panel_w + GAP_PX, WIDTH) - 4:
                    pen.text((x(bar.value) + 6, top + 9), shown, fill="black", font=small)
                else:  # no room after the bar: inside it, at its end
                    pen.text((max(left + 2, x(bar.value) - 6 - width), top + 9), shown, fill="white", font=small)
            else:
                pen.text((left + 4, top + 9), "not measured", fill="gray", font=small)
            if bar.limit is not None:
                marker = x(bar.limit)
                pen.line([(marker, top + 1), (marker, top + ROW_PX - 3)], fill="black", width=3)
    for index, row in enumerate(rows):
        top = TOP_PX + index * ROW_PX
        label = row.label if not row.invalid else f"{row.label} (invalid)"
        pen.text((12, top + 8), label[:40], fill="black" if not row.invalid else (110, 110, 110), font=text)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path

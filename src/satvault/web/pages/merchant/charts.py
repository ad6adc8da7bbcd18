"""Server-rendered SVG charts for the dashboard: pure functions from numbers to SVG text,
each with a <title> and <desc> (the page shows the same numbers in a table beside it).
Colours come from CSS classes (``static/merchant.css``); no inline style."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

__all__ = ["Series", "bar_chart"]

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 640, 220, 48, 24, 8


@dataclass(frozen=True, slots=True)
class Series:
    name: str  # shown in the legend
    css: str  # the class that colours it (c1, c2, c3…)
    values: Sequence[int]


def bar_chart(*, title: str, desc: str, labels: Sequence[str], series: Sequence[Series],
              stacked: bool = True, unit_divisor: int = 1) -> Markup:
    """Bars per label, ``series`` stacked (or side by side); values divided by
    ``unit_divisor`` for the axis (msat → sat with 1000). Integers throughout."""
    n = max(len(labels), 1)
    if stacked:
        peak = max((sum(s.values[i] for s in series) for i in range(len(labels))), default=0)
    else:
        peak = max((v for s in series for v in s.values), default=0)
    peak = max(peak, 1)
    plot_w, plot_h = WIDTH - PAD_LEFT - 4, HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = plot_w / n
    bar_w = slot * 0.8 / (1 if stacked else max(len(series), 1))
    uid = "chart-" + hashlib.sha256(title.encode()).hexdigest()[:8]  # ids unique on the page
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'role="img" aria-labelledby="{uid}-t {uid}-d" class="bars">',
             f'<title id="{uid}-t">{escape(title)}</title>'
             f'<desc id="{uid}-d">{escape(desc)}</desc>',
             f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" '
             f'x2="{WIDTH - 4}" y2="{PAD_TOP + plot_h}"/>',
             f'<text class="tick" x="{PAD_LEFT - 4}" y="{PAD_TOP + 10}" text-anchor="end">'
             f'{peak // unit_divisor}</text>',
             f'<text class="tick" x="{PAD_LEFT - 4}" y="{PAD_TOP + plot_h}" '
             f'text-anchor="end">0</text>']
    for i, label in enumerate(labels):
        x0 = PAD_LEFT + i * slot + slot * 0.1
        base = float(PAD_TOP + plot_h)
        for j, s in enumerate(series):
            v = s.values[i]
            if v <= 0:
                continue
            h = plot_h * v / peak
            x = x0 if stacked else x0 + j * bar_w
            y = base - h if stacked else PAD_TOP + plot_h - h
            parts.append(f'<rect class="{escape(s.css)}" x="{x:.1f}" y="{y:.1f}" '
                         f'width="{bar_w:.1f}" height="{h:.1f}"><title>{escape(label)}: '
                         f'{escape(s.name)} {v // unit_divisor}</title></rect>')
            if stacked:
                base -= h
        last = len(labels) - 1
        if i == last or (i % 7 == 0 and last - i >= 4):
            # The last label ends at its bar, so it is not cut off at the right edge.
            anchor = (f'x="{x0 + slot:.1f}" text-anchor="end"' if i == last
                      else f'x="{x0:.1f}"')
            parts.append(f'<text class="tick" {anchor} y="{HEIGHT - 6}">'
                         f'{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))

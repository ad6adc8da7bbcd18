"""Pure helpers of the admin pages: a horizontal bar chart's geometry (the template draws
the SVG elements, so every label is escaped by the template engine), a coverage ratio in
integers, and a line diff of two JSON documents."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["Bar", "Chart", "DiffLine", "bar_chart", "coverage_percent", "json_diff",
           "pretty_json"]

WIDTH = 640
LABEL_W = 150
BAR_H = 26
GAP = 10


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int  # what the bar stands for (msat)
    y: int
    width: int
    kind: str  # "asset" | "liability": a CSS class, the legend says it in words too


@dataclass(frozen=True, slots=True)
class Chart:
    bars: tuple[Bar, ...]
    width: int
    height: int
    label_width: int
    bar_height: int


def bar_chart(rows: list[tuple[str, int, str]]) -> Chart:
    """``(label, value, kind)`` rows as bars scaled to the largest; negative values draw as
    empty bars (the table beside the chart gives the number)."""
    top = max((v for _, v, _ in rows), default=0)
    span = WIDTH - LABEL_W - 10
    bars = []
    for n, (label, value, kind) in enumerate(rows):
        width = 0 if top <= 0 or value <= 0 else max(1, value * span // top)
        bars.append(Bar(label, value, GAP + n * (BAR_H + GAP), width, kind))
    return Chart(tuple(bars), WIDTH, GAP + len(rows) * (BAR_H + GAP), LABEL_W, BAR_H)


def coverage_percent(assets_msat: int, liabilities_msat: int) -> Decimal | None:
    """Assets over liabilities in percent, two decimals, rounded down (coverage is never
    shown larger than it is); None when nothing is owed."""
    if liabilities_msat <= 0:
        return None
    return Decimal(assets_msat * 10_000 // liabilities_msat) / 100


@dataclass(frozen=True, slots=True)
class DiffLine:
    sign: str  # "+" | "-" | " "
    text: str


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        value = json.loads(value)
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def json_diff(before: Any, after: Any) -> list[DiffLine]:
    """Every line of ``after``'s pretty JSON, marked added, removed or kept against
    ``before`` (None: everything is added)."""
    old = pretty_json(before).splitlines() if before is not None else []
    new = pretty_json(after).splitlines()
    out = []
    for line in difflib.ndiff(old, new):
        if line.startswith(("+ ", "- ", "  ")):
            out.append(DiffLine(line[0], line[2:]))
    return out

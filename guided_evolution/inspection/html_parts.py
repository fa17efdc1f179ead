"""The report's small HTML parts, shared by every module that writes its markup: escaping,
numbers, the colour palettes, the ``<svg class="plot">`` wrapper and the "better" arrow.

Every piece of run data that reaches the markup goes through `esc`.
"""

from __future__ import annotations

import html
import math
from typing import Any

VIRIDIS = (
    (68, 1, 84), (72, 35, 116), (64, 67, 135), (52, 94, 141), (41, 120, 142), (32, 144, 140),
    (34, 167, 132), (68, 190, 112), (121, 209, 81), (189, 222, 38), (253, 231, 37),
)  # fmt: skip
OPERATOR_PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
)  # fmt: skip
ISLAND_COLOURS = ("#0969da", "#e8590c", "#1a7f37", "#8250df", "#bf3989", "#9a6700", "#57606a")


def esc(value: Any) -> str:
    """HTML-escape anything (quotes too, so it is safe in attributes); None is ''."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt_num(value: Any, digits: int = 5) -> str:
    """A number for people: thousands separators for ints, ``digits`` significant digits for floats."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != value or value in (math.inf, -math.inf):
        return str(value)
    return f"{value:.{digits}g}"


def gen_colour(gen: int, max_gen: int) -> str:
    """Viridis (cut before the palest yellow) by generation."""
    t = 0.0 if max_gen <= 0 else min(max(gen / max_gen, 0.0), 1.0) * 0.92
    pos = t * (len(VIRIDIS) - 1)
    i = min(int(pos), len(VIRIDIS) - 2)
    f = pos - i
    rgb = [round(a + (b - a) * f) for a, b in zip(VIRIDIS[i], VIRIDIS[i + 1], strict=True)]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def island_colour(k: int) -> str:
    """Island ``k``'s colour (the palette repeats past seven islands)."""
    return ISLAND_COLOURS[k % len(ISLAND_COLOURS)]


def svg_plot(width: int, height: int, body: str, label: str) -> str:
    """A plot's ``<svg>`` element (the page's CSS styles class ``plot``)."""
    return (
        f'<svg class="plot" role="img" aria-label="{esc(label)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def better(direction: str) -> str:
    """Which way an objective improves, as an axis label says it."""
    return "↑ better" if direction == "max" else "↓ better"

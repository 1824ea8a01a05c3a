"""One builder for the views' bqplot axes and figures, and the HTML legends that go under them.

Every chart used to set up its own axes, fonts, margins and (hard-coded, dark-grey) label colours; they drifted
apart and were unreadable on dark themes. Here there is one place: no colour is set on an axis or a title (the
theme's CSS variables colour them, see :mod:`.style`), fonts come from the style sizes, and legends are HTML
rows under the plot, which can neither cover the data nor collide with a title the way bqplot's in-plot legend
box does.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from .style import TICK_STYLE, TITLE_STYLE

__all__ = ["chart_axis", "chart_figure", "legend_html", "nice_ceiling", "nice_step", "nice_ticks", "swatch_html"]


def nice_step(span: float, count: int = 5) -> float:
    """The smallest 1, 2 or 5 x 10^k step that cuts ``span`` into at most ``count`` intervals."""
    raw = max(span, 1e-300) / max(count, 1)
    exponent = math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        step = factor * 10.0**exponent
        if step >= raw * (1 - 1e-12):
            return step
    return 10.0 ** (exponent + 1)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^k >= ``value`` (1 for a non-positive or non-finite value): axis ends that
    move rarely and tick cleanly."""
    return nice_step(value, 1) if math.isfinite(value) and value > 0 else 1.0


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> np.ndarray:
    """Round tick values inside ``[low, high]``: distinct once formatted (``integer`` steps are whole numbers).

    bqplot's ``num_ticks`` spaces ticks evenly from end to end, so a 0..2 step axis formatted as integers reads
    "0 0 1 1 2"; explicit round values never repeat.
    """
    step = nice_step(high - low, count)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(low / step - 1e-9) * step
    ticks = np.arange(first, high + step * 1e-9, step)
    return np.round(ticks, 12) + 0.0  # + 0.0: no "-0"


def chart_axis(scale: bq.Scale, label: str = "", vertical: bool = False, **options: Any) -> bq.Axis:
    """An axis in the house style (font size, no colour of its own: the theme colours it)."""
    options.setdefault("tick_style", TICK_STYLE)
    if vertical:
        options.setdefault("orientation", "vertical")
    return bq.Axis(scale=scale, label=label, **options)


def chart_figure(
    marks: Sequence[bq.Mark],
    axes: Sequence[bq.Axis],
    title: str,
    height: str,
    min_width: str = "260px",
    margin: dict[str, int] | None = None,
    **options: Any,
) -> bq.Figure:
    """A figure in the house style: titled, fixed height, full width of its column, themed background."""
    fig_margin = {"top": 40, "bottom": 52, "left": 72, "right": 20}
    fig_margin.update(margin or {})
    options.setdefault("title_style", dict(TITLE_STYLE))
    return bq.Figure(
        marks=list(marks),
        axes=list(axes),
        title=title,
        fig_margin=fig_margin,
        layout=widgets.Layout(width="100%", height=height, min_width=min_width),
        **options,
    )


def swatch_html(label: str, color: str, line: str = "") -> str:
    """One legend entry: a colour square (or a line sample, ``line="solid"|"dashed"``) and its label."""
    if line:
        sample = f"<span class='gw-line' style='border-top:3px {line} {color}'></span>"
    else:
        sample = f"<span class='gw-swatch' style='background:{color}'></span>"
    return f"<span style='white-space:nowrap'>{sample}{html.escape(label)}</span>"


def legend_html(entries: Sequence[tuple[str, str] | tuple[str, str, str]], lead: str = "") -> str:
    """A compact legend row: ``entries`` are ``(label, colour)`` or ``(label, colour, line style)``."""
    lead_html = f"<span>{html.escape(lead)}</span>" if lead else ""
    return f"<div class='gw-key'>{lead_html}{''.join(swatch_html(*entry) for entry in entries)}</div>"

"""One builder for the views' bqplot axes and figures, and the HTML legends that go under them.

Every chart used to set up its own axes, fonts, margins and (hard-coded, dark-grey) label colours; they drifted
apart and were unreadable on dark themes. Here there is one place: no colour is set on an axis or a title (the
theme's CSS variables colour them, see :mod:`.style`), fonts come from the style sizes, and legends are HTML
rows under the plot, which can neither cover the data nor collide with a title the way bqplot's in-plot legend
box does.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import bqplot as bq
import ipywidgets as widgets

from .style import TICK_STYLE, TITLE_STYLE

__all__ = ["chart_axis", "chart_figure", "legend_html", "swatch_html"]


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

"""Colours, fonts and sizes shared by the views, chosen to read from the back of a lecture hall."""

from __future__ import annotations

import ipywidgets as widgets

__all__ = [
    "AXIS_LABEL_STYLE",
    "CSS",
    "KIND_COLORS",
    "KIND_BACKGROUNDS",
    "ROLE_COLORS",
    "TICK_STYLE",
    "TITLE_STYLE",
    "css_widget",
]

KIND_COLORS = {
    "healthy": "#1a7f37",
    "vanishing": "#d9730d",
    "exploding": "#c62828",
    "frozen": "#5b7083",
    "dead": "#6e6e6e",
    "nonfinite": "#7b1fa2",
    "no_gradient": "#5b7083",
    "unused": "#6e6e6e",
    "skipped": "#8d6e00",
    "inconclusive": "#5b7083",
    "error": "#b71c1c",
    "waiting": "#5b7083",
}
"""Text/accent colour per diagnosis kind (and for errors)."""

KIND_BACKGROUNDS = {
    "healthy": "#e8f5e9",
    "vanishing": "#fff3e0",
    "exploding": "#ffebee",
    "frozen": "#eceff1",
    "dead": "#f1f1f1",
    "nonfinite": "#f3e5f5",
    "no_gradient": "#eceff1",
    "unused": "#f1f1f1",
    "skipped": "#fff8e1",
    "inconclusive": "#eceff1",
    "error": "#ffebee",
    "waiting": "#eceff1",
}

ROLE_COLORS = {"hidden": "#1f77b4", "norm": "#8fb8de", "embedding": "#17becf", "head": "#17becf"}
"""Bar colour of a layer that the diagnosis does not single out."""

FROZEN_COLOR = "#c8ccd0"
BAD_VALUE_COLOR = "#000000"

TICK_STYLE = {"font-size": "14px"}
AXIS_LABEL_STYLE = {"font-size": "15px"}
TITLE_STYLE = {"font-size": "18px", "font-weight": "bold"}

CSS = """
<style>
.gw-app { font-size: 16px; }
.gw-app .widget-label, .gw-app .widget-label-basic, .gw-app .widget-readout,
.gw-app .widget-dropdown select, .gw-app .widget-text input, .gw-app .widget-checkbox label,
.gw-app .widget-toggle-button, .gw-app .widget-button, .gw-app .widget-html-content {
    font-size: 16px;
}
.gw-app .widget-dropdown select { height: 30px; }
.gw-app .widget-button, .gw-app .widget-toggle-button { height: 34px; }
.gw-app .bqplot .axis text { font-size: 14px; }
.gw-app .bqplot text.mainheading { font-size: 18px; font-weight: bold; }
.gw-panel { border: 1px solid #d0d7de; border-radius: 6px; padding: 4px; }
</style>
"""
"""Scoped to the ``gw-app`` class: bigger text for projectors without restyling the rest of the notebook."""


def css_widget() -> widgets.HTML:
    """An invisible widget carrying :data:`CSS`; each app includes one."""
    return widgets.HTML(CSS, layout=widgets.Layout(height="0px", margin="0px", overflow="hidden"))

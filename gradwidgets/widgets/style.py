"""Colours, fonts and sizes shared by the views, chosen to read from the back of a lecture hall, in any theme.

Text never carries a hard-coded colour: it takes the Jupyter theme's CSS variables (``--jp-ui-font-color1`` on
``--jp-layout-color0``), which JupyterLab light/dark, Notebook 7 and Voila's light/dark themes all define. The
verdict colours are our own variables (``--gw-vanishing``...), with a light and a dark set, each at >= 4.5:1
against its background (WCAG AA). bqplot reads its text and plot-area colours from ``--bq-*`` variables (its
own theme falls back to orange text on dark pages); :data:`CSS` points those at the Jupyter ones.

Bar and line colours (marks, not text) stay fixed hex colours, the same in every theme, so a legend can name them.
"""

from __future__ import annotations

import ipywidgets as widgets

__all__ = [
    "AXIS_LABEL_STYLE",
    "CSS",
    "KIND_COLORS",
    "ROLE_COLORS",
    "ROLE_NAMES",
    "TICK_STYLE",
    "TITLE_STYLE",
    "css_widget",
    "kind_background",
    "kind_text",
]

KIND_COLORS = {
    "healthy": "#1a7f37",
    "vanishing": "#d9730d",
    "exploding": "#c62828",
    "frozen": "#8a96a3",
    "dead": "#6e6e6e",
    "nonfinite": "#7b1fa2",
    "no_gradient": "#5b7083",
    "unused": "#6e6e6e",
    "skipped": "#8d6e00",
    "inconclusive": "#5b7083",
    "error": "#b71c1c",
    "waiting": "#5b7083",
}
"""Fill colour of the bars the diagnosis singles out, per kind (marks, not text: see :func:`kind_text`)."""

ROLE_COLORS = {"embedding": "#17becf", "hidden": "#1f77b4", "norm": "#8fb8de", "head": "#8c564b"}
"""Bar colour of a layer that the diagnosis does not single out, by its role in the net."""
ROLE_NAMES = {"embedding": "input", "hidden": "hidden", "norm": "norm", "head": "head"}
"""What the legend calls each role (an MLP's "embedding" is its input layer)."""

FROZEN_COLOR = KIND_COLORS["frozen"]

TICK_STYLE = {"font-size": "14px"}
AXIS_LABEL_STYLE = {"font-size": "15px"}
TITLE_STYLE = {"font-size": "17px", "font-weight": "bold"}

_KIND_TEXT_LIGHT = {
    "healthy": "#166b2f",
    "vanishing": "#a04e00",
    "exploding": "#b71c1c",
    "frozen": "#4a5a6a",
    "dead": "#555555",
    "nonfinite": "#7b1fa2",
    "unstable": "#ad1457",
    "error": "#b71c1c",
    "waiting": "#4a5a6a",
}
_KIND_TEXT_DARK = {
    "healthy": "#6cd48a",
    "vanishing": "#ffb366",
    "exploding": "#ff8a80",
    "frozen": "#b0bec5",
    "dead": "#bdbdbd",
    "nonfinite": "#e1a6f0",
    "unstable": "#f48fb1",
    "error": "#ff8a80",
    "waiting": "#b0bec5",
}
_KIND_BACKGROUND_LIGHT = {
    "healthy": "#e8f5e9",
    "vanishing": "#fff3e0",
    "exploding": "#ffebee",
    "frozen": "#eceff1",
    "dead": "#f1f1f1",
    "nonfinite": "#f3e5f5",
    "unstable": "#fce4ec",
    "no_gradient": "#eceff1",
    "unused": "#f1f1f1",
    "skipped": "#fff8e1",
    "inconclusive": "#eceff1",
    "error": "#ffebee",
    "waiting": "#eceff1",
}
_KIND_BACKGROUND_DARK = {
    "healthy": "#12301c",
    "vanishing": "#3a2410",
    "exploding": "#3d1414",
    "frozen": "#263238",
    "dead": "#2a2a2a",
    "nonfinite": "#2f1838",
    "unstable": "#3a1426",
    "error": "#3d1414",
    "waiting": "#263238",
}


def kind_text(kind: str) -> str:
    """CSS colour of text in a verdict's colour (follows the theme)."""
    return f"var(--gw-{kind if kind in _KIND_TEXT_LIGHT else 'waiting'})"


def kind_background(kind: str) -> str:
    """CSS background of a verdict box (follows the theme)."""
    return f"var(--gw-{kind if kind in _KIND_TEXT_LIGHT else 'waiting'}-bg)"


def _variables(text: dict[str, str], background: dict[str, str]) -> str:
    return "".join(f"--gw-{k}: {v}; --gw-{k}-bg: {background[k]}; " for k, v in text.items())


CSS = f"""
<style>
.gw-app {{
    font-size: 16px;
    --gw-text: var(--jp-ui-font-color1, rgba(0, 0, 0, 0.87));
    --gw-text-muted: var(--jp-ui-font-color1, rgba(0, 0, 0, 0.87));
    --gw-background: var(--jp-layout-color0, #ffffff);
    {_variables(_KIND_TEXT_LIGHT, _KIND_BACKGROUND_LIGHT)}
}}
[data-jp-theme-light='false'] .gw-app, body.theme-dark .gw-app, .jp-mod-dark .gw-app {{
    {_variables(_KIND_TEXT_DARK, _KIND_BACKGROUND_DARK)}
}}
.gw-app.gw-app .bqplot {{
    --bq-content-font-color: var(--gw-text);
    --bq-axis-tick-text-fill: var(--gw-text);
    --bq-axislabel-fill: var(--gw-text);
    --bq-mainheading-fill: var(--gw-text);
    --bq-plotarea-background-fill: var(--gw-background);
    --bq-background: var(--gw-background);
    --bq-grid-color: var(--jp-border-color2, #e0e0e0);
    --bq-axis-border-color: var(--jp-ui-font-color2, rgba(0, 0, 0, 0.54));
    --bq-axis-path-stroke: var(--bq-axis-border-color);
    --bq-axis-tick-stroke: var(--bq-grid-color);
    --bq-axis-tick-short-stroke: var(--bq-axis-border-color);
    --bq-axis-rect-stroke: var(--bq-axis-border-color);
    background: var(--gw-background);
}}
.gw-app .bqplot > svg .axis text, .gw-app .bqplot > svg text.axislabel, .gw-app .bqplot > svg text.mainheading {{
    fill: var(--gw-text);
}}
.gw-app .bqplot > svg .label text, .gw-app .bqplot > svg g.label {{ fill: var(--gw-text); }}
.gw-app .widget-label, .gw-app .widget-label-basic, .gw-app .widget-readout,
.gw-app .widget-dropdown select, .gw-app .widget-text input, .gw-app .widget-checkbox label,
.gw-app .widget-toggle-button, .gw-app .widget-button, .gw-app .widget-html-content {{
    font-size: 16px;
}}
.gw-app .widget-dropdown select {{ height: 30px; }}
.gw-app .widget-button, .gw-app .widget-toggle-button {{ height: 34px; }}
.gw-app .bqplot .axis text {{ font-size: 14px; }}
.gw-app .bqplot text.mainheading {{ font-size: 17px; font-weight: bold; }}
.gw-app .mod-success {{ background-color: #1a7f37; color: #ffffff; }}
.gw-app .mod-warning {{ background-color: #9a4f00; color: #ffffff; }}
.gw-app .mod-danger {{ background-color: #b71c1c; color: #ffffff; }}
.gw-app .mod-success.mod-active, .gw-app .mod-warning.mod-active, .gw-app .mod-danger.mod-active {{ opacity: 0.9; }}
.gw-app .widget-toggle-button.mod-active {{ background-color: #1f5f99; color: #ffffff; }}
.gw-app .gw-text {{ color: var(--gw-text); }}
.gw-app .gw-key {{ font-size: 14px; line-height: 1.5; color: var(--gw-text); }}
.gw-app .gw-key .gw-swatch {{
    display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin: 0 3px 0 8px;
    vertical-align: -1px;
}}
.gw-app .gw-key .gw-line {{ display: inline-block; width: 18px; margin: 0 4px 0 10px; vertical-align: 4px; }}
.gw-app .gw-state-lost {{ display: none; }}
.gw-app .jupyter-widgets-disconnected .gw-state-live {{ display: none; }}
.gw-app .jupyter-widgets-disconnected .gw-state-lost {{ display: inline; color: var(--gw-error); }}
.gw-app .jupyter-widgets-disconnected button, .gw-app button.jupyter-widgets-disconnected {{
    pointer-events: none;
}}
.gw-app .jupyter-widgets-disconnected::before, .gw-app.jupyter-widgets-disconnected::before {{ display: none; }}
.gw-panel {{ border: 1px solid var(--jp-border-color1, #d0d7de); border-radius: 6px; padding: 4px; }}
</style>
"""
"""Scoped to the ``gw-app`` class: bigger text for projectors and theme colours, without restyling the rest of
the notebook. ``jupyter-widgets-disconnected`` is the class ipywidgets puts on every view whose model lost its
kernel connection (kernel restarted or gone): the status line then says so instead of "training", in one
sentence rather than ipywidgets' broken-link icon on every box (which scatters across the layout)."""


def css_widget() -> widgets.HTML:
    """An invisible widget carrying :data:`CSS`; each app includes one."""
    return widgets.HTML(CSS, layout=widgets.Layout(height="0px", margin="0px", overflow="hidden"))

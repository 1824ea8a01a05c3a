"""``ActivationPlot``: the activation f, its derivative f', and the chain-rule bound next to the measurement.

The derivative's maximum is the whole story for saturating activations: sigmoid's f' never exceeds 0.25, so
the backward signal through ``depth`` sigmoid layers shrinks by up to ``0.25 ** (depth - 1)``. The plot draws
that maximum as a dashed line and puts the bound beside the measured first/last layer ratio.
The curves arrive as plain arrays (computed by the app from the core): this view does no torch math.
"""

from __future__ import annotations

import html
import math
import threading
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from .style import KIND_COLORS, TICK_STYLE, TITLE_STYLE

__all__ = ["ActivationPlot"]

F_COLOR = "#1f77b4"
DF_COLOR = "#d62728"


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if value == 0:
        return "0"
    return f"{value:.2g}" if 0.01 <= abs(value) < 1000 else f"{value:.1e}"


class ActivationPlot(widgets.VBox):
    """f and f' over ``x``; a dashed line at max f'; below, theory (max f'^(depth-1)) vs the measured ratio."""

    def __init__(self, height: str = "250px", **kwargs: Any) -> None:
        self.scale_x = bq.LinearScale()
        self.scale_y = bq.LinearScale()
        scales = {"x": self.scale_x, "y": self.scale_y}
        self.f_line = bq.Lines(
            x=np.zeros(0),
            y=np.zeros(0),
            scales=scales,
            colors=[F_COLOR],
            labels=["f(x)"],
            display_legend=True,
            stroke_width=3,
        )
        self.df_line = bq.Lines(
            x=np.zeros(0),
            y=np.zeros(0),
            scales=scales,
            colors=[DF_COLOR],
            labels=["f′(x)"],
            display_legend=True,
            stroke_width=3,
        )
        self.max_line = bq.Lines(
            x=np.zeros(0),
            y=np.zeros(0),
            scales=scales,
            colors=[DF_COLOR],
            line_style="dashed",
            stroke_width=1.5,
        )
        self.max_label = bq.Label(
            x=np.zeros(0),
            y=np.zeros(0),
            text=[],
            scales=scales,
            colors=[DF_COLOR],
            default_size=15,
            font_weight="bold",
            align="start",
            y_offset=-8,
            apply_clip=False,
        )
        axis_x = bq.Axis(scale=self.scale_x, label="x", tick_style=TICK_STYLE, num_ticks=5)
        self.axis_y = axis_y = bq.Axis(
            scale=self.scale_y, orientation="vertical", tick_style=TICK_STYLE, num_ticks=5, tick_format=".2g"
        )
        self.figure = bq.Figure(
            marks=[self.f_line, self.df_line, self.max_line, self.max_label],
            axes=[axis_x, axis_y],
            title="Activation",
            title_style=TITLE_STYLE,
            legend_location="top-left",
            legend_text={"font-size": "15px"},
            fig_margin={"top": 44, "bottom": 44, "left": 48, "right": 16},
            layout=widgets.Layout(width="100%", height=height, min_width="240px"),
        )
        self.theory = widgets.HTML("", layout=widgets.Layout(padding="0 8px"))
        self._lock = threading.Lock()
        self._shown: tuple | None = None
        super().__init__([self.figure, self.theory], **kwargs)

    def show_curve(self, label: str, x: np.ndarray, f: np.ndarray, df: np.ndarray, max_derivative: float) -> None:
        """Draw f and f' (arrays over ``x``) and mark ``max_derivative``."""
        with self._lock:
            x = np.asarray(x, dtype=np.float32)
            with self.figure.hold_sync():
                self.figure.title = f"Activation: {label}"
            low = min(0.0, math.floor(float(min(np.min(f), np.min(df))) * 4) / 4)
            high = max(1.0, math.ceil(float(max(np.max(f), np.max(df))) * 4) / 4)
            with self.scale_y.hold_sync():
                self.scale_y.min, self.scale_y.max = low, high
            self.axis_y.tick_values = np.linspace(low, high, 5)
            with self.f_line.hold_sync():
                self.f_line.x, self.f_line.y = x, np.asarray(f, dtype=np.float32)
            with self.df_line.hold_sync():
                self.df_line.x, self.df_line.y = x, np.asarray(df, dtype=np.float32)
            with self.max_line.hold_sync():
                self.max_line.x = np.array([x[0], x[-1]], dtype=np.float32)
                self.max_line.y = np.array([max_derivative] * 2, dtype=np.float32)
            with self.max_label.hold_sync():
                self.max_label.x = np.array([x[0]], dtype=np.float32)
                self.max_label.y = np.array([max_derivative], dtype=np.float32)
                self.max_label.text = [f"max f′ = {max_derivative:.3g}"]

    def show_ratio(
        self,
        max_derivative: float,
        depth: int,
        bound: float,
        measured: float | None,
        caveat: str = "",
        kind: str = "healthy",
        through: str = "layers",
    ) -> None:
        """The chain-rule bound ``max f' ** (depth - 1)`` beside the measured first/last gradient ratio.

        ``through="time"`` words it for a recurrent net, where ``depth`` is the number of time steps.
        """
        key = (round(max_derivative, 6), depth, _number(bound), _number(measured), caveat, kind, through)
        with self._lock:
            if key == self._shown:
                return
            self._shown = key
            color = KIND_COLORS.get(kind, "#222")
            exponent, measured_label = (
                ("steps−1", "Measured step 0 / last step gradient")
                if through == "time"
                else ("depth−1", "Measured first/last layer gradient")
            )
            note = f" <span style='color:#555'>({html.escape(caveat)})</span>" if caveat else ""
            self.theory.value = (
                "<div style='font-size:16px;line-height:1.45'>"
                "Activations' share, if the weights keep the scale: "
                f"max f′<sup>{exponent}</sup> = {max_derivative:.3g}<sup>{depth - 1}</sup> = "
                f"<b>{html.escape(_number(bound))}</b>{note}<br>"
                f"{measured_label}: <b style='color:{color}'>{html.escape(_number(measured))}</b>"
                "</div>"
            )

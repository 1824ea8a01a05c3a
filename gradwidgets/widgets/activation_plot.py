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

from .figures import chart_axis, chart_figure, legend_html
from .style import kind_text

__all__ = ["ActivationPlot"]

F_COLOR = "#1f77b4"
DF_COLOR = "#d62728"
X_TICKS = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
"""Inside the [-6, 6] domain: no tick at a corner, where it would meet the other axis' first label."""


def _line(scales: dict, color: str, **options: Any) -> bq.Lines:
    return bq.Lines(x=np.zeros(0), y=np.zeros(0), scales=scales, colors=[color], **options)


class ActivationPlot(widgets.VBox):
    """f and f' over ``x``; a dashed line at max f'; below, theory (max f'^(depth-1)) vs the measured ratio.

    The legend (f, f', the value of max f') is an HTML row under the plot: nothing is written inside it.
    """

    def __init__(self, height: str = "250px", **kwargs: Any) -> None:
        self.scale_x = bq.LinearScale(min=-6.0, max=6.0)
        self.scale_y = bq.LinearScale()
        scales = {"x": self.scale_x, "y": self.scale_y}
        self.f_line = _line(scales, F_COLOR, stroke_width=3)
        self.df_line = _line(scales, DF_COLOR, stroke_width=3)
        self.max_line = _line(scales, DF_COLOR, line_style="dashed", stroke_width=1.5)
        axis_x = chart_axis(self.scale_x, "x", tick_values=X_TICKS, tick_format="d")
        self.axis_y = chart_axis(self.scale_y, vertical=True, num_ticks=5, tick_format=".2~f")
        self.figure = chart_figure(
            [self.f_line, self.df_line, self.max_line],
            [axis_x, self.axis_y],
            "Activation",
            height,
            min_width="240px",
            margin={"bottom": 44, "left": 52, "right": 16},
        )
        self.legend = widgets.HTML("")
        self.theory = widgets.HTML("", layout=widgets.Layout(padding="0 8px"))
        self._lock = threading.Lock()
        self._shown: tuple | None = None
        super().__init__([self.figure, self.legend, self.theory], **kwargs)

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
            self.legend.value = legend_html(
                [
                    ("f(x)", F_COLOR, "solid"),
                    ("f′(x)", DF_COLOR, "solid"),
                    (f"max f′ = {max_derivative:.3g}", DF_COLOR, "dashed"),
                ]
            )

    def show_ratio(
        self,
        max_derivative: float,
        depth: int,
        bound_text: str,
        measured_text: str,
        caveat: str = "",
        kind: str = "healthy",
        through: str = "layers",
        predicted: tuple[float, float, str] | None = None,
    ) -> None:
        """The theory line beside the measured first/last gradient ratio.

        ``predicted`` is ``(mean slope, weight gain, formatted ratio)``: the product that predicts a plain net's
        ratio, ``(slope x gain) ** (depth - 1)`` (sigmoid, default weights: 0.141 per layer vs 0.148 measured).
        ``max f' ** (depth - 1)`` (``bound_text``) is the largest slope alone, neither a bound nor an estimate
        (GELU's reads 10 at depth 20), and is labelled so. Numbers arrive formatted with the diagnosis' own
        formatter; ``"—"`` when there is no measurement. ``through="time"`` words it for a recurrent net, where
        ``depth`` is the number of time steps.
        """
        key = (round(max_derivative, 6), depth, bound_text, measured_text, caveat, kind, through, predicted)
        with self._lock:
            if key == self._shown:
                return
            self._shown = key
            exponent, measured_label = (
                ("steps−1", "Measured step 0 / last step gradient")
                if through == "time"
                else ("depth−1", "Measured first/last layer gradient")
            )
            if predicted is not None:
                slope, gain, ratio = predicted
                first = (
                    f"Predicted, mean slope × weight gain: ({slope:.3g} × {gain:.3g})<sup>{depth - 1}</sup> = "
                    f"<b>{html.escape(ratio)}</b><br>"
                )
            elif caveat:
                first = f"No prediction: {html.escape(caveat)}<br>"
            else:
                first = ""
            self.theory.value = (
                "<div class='gw-text' style='font-size:16px;line-height:1.45'>"
                f"{first}"
                f"Largest slope alone, max f′<sup>{exponent}</sup> = {max_derivative:.3g}<sup>{depth - 1}</sup> = "
                f"{html.escape(bound_text)} <span>(not a bound: the weights count too)</span><br>"
                f"{measured_label}: <b class='gw-ratio' style='color:{kind_text(kind)}'>"
                f"{html.escape(measured_text)}</b></div>"
            )

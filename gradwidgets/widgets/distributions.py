"""``DistributionsView``: Karpathy's distribution plots, one line per layer, and update:data over time.

Four charts: the hidden states' histograms (linear), their gradients' (log10 |dL/dh|), the weight updates'
(log10 |dW| / std(W)), and log10 update:data per weight matrix against the step, with the ~1e-3 reference
(-3) dashed. Lines run from blue (input side) to red (output side); the legends under the charts name them.
The view draws plain arrays (the app turns the core's readings into them): no torch here.
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Sequence
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from .figures import chart_axis, chart_figure, legend_html, nice_ceiling, nice_ticks

__all__ = ["DistributionsView", "layer_colors"]

_ANCHORS = np.array(
    [[0x1F, 0x77, 0xB4], [0x17, 0xBE, 0xCF], [0x2C, 0xA0, 0x2C], [0xFF, 0x7F, 0x0E], [0xD6, 0x27, 0x28]],
    dtype=np.float64,
)
REFERENCE = -3.0
"""log10 of Karpathy's rule of thumb for update:data (about 1e-3)."""
REFERENCE_COLOR = "#7f7f7f"
MAX_SUMMARY = 12
"""Layers the mean/std line names one by one; past that, the first and last six (two lines at 1280 px)."""
MAX_LEGEND = 24
"""Legend entries named one by one; past that the legend names the first and the last (colours run in order)."""


def layer_colors(count: int) -> list[str]:
    """``count`` colours from blue (input side) through green to red (output side), readable on light and dark."""
    if count <= 0:
        return []
    where = np.linspace(0.0, len(_ANCHORS) - 1.0, count) if count > 1 else np.zeros(1)
    out = []
    for position in where:
        low = min(int(math.floor(position)), len(_ANCHORS) - 2)
        mix = position - low
        rgb = _ANCHORS[low] * (1 - mix) + _ANCHORS[low + 1] * mix
        out.append("#" + "".join(f"{int(round(c)):02x}" for c in rgb))
    return out


def _legend(names: Sequence[str], lead: str) -> str:
    colors = layer_colors(len(names))
    if len(names) <= MAX_LEGEND:
        return legend_html([(name, color, "solid") for name, color in zip(names, colors, strict=True)], lead=lead)
    first, last = (names[0], colors[0], "solid"), (names[-1], colors[-1], "solid")
    return legend_html([first, (f"… {len(names) - 2} more …", colors[len(names) // 2], "solid"), last], lead=lead)


class _Chart:
    """One figure of several lines (one per layer) with explicit, padded-free axis ends."""

    def __init__(self, title: str, x_label: str, y_label: str, height: str, reference: str = "") -> None:
        self.scale_x = bq.LinearScale(min=0.0, max=1.0, allow_padding=False)
        self.scale_y = bq.LinearScale(min=0.0, max=1.0, allow_padding=False)
        scales = {"x": self.scale_x, "y": self.scale_y}
        self.lines = bq.Lines(x=np.zeros((0, 0)), y=np.zeros((0, 0)), scales=scales, stroke_width=2)
        self.reference: bq.Lines | None = None
        marks: list[bq.Mark] = [self.lines]
        if reference:
            self.reference = bq.Lines(
                x=np.zeros(0),
                y=np.zeros(0),
                scales=scales,
                colors=[REFERENCE_COLOR],
                line_style="dashed",
                stroke_width=2,
            )
            marks.append(self.reference)
        self.axis_x = chart_axis(self.scale_x, x_label, tick_format=".3~g")
        self.axis_y = chart_axis(self.scale_y, y_label, vertical=True, tick_format=".2~g", label_offset="52px")
        self.title = title
        self.figure = chart_figure(
            marks,
            [self.axis_x, self.axis_y],
            f"{title}: none yet",
            height,
            min_width="280px",
            margin={"top": 36, "bottom": 50, "left": 72, "right": 20},
        )

    def draw(
        self, x: np.ndarray, y: np.ndarray, x_range: tuple[float, float], y_range: tuple[float, float], title: str
    ) -> None:
        colors = layer_colors(len(y))
        for scale, (low, high) in ((self.scale_x, x_range), (self.scale_y, y_range)):
            with scale.hold_sync():
                scale.min, scale.max = float(low), float(high)
        self.axis_x.tick_values = nice_ticks(*x_range)
        self.axis_y.tick_values = nice_ticks(*y_range)
        with self.lines.hold_sync():
            self.lines.x, self.lines.y = x.astype(np.float32), y.astype(np.float32)
            self.lines.colors = colors
        if self.figure.title != title:
            self.figure.title = title

    def clear(self) -> None:
        with self.lines.hold_sync():
            self.lines.x, self.lines.y = np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        if self.reference is not None:
            with self.reference.hold_sync():
                self.reference.x, self.reference.y = np.zeros(0, np.float32), np.zeros(0, np.float32)
        self.figure.title = f"{self.title}: none yet"


def _occupied_range(centres: np.ndarray, fractions: np.ndarray, pad: float, must: Sequence[float] = ()) -> tuple:
    """The x range of the bins that hold anything (whole numbers, ``pad`` on each side), including ``must``."""
    used = centres[fractions > 0]
    values = [*used.tolist(), *must]
    if not values:
        return -1.0, 1.0
    return math.floor(min(values) - pad), math.ceil(max(values) + pad)


class DistributionsView(widgets.VBox):
    """Histograms per layer at one step and log10 update:data over time; ``show_*`` take numpy arrays.

    Each ``show_*`` writes its chart in one go under the view's lock (one writer per widget: the app's draw
    thread). Rows with nothing finite are drawn as empty lines.
    """

    def __init__(self, height: str = "250px", **kwargs: Any) -> None:
        self.activations = _Chart("Activations", "hidden state value", "fraction", height)
        self.gradients = _Chart("Gradients", "log10 |dL/dh|", "fraction", height)
        self.updates = _Chart("Updates", "log10 |ΔW| / std(W)", "fraction", height, reference="x")
        self.update_data = _Chart("Update:data", "step", "log10 std(ΔW)/std(W)", height, reference="y")
        self.state_legend = widgets.HTML("")
        self.weight_legend = widgets.HTML("")
        self.summary = widgets.HTML("")
        self._lock = threading.Lock()
        half = widgets.Layout(flex="1 1 0", min_width="280px")
        row = widgets.Layout(width="100%", flex_flow="row wrap")
        super().__init__(
            [
                widgets.HBox(
                    [widgets.VBox([c.figure], layout=half) for c in (self.activations, self.gradients)], layout=row
                ),
                self.state_legend,
                widgets.HBox(
                    [widgets.VBox([c.figure], layout=half) for c in (self.updates, self.update_data)], layout=row
                ),
                self.weight_legend,
                self.summary,
            ],
            **kwargs,
        )
        self.add_class("gw-distributions")

    def show_activations(
        self,
        names: Sequence[str],
        centres: np.ndarray,
        fractions: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        step: int,
    ) -> None:
        """Linear histograms: ``centres`` and ``fractions`` are (layers, bins); each layer's own bin centres."""
        with self._lock:
            top = float(np.nanmax(fractions)) if fractions.size else 0.0
            low = float(np.nanmin(centres)) if centres.size else -1.0
            high = float(np.nanmax(centres)) if centres.size else 1.0
            pad = max(high - low, 1e-12) * 0.05
            self.activations.draw(
                centres, fractions, (low - pad, high + pad), (0.0, nice_ceiling(top)), f"Activations at step {step}"
            )
            self.state_legend.value = _legend(list(names), "hidden states:")
            self.summary.value = self._summary(names, mean, std)

    def show_gradients(self, names: Sequence[str], centres: np.ndarray, fractions: np.ndarray, step: int) -> None:
        """log10 |dL/dh| histograms over shared bins: ``centres`` (bins,), ``fractions`` (layers, bins)."""
        with self._lock:
            x = np.broadcast_to(centres, fractions.shape)
            top = float(np.nanmax(fractions)) if fractions.size else 0.0
            x_range = _occupied_range(centres, fractions.max(axis=0) if fractions.size else fractions, 0.5)
            self.gradients.draw(x, fractions, x_range, (0.0, nice_ceiling(top)), f"Gradients at step {step}")

    def show_updates(self, names: Sequence[str], centres: np.ndarray, fractions: np.ndarray, step: int) -> None:
        """log10 |dW| / std(W) histograms, one per weight matrix; the dashed line is the ~1e-3 reference."""
        with self._lock:
            x = np.broadcast_to(centres, fractions.shape)
            top = nice_ceiling(float(np.nanmax(fractions)) if fractions.size else 0.0)
            per_bin = fractions.max(axis=0) if fractions.size else fractions
            x_range = _occupied_range(centres, per_bin, 0.5, must=(REFERENCE,))
            self.updates.draw(x, fractions, x_range, (0.0, top), f"Updates at step {step}")
            assert self.updates.reference is not None
            with self.updates.reference.hold_sync():
                self.updates.reference.x = np.array([REFERENCE, REFERENCE], np.float32)
                self.updates.reference.y = np.array([0.0, top], np.float32)
            self.weight_legend.value = _legend(list(names), "weights (update charts; dashed: 1e-3):")

    def show_update_data(self, names: Sequence[str], steps: np.ndarray, values: np.ndarray) -> None:
        """log10 update:data, ``values`` (points, weights) at ``steps``; a line per weight, -3 dashed."""
        with self._lock:
            if len(steps) == 0:
                return
            finite = values[np.isfinite(values)]
            low = min(float(finite.min()) if finite.size else REFERENCE, REFERENCE) - 0.5
            high = max(float(finite.max()) if finite.size else REFERENCE, REFERENCE) + 0.5
            first, last = float(steps[0]), float(max(steps[-1], steps[0] + 1))
            y = np.asarray(values, dtype=np.float64).T
            x = np.broadcast_to(np.asarray(steps, dtype=np.float64), y.shape)
            self.update_data.draw(
                x, y, (first, last), (math.floor(low), math.ceil(high)), "Update:data over time (log10)"
            )
            assert self.update_data.reference is not None
            with self.update_data.reference.hold_sync():
                self.update_data.reference.x = np.array([first, last], np.float32)
                self.update_data.reference.y = np.array([REFERENCE, REFERENCE], np.float32)

    def show_unmeasured(self, reason: str) -> None:
        """The hidden-state charts say why they stay empty (e.g. a recurrent cell keeps its states inside)."""
        with self._lock:
            for chart in (self.activations, self.gradients):
                title = f"{chart.title}: {reason}"
                if chart.figure.title != title:
                    chart.figure.title = title

    @staticmethod
    def _summary(names: Sequence[str], mean: np.ndarray, std: np.ndarray) -> str:
        rows = list(zip(names, mean, std, strict=True))
        parts = [f"{html.escape(name)}: mean {m:+.2f}, std {s:.2f}" for name, m, s in rows]
        if len(parts) > MAX_SUMMARY:
            half = MAX_SUMMARY // 2
            parts = [*parts[:half], f"… {len(parts) - 2 * half} more …", *parts[-half:]]
        return "<div class='gw-key'>" + " · ".join(parts) + "</div>"

    def clear(self) -> None:
        """Back to empty charts (a new run)."""
        with self._lock:
            for chart in (self.activations, self.gradients, self.updates, self.update_data):
                chart.clear()
            self.state_legend.value = self.weight_legend.value = self.summary.value = ""

"""``LossCurve``: training loss (one or more runs) and test loss over the recent steps.

Only a bounded, downsampled window is sent: a curve that grows with the run would make every frame bigger.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from .style import AXIS_LABEL_STYLE, TICK_STYLE, TITLE_STYLE

__all__ = ["SERIES_COLORS", "LossCurve", "downsample"]

SERIES_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
TEST_COLOR = "#ff7f0e"
MAX_POINTS = 200


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points: means over equal bins of consecutive points (the last bin may be short).

    Averaging rather than picking every k-th point keeps the curve's level honest when the loss is noisy.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n <= max_points:
        return x, y
    size = int(np.ceil(n / max_points))
    cut = (n // size) * size
    xs = [x[:cut].reshape(-1, size).mean(axis=1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN bin (diverged run) stays NaN: not drawn
        ys = [np.nanmean(y[:cut].reshape(-1, size), axis=1)]
        if cut < n:
            xs.append(x[cut:].mean(keepdims=True))
            ys.append(np.nanmean(y[cut:], keepdims=True))
    return np.concatenate(xs), np.concatenate(ys)


class LossCurve(widgets.VBox):
    """Train loss per series (``labels``), and the test loss (dashed), against the step number."""

    def __init__(
        self,
        labels: Sequence[str] = ("train",),
        title: str = "Loss",
        height: str = "320px",
        show_test: bool = True,
        **kwargs: Any,
    ) -> None:
        if not 1 <= len(labels) <= len(SERIES_COLORS):
            raise ValueError(f"labels must name 1 to {len(SERIES_COLORS)} series, got {list(labels)}")
        self.scale_x = bq.LinearScale()
        # Linear with the front end choosing the domain: no scale or tick messages per frame. (Changing a
        # domain while Voila is still creating the figure can break its axes in bqplot 0.13.)
        self.scale_y = bq.LinearScale()
        scales = {"x": self.scale_x, "y": self.scale_y}
        self.lines = [
            bq.Lines(
                x=np.zeros(0),
                y=np.zeros(0),
                scales=scales,
                colors=[color],
                labels=[label],
                display_legend=len(labels) > 1 or show_test,
                stroke_width=2.5,
            )
            for label, color in zip(labels, SERIES_COLORS, strict=False)
        ]
        # No markers: a marked line makes the figure recompute paddings, which in bqplot 0.13 can reach an
        # axis view that is not rendered yet and break the figure (seen in Voila with frames streaming in).
        self.test = bq.Lines(
            x=np.zeros(0),
            y=np.zeros(0),
            scales=scales,
            colors=[TEST_COLOR],
            labels=["test"],
            line_style="dashed",
            stroke_width=2.5,
            display_legend=True,
        )
        self.show_test = show_test
        axis_x = bq.Axis(scale=self.scale_x, label="step", tick_style=TICK_STYLE, num_ticks=5, tick_format="d")
        self.axis_y = axis_y = bq.Axis(
            scale=self.scale_y,
            orientation="vertical",
            label="loss",
            tick_style=TICK_STYLE,
            tick_format=".3g",
            num_ticks=5,
            label_offset="58px",
        )
        for axis in (axis_x, axis_y):
            axis.label_color = "#333"
        self.figure = bq.Figure(
            marks=[*self.lines, *([self.test] if show_test else [])],
            axes=[axis_x, axis_y],
            title=title,
            title_style=TITLE_STYLE,
            legend_location="top-right",
            legend_text={"font-size": AXIS_LABEL_STYLE["font-size"]},
            fig_margin={"top": 44, "bottom": 50, "left": 78, "right": 30},
            layout=widgets.Layout(width="100%", height=height, min_width="280px"),
        )
        self._lock = threading.Lock()
        super().__init__([self.figure], **kwargs)

    def show(
        self,
        steps: Sequence[np.ndarray],
        losses: Sequence[np.ndarray],
        test_steps: np.ndarray | None = None,
        test_loss: np.ndarray | None = None,
    ) -> None:
        """One array pair per series (bounded windows); each mark gets at most one message."""
        series = [(line, *downsample(x, y)) for line, x, y in zip(self.lines, steps, losses, strict=False)]
        if self.show_test and test_steps is not None and test_loss is not None:
            series.append((self.test, *downsample(test_steps, test_loss, MAX_POINTS // 2)))
        with self._lock:
            for mark, x, y in series:
                with mark.hold_sync():
                    mark.x = x.astype(np.float32)
                    mark.y = y.astype(np.float32)

    def clear(self) -> None:
        with self._lock:
            for mark in (*self.lines, self.test):
                with mark.hold_sync():
                    mark.x, mark.y = np.zeros(0, np.float32), np.zeros(0, np.float32)

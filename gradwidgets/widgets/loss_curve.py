"""``LossCurve``: training loss (one or more runs) and test loss over the recent steps.

Only a bounded, downsampled window is sent: a curve that grows with the run would make every frame bigger.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from .figures import chart_axis, chart_figure, legend_html, nice_ceiling, nice_ticks

__all__ = ["SERIES_COLORS", "LossCurve", "downsample"]

SERIES_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
TEST_COLOR = "#ff7f0e"
MAX_POINTS = 150
"""Points per drawn loss series: ~3 px apart on the chart, ~1.2 kB a message."""
MIN_STEP_SPAN = 10
FLOOR_PAD = 0.05
"""The step axis spans at least this many steps, so its integer ticks never repeat ("0 0 0 1 1")."""


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
    """Train loss per series (``labels``), and the test loss (dashed), against the step number.

    The axes have explicit, rarely changing ends (0 to a 1-2-5 ceiling): a loss that sits at ln 2 for a
    vanishing net would otherwise get an auto-range of 0.6931 to 0.6932 and ticks that all read "0.693". The
    legend is an HTML row under the plot (it cannot cover the curves); an empty curve shows no axes at all.

    ``empty_title`` is the title before the first points (default ``"<title>: none yet"``). A curve that gets
    points as soon as it is displayed passes ``title`` itself: bqplot 0.13's figure view reads the title when it
    starts rendering and listens for changes only once its marks are drawn, so a change in between never shows
    (seen in JupyterLab: "none yet" over a full curve).
    """

    def __init__(
        self,
        labels: Sequence[str] = ("train",),
        title: str = "Loss",
        height: str = "320px",
        show_test: bool = True,
        empty_title: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not 1 <= len(labels) <= len(SERIES_COLORS):
            raise ValueError(f"labels must name 1 to {len(SERIES_COLORS)} series, got {list(labels)}")
        # No padding: bqplot pads a scale for its marks by default, which turns 0..1 into -0.033..1.03.
        self.scale_x = bq.LinearScale(min=0.0, max=float(MIN_STEP_SPAN), allow_padding=False)
        self.scale_y = bq.LinearScale(min=-FLOOR_PAD, max=1.0, allow_padding=False)
        scales = {"x": self.scale_x, "y": self.scale_y}
        # No markers: a marked line makes the figure recompute paddings, which in bqplot 0.13 can reach an
        # axis view that is not rendered yet and break the figure (seen in Voila with frames streaming in).
        self.lines = [
            bq.Lines(x=np.zeros(0), y=np.zeros(0), scales=scales, colors=[color], labels=[label], stroke_width=2.5)
            for label, color in zip(labels, SERIES_COLORS, strict=False)
        ]
        # Only made when shown: a mark outside the figure would be missed by whoever closes the figure's tree.
        self.test: bq.Lines | None = (
            bq.Lines(
                x=np.zeros(0),
                y=np.zeros(0),
                scales=scales,
                colors=[TEST_COLOR],
                labels=["test"],
                line_style="dashed",
                stroke_width=2.5,
            )
            if show_test
            else None
        )
        self.show_test = show_test
        self.axis_x = chart_axis(self.scale_x, "step", tick_format="d", visible=False)
        self.axis_y = chart_axis(
            self.scale_y, "loss", vertical=True, tick_format=".3~g", label_offset="52px", visible=False
        )
        self.title = title
        self.empty_title = f"{title}: none yet" if empty_title is None else empty_title
        self.note = ""
        self.figure = chart_figure(
            [*self.lines, *([self.test] if self.test is not None else [])],
            [self.axis_x, self.axis_y],
            self._empty_title(),
            height,
            min_width="280px",
            margin={"bottom": 50, "left": 72, "right": 24},
        )
        entries: list[tuple[str, str, str]] = [
            (label, color, "solid") for label, color in zip(labels, SERIES_COLORS, strict=False)
        ]
        if show_test:
            entries.append(("test", TEST_COLOR, "dashed"))
        self.legend = widgets.HTML(legend_html(entries) if len(entries) > 1 else "")
        self._lock = threading.Lock()
        self._x_range = (0.0, float(MIN_STEP_SPAN))
        self._y_range = (-FLOOR_PAD, 1.0)
        self._empty = True
        self._sent: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._set_ticks()
        super().__init__([self.figure, self.legend], **kwargs)

    def _empty_title(self) -> str:
        return self.empty_title

    def _titled(self) -> str:
        return f"{self.title} · {self.note}" if self.note else self.title

    def set_note(self, note: str) -> None:
        """A word in the title about this run, e.g. ``"restarted: activation changed"`` (empty: none)."""
        with self._lock:
            self.note = note
            if not self._empty:
                self.figure.title = self._titled()

    def show(
        self,
        steps: Sequence[np.ndarray],
        losses: Sequence[np.ndarray],
        test_steps: np.ndarray | None = None,
        test_loss: np.ndarray | None = None,
    ) -> None:
        """One array pair per series (bounded windows); each mark gets at most one message, none when its
        points did not change (the test loss is measured less often than the training loss is drawn)."""
        series = [(line, *downsample(x, y)) for line, x, y in zip(self.lines, steps, losses, strict=False)]
        if self.test is not None and test_steps is not None and test_loss is not None:
            series.append((self.test, *downsample(test_steps, test_loss, MAX_POINTS // 2)))
        with self._lock:
            if not any(len(x) for _, x, _ in series):
                return
            self._fit([x for _, x, _ in series], [y for _, _, y in series])
            for mark, x, y in series:
                x, y = x.astype(np.float32), y.astype(np.float32)
                last = self._sent.get(id(mark))
                if last is not None and np.array_equal(last[0], x) and np.array_equal(last[1], y, equal_nan=True):
                    continue
                self._sent[id(mark)] = (x, y)
                with mark.hold_sync():
                    mark.x, mark.y = x, y
            if self._empty:
                self._empty = False
                self.axis_x.visible = self.axis_y.visible = True
                self.figure.title = self._titled()

    def _fit(self, xs: list[np.ndarray], ys: list[np.ndarray]) -> None:
        """Move an axis end only when the data leaves it (few scale messages, steady ticks)."""
        x = np.concatenate([np.asarray(v, np.float64) for v in xs])
        y = np.concatenate([np.asarray(v, np.float64) for v in ys])
        first, last = float(np.min(x)), float(np.max(x))
        low_x, high_x = self._x_range
        if first < low_x or last > high_x or first > low_x + 0.5 * (high_x - low_x):
            span = nice_ceiling(max(last - first, MIN_STEP_SPAN))
            low_x = math.floor(first / (span / 10)) * (span / 10)
            high_x = low_x + nice_ceiling(max(last - low_x, MIN_STEP_SPAN))
            self._set_range(self.scale_x, (low_x, high_x))
            self.axis_x.tick_values = nice_ticks(low_x, high_x, integer=True)
            self._x_range = (low_x, high_x)
        finite = y[np.isfinite(y)]
        if len(finite):
            high_y = max(nice_ceiling(float(finite.max())), self._y_range[1]) if finite.max() > 0 else 1.0
            # 5 % below zero: the "0" tick then sits above the corner, clear of the step axis' first label.
            low_y = -nice_ceiling(-float(finite.min())) if finite.min() < 0 else -FLOOR_PAD * high_y
            if (low_y, high_y) != self._y_range:
                self._set_range(self.scale_y, (low_y, high_y))
                self.axis_y.tick_values = nice_ticks(low_y, high_y, count=6)
                self._y_range = (low_y, high_y)

    def _set_ticks(self) -> None:
        self.axis_x.tick_values = nice_ticks(*self._x_range, integer=True)
        self.axis_y.tick_values = nice_ticks(*self._y_range, count=6)

    @staticmethod
    def _set_range(scale: bq.LinearScale, bounds: tuple[float, float]) -> None:
        with scale.hold_sync():
            scale.min, scale.max = float(bounds[0]), float(bounds[1])

    def clear(self) -> None:
        """Back to the empty state (a new run): no curves, no axes."""
        with self._lock:
            for mark in (*self.lines, *([self.test] if self.test is not None else [])):
                with mark.hold_sync():
                    mark.x, mark.y = np.zeros(0, np.float32), np.zeros(0, np.float32)
            self._sent.clear()
            self._empty = True
            self.axis_x.visible = self.axis_y.visible = False
            self._x_range, self._y_range = (0.0, float(MIN_STEP_SPAN)), (-FLOOR_PAD, 1.0)
            self._set_range(self.scale_x, self._x_range)
            self._set_range(self.scale_y, self._y_range)
            self._set_ticks()
            self.figure.title = self._empty_title()

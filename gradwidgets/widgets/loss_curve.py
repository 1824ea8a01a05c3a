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

from .figures import chart_axis, chart_figure, legend_html, nice_ceiling, nice_step, nice_ticks

__all__ = ["SERIES_COLORS", "LossCurve", "downsample", "linear_loss_range", "log_loss_range"]

SERIES_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
TEST_COLOR = "#ff7f0e"
MAX_POINTS = 150
"""Points per drawn loss series: ~3 px apart on the chart, ~1.2 kB a message."""
MIN_STEP_SPAN = 10
"""The step axis spans at least this many steps, so its integer ticks never repeat ("0 0 0 1 1")."""
FLOOR_PAD = 0.05
"""The linear axis starts this fraction of its span below zero: the "0" tick sits clear of the step axis."""
SHRINK_BELOW = 0.5
"""The linear axis shrinks once the window's largest loss falls below this fraction of its top (hysteresis:
a noisy loss does not make the axis twitch, a loss that dropped gets the room back)."""
TICKS = 6
X_TICKS = 4
"""Step ticks: "0 500 1000" stays legible in a narrow column, where "0 200 400 600 800 1000" runs together."""


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


def linear_loss_range(smallest: float, largest: float) -> tuple[float, float]:
    """A linear axis for losses in ``[smallest, largest]``: from zero (a little below, see :data:`FLOOR_PAD`) to
    the next round step above ``largest``.

    Zero stays on the axis so that a loss stuck at ln 2 reads as a flat line, not as noise magnified to fill
    the plot (an auto-range of 0.6931..0.6932 would print "0.693" on every tick); the top follows the data,
    so a drop from 1.5 to 0.6 fills the plot even if the run started at 23.
    """
    top = max(abs(largest), abs(smallest), 1e-12)
    step = nice_step(top, 2 * TICKS)  # ends on a finer grid than the ticks: little empty space above the curve
    headroom = 1 + FLOOR_PAD  # the top clears the largest loss, so noise around it does not move the axis
    high = math.ceil(largest * headroom / step - 1e-9) * step if largest > 0 else 0.0
    low = math.floor(smallest * headroom / step + 1e-9) * step if smallest < 0 else 0.0
    if high <= low:
        high = low + step
    if low == 0.0:
        low = -FLOOR_PAD * high
    return float(low), float(high)


def log_loss_range(smallest: float, largest: float) -> tuple[float, float]:
    """Whole decades around the positive losses in ``[smallest, largest]`` (at least one decade)."""
    low_exp = math.floor(math.log10(max(smallest, 1e-30)))
    high_exp = max(math.ceil(math.log10(max(largest, 1e-30))), low_exp + 1)
    return 10.0**low_exp, 10.0**high_exp


def log_ticks(low: float, high: float) -> np.ndarray:
    """1-2-5 ticks for up to two decades, powers of ten (every k-th, at most 7) for more."""
    low_exp, high_exp = round(math.log10(low)), round(math.log10(high))
    if high_exp - low_exp <= 2:
        ticks = [m * 10.0**e for e in range(low_exp, high_exp + 1) for m in (1, 2, 5)]
        return np.array([t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)])
    every = max(1, math.ceil((high_exp - low_exp + 1) / 7))
    return np.array([10.0**e for e in range(low_exp, high_exp + 1, every)])


class LossCurve(widgets.VBox):
    """Train loss per series (``labels``), and the test loss (dashed), against the step number.

    The y-axis follows the loss in the window drawn (:func:`linear_loss_range`: zero to a round step above the
    largest loss, shrinking when the loss drops) or, with ``log=True`` or the "log scale" box under the plot,
    spans whole decades (:func:`log_loss_range`), where a drop from 1.5 to 0.6 is as visible as one from 23 to
    9. Ends move only when the data leaves them or shrank well inside them, so the ticks stay steady. The
    legend is an HTML row under the plot (it cannot cover the curves); an empty curve shows no axes and no
    legend at all.

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
        log: bool = False,
        min_width: str = "280px",
        **kwargs: Any,
    ) -> None:
        if not 1 <= len(labels) <= len(SERIES_COLORS):
            raise ValueError(f"labels must name 1 to {len(SERIES_COLORS)} series, got {list(labels)}")
        if not isinstance(log, bool):
            raise ValueError(f"log must be True or False, got {log!r}")
        # No padding: bqplot pads a scale for its marks by default, which turns 0..1 into -0.033..1.03.
        self.scale_x = bq.LinearScale(min=0.0, max=float(MIN_STEP_SPAN), allow_padding=False)
        self.scale_y = bq.LinearScale(min=-FLOOR_PAD, max=1.0, allow_padding=False)
        self.scale_y_log = bq.LogScale(min=0.1, max=10.0, allow_padding=False)
        scales = {"x": self.scale_x, "y": self.scale_y_log if log else self.scale_y}
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
            scales["y"], "loss", vertical=True, tick_format=".3~g", label_offset="52px", visible=False
        )
        self.title = title
        self.empty_title = f"{title}: none yet" if empty_title is None else empty_title
        self.note = ""
        self.figure = chart_figure(
            [*self.lines, *([self.test] if self.test is not None else [])],
            [self.axis_x, self.axis_y],
            self._empty_title(),
            height,
            min_width=min_width,
            margin={"top": 52, "bottom": 50, "left": 72, "right": 24},  # the title clears the top tick
        )
        entries: list[tuple[str, str, str]] = [
            (label, color, "solid") for label, color in zip(labels, SERIES_COLORS, strict=False)
        ]
        if show_test:
            entries.append(("test", TEST_COLOR, "dashed"))
        self._legend_markup = legend_html(entries) if len(entries) > 1 else ""
        self.legend = widgets.HTML("")  # filled with the first points: an empty chart shows no key
        self.log_toggle = widgets.Checkbox(
            value=log, description="log scale", indent=False, layout=widgets.Layout(width="auto", margin="0 0 0 12px")
        )
        self.key_row = widgets.HBox(
            [self.legend, self.log_toggle],
            layout=widgets.Layout(width="100%", align_items="center", visibility="hidden"),
        )
        self.key_row.add_class("gw-loss-key")
        self._lock = threading.RLock()
        self._log = log
        self._x_range = (0.0, float(MIN_STEP_SPAN))
        self._y_range = self._empty_y_range()
        self._empty = True
        self._sent: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._set_ticks()
        self.log_toggle.observe(self._toggled, "value")
        super().__init__([self.figure, self.key_row], **kwargs)

    @property
    def log(self) -> bool:
        """Whether the loss axis is logarithmic (the "log scale" box; settable from code)."""
        return self._log

    @log.setter
    def log(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"log must be True or False, got {value!r}")
        self.log_toggle.value = value  # the observer switches the axis

    @property
    def y_range(self) -> tuple[float, float]:
        """The loss axis' current ends (of the log scale when ``log``)."""
        return self._y_range

    @property
    def active_scale_y(self) -> bq.Scale:
        return self.scale_y_log if self._log else self.scale_y

    def _empty_y_range(self) -> tuple[float, float]:
        return (0.1, 10.0) if self._log else (-FLOOR_PAD, 1.0)

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
            for mark, x, y in series:
                x, y = x.astype(np.float32), y.astype(np.float32)
                last = self._sent.get(id(mark))
                if last is not None and np.array_equal(last[0], x) and np.array_equal(last[1], y, equal_nan=True):
                    continue
                self._sent[id(mark)] = (x, y)
                self._send(mark, x, y)
            self._fit()
            if self._empty:
                self._empty = False
                self.axis_x.visible = self.axis_y.visible = True
                self.legend.value = self._legend_markup
                self.key_row.layout.visibility = "visible"
                self.figure.title = self._titled()

    def _send(self, mark: bq.Lines, x: np.ndarray, y: np.ndarray) -> None:
        if self._log:  # a log axis cannot place zero or a negative loss: leave such points undrawn
            y = np.where(y > 0, y, np.float32(np.nan)).astype(np.float32)
        with mark.hold_sync():
            mark.x, mark.y = x, y

    def _marks(self) -> list[bq.Lines]:
        return [*self.lines, *([self.test] if self.test is not None else [])]

    def _fit(self) -> None:
        """Fit both axes to every series now drawn; an end moves only when the data leaves it (or, on the
        linear loss axis, when the loss shrank to under half of it): few scale messages, steady ticks."""
        drawn = [self._sent[id(mark)] for mark in self._marks() if id(mark) in self._sent]
        drawn = [(x, y) for x, y in drawn if len(x)]
        if not drawn:
            return
        x = np.concatenate([np.asarray(v, np.float64) for v, _ in drawn])
        y = np.concatenate([np.asarray(v, np.float64) for _, v in drawn])
        first, last = float(np.min(x)), float(np.max(x))
        low_x, high_x = self._x_range
        if first < low_x or last > high_x or first > low_x + 0.5 * (high_x - low_x):
            span = nice_ceiling(max(last - first, MIN_STEP_SPAN))
            low_x = math.floor(first / (span / 10)) * (span / 10)
            high_x = low_x + nice_ceiling(max(last - low_x, MIN_STEP_SPAN))
            self._set_range(self.scale_x, (low_x, high_x))
            self.axis_x.tick_values = nice_ticks(low_x, high_x, count=X_TICKS, integer=True)
            self._x_range = (low_x, high_x)
        finite = y[np.isfinite(y) & (y > 0)] if self._log else y[np.isfinite(y)]
        if not len(finite):
            return
        smallest, largest = float(finite.min()), float(finite.max())
        low_y, high_y = self._y_range
        if self._log:  # whole decades: it shrinks only when a decade has emptied
            target = log_loss_range(smallest, largest)
            moved = target[0] > low_y or target[1] < high_y or smallest < low_y or largest > high_y
        else:
            target = linear_loss_range(smallest, largest)
            moved = smallest < low_y or largest > high_y or largest < SHRINK_BELOW * high_y or target[0] > low_y
        if moved and target != self._y_range:
            self._y_range = target
            self._set_range(self.active_scale_y, target)
            self._set_y_ticks()

    def _set_y_ticks(self) -> None:
        low, high = self._y_range
        self.axis_y.tick_values = log_ticks(low, high) if self._log else nice_ticks(low, high, count=TICKS)

    def _set_ticks(self) -> None:
        self.axis_x.tick_values = nice_ticks(*self._x_range, count=X_TICKS, integer=True)
        self._set_y_ticks()

    def _toggled(self, change: dict) -> None:
        """Switch the loss axis between linear and log, and redraw what is shown on it."""
        with self._lock:
            log = bool(change["new"])
            if log == self._log:
                return
            self._log = log
            scale = self.active_scale_y
            for mark in self._marks():
                mark.scales = {"x": self.scale_x, "y": scale}
            self.axis_y.scale = scale
            self._y_range = self._empty_y_range()
            self._set_range(scale, self._y_range)
            for mark in self._marks():
                sent = self._sent.get(id(mark))
                if sent is not None:
                    self._send(mark, *sent)
            self._set_y_ticks()
            self._fit()

    @staticmethod
    def _set_range(scale: bq.Scale, bounds: tuple[float, float]) -> None:
        with scale.hold_sync():
            scale.min, scale.max = float(bounds[0]), float(bounds[1])

    def clear(self) -> None:
        """Back to the empty state (a new run): no curves, no axes, no legend; the log choice stays."""
        with self._lock:
            for mark in self._marks():
                with mark.hold_sync():
                    mark.x, mark.y = np.zeros(0, np.float32), np.zeros(0, np.float32)
            self._sent.clear()
            self._empty = True
            self.axis_x.visible = self.axis_y.visible = False
            self.key_row.layout.visibility = "hidden"
            self.legend.value = ""
            self._x_range, self._y_range = (0.0, float(MIN_STEP_SPAN)), self._empty_y_range()
            self._set_range(self.scale_x, self._x_range)
            self._set_range(self.active_scale_y, self._y_range)
            self._set_ticks()
            self.figure.title = self._empty_title()

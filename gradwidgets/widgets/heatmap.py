"""``GradientHeatmap``: layers (or blocks) x recent steps, coloured by log10 of the gradient norm.

It shows *when* a layer went quiet or blew up. bqplot's ``ColorScale`` is linear only, so the view sends
``log10`` values and labels the colour bar that way, with whole-decade ticks at even steps. The window is
bounded (the caller passes the last few hundred steps) and binned to at most ``max_columns`` columns: a frame
never grows with the run. Rows carry their names (``h.0`` ... ``h.11``) when the caller gives them and they fit,
numbers otherwise.
"""

from __future__ import annotations

import math
import threading
import warnings
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from .figures import chart_axis, chart_figure, nice_ticks
from .log_range import LogRange
from .style import KIND_COLORS, TICK_STYLE

__all__ = ["GradientHeatmap", "bin_columns", "color_ticks"]

MAX_COLUMNS = 50
MAX_ROW_LABELS = 8
MAX_COLOR_LABELS = 5
"""The colour bar is short (about a third of the plot width): more labels than this collide."""
MAX_NAMED_ROWS = 16
"""Rows are labelled by name up to this many (a 12-block GPT's 14 bars), by number beyond."""
NAME_PIXELS = 8
"""Approximate width of one character of a row name, for the left margin the names need."""
NAMED_ROW_PIXELS = 18
"""Height per named row: the chart grows to give each name a line of its own."""
FRAME_PIXELS = 140
"""The figure's height outside the grid (title, step axis, colour bar)."""
EMPTY_TITLE = "Recent gradient norms: none yet"


def bin_columns(steps: np.ndarray, values: np.ndarray, max_columns: int = MAX_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """``values`` is ``[steps, layers]``; returns bin start steps and ``[layers, bins]`` of mean log10 values.

    The mean of logs (a geometric mean) is the honest average on a log colour scale. Zeros become ``-inf``
    (the caller clamps them to the floor); NaN stays NaN.
    """
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=np.float64)
    n = len(steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(values)
    if n == 0:
        return np.zeros(0), np.zeros((values.shape[1] if values.ndim == 2 else 0, 0))
    size = max(1, math.ceil(n / max_columns))
    starts = np.arange(0, n, size)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        columns = [np.mean(logs[s : s + size], axis=0) for s in starts]
    return steps[starts].astype(np.float64), np.stack(columns, axis=1)


def color_ticks(low: int, high: int, max_ticks: int = MAX_COLOR_LABELS) -> tuple[int, int, int]:
    """A whole-decade colour range ``(low, high)`` widened (downwards) until ticks at an even whole-decade step
    fit, and the tick count: bqplot's colour axis spaces ``num_ticks`` ticks evenly from end to end (its
    ``tick_values`` are ignored), so ``-4 .. 1`` with 4 ticks read "-4 -2 -1 1"."""
    low, high = int(low), int(max(high, low + 1))
    for widen in range(max_ticks):
        span = high - (low - widen)
        for intervals in range(max_ticks - 1, 0, -1):
            if span % intervals == 0 and (intervals >= 2 or span <= 2):
                return low - widen, high, intervals + 1
    return low, high, 2


class GradientHeatmap(widgets.VBox):
    """Rows are layers (input at the top), columns recent steps; colour is log10 of the gradient norm."""

    def __init__(self, title: str = "Recent gradient norms", height: str = "320px", **kwargs: Any) -> None:
        self.scale_row = bq.LinearScale(reverse=True)  # an ordinal row axis ignores tick_values (crowded labels)
        self.scale_column = bq.LinearScale()
        self.scale_color = bq.ColorScale(scheme="viridis", min=-3.0, max=1.0)
        # bqplot 0.13's front end throws ("getScales is not a function") on an empty colour grid and never draws
        # the figure, and squeezes a 1x1 grid to a scalar: start from a hidden 2x2 placeholder instead.
        self.heat = bq.GridHeatMap(
            row=np.arange(2.0),
            column=np.arange(2.0),
            color=np.full((2, 2), np.nan),
            visible=False,
            scales={"row": self.scale_row, "column": self.scale_column, "color": self.scale_color},
            null_color=KIND_COLORS["nonfinite"],
            stroke=None,
        )
        # Row names: a label mark left of the grid on the grid's own scales (an ordinal row axis would ignore the
        # linear rows the cells sit on).
        self.row_names = bq.Label(
            x=np.zeros(0),
            y=np.zeros(0),
            text=[],
            scales={"x": self.scale_column, "y": self.scale_row},
            colors=["var(--gw-text)"],
            default_size=13,
            align="end",
            x_offset=-6,
            y_offset=4,
            apply_clip=False,
        )
        # Axes stay hidden until there is a grid to label: an empty chart must not show placeholder ticks.
        self.axis_row = chart_axis(
            self.scale_row, "layer", vertical=True, tick_format="d", label_offset="40px", visible=False
        )
        self.axis_column = chart_axis(self.scale_column, "step", tick_format="d", visible=False)
        # A vertical colour bar on the right renders squashed in bqplot 0.13 (seen in Voila + Chromium); a
        # horizontal one under the step axis renders well.
        self.axis_color = bq.ColorAxis(
            scale=self.scale_color,
            orientation="horizontal",
            side="bottom",
            label="log₁₀ ‖g‖",
            tick_style=TICK_STYLE,
            tick_format="d",
            num_ticks=MAX_COLOR_LABELS,  # bqplot 0.13's colour axis ignores later tick_values: d3 picks them
            offset={"value": 0},
            visible=False,
        )
        self.title = title
        self._height = height
        self.figure = chart_figure(
            [self.heat, self.row_names],
            [self.axis_row, self.axis_column, self.axis_color],
            EMPTY_TITLE,
            height,
            min_width="280px",
            margin={"bottom": 92, "left": 56, "right": 24},
        )
        self.range = LogRange()
        self._rows: tuple[int, tuple[str, ...]] = (-1, ())
        self._lock = threading.Lock()
        super().__init__([self.figure], **kwargs)

    def new_run(self) -> None:
        with self._lock:
            self.range.reset()

    def clear(self) -> None:
        """Back to the empty state (a new run): no grid, no axes, a title that says what will come."""
        with self._lock:
            self.range.reset()
            with self.heat.hold_sync():
                self.heat.visible = False
            for axis in (self.axis_row, self.axis_column, self.axis_color):
                axis.visible = False
            with self.row_names.hold_sync():
                self.row_names.x, self.row_names.y, self.row_names.text = np.zeros(0), np.zeros(0), []
            self._rows = (-1, ())
            self.figure.title = EMPTY_TITLE

    def show(self, steps: np.ndarray, grad_norm: np.ndarray, names: Any = None) -> None:
        """``grad_norm`` is ``[steps, layers]`` for the recent window, oldest first; ``names`` (one per layer)
        label the rows when they fit."""
        with self._lock:
            grad_norm = np.asarray(grad_norm, dtype=np.float64)
            if grad_norm.ndim != 2 or not len(grad_norm):
                return
            columns, logs = bin_columns(steps, grad_norm)
            if min(logs.shape) < 2:
                return  # bqplot squeezes a single row or column into 1-D and then refuses it
            rescaled = self.range.fit(grad_norm)
            low, high = (math.log10(b) for b in self.range.bounds)
            logs = np.where(np.isneginf(logs) | (logs < low), low, np.minimum(logs, high))
            rows = logs.shape[0]
            if rescaled:
                color_low, color_high, count = color_ticks(round(low), round(high))
                with self.scale_color.hold_sync():
                    self.scale_color.min, self.scale_color.max = float(color_low), float(color_high)
                self.axis_color.num_ticks = count
            labels = tuple(str(n) for n in names) if names is not None and len(names) == rows else ()
            if len(labels) > MAX_NAMED_ROWS:
                labels = ()
            if (rows, labels) != self._rows:
                self._rows = (rows, labels)
                step = max(1, math.ceil(rows / MAX_ROW_LABELS))
                self.axis_row.tick_values = np.zeros(0) if labels else np.arange(1, rows + 1)[::step]
                self.axis_row.visible = not labels  # the names stand in for the row numbers
                grid = len(labels) * NAMED_ROW_PIXELS + FRAME_PIXELS
                base = int(self._height[:-2]) if self._height.endswith("px") and self._height[:-2].isdigit() else 0
                self.figure.layout.height = f"{max(base, grid)}px" if labels and base else self._height
                names_width = max((len(n) for n in labels), default=0) * NAME_PIXELS
                self.figure.fig_margin = {**self.figure.fig_margin, "left": max(56, min(220, names_width + 16))}
                with self.scale_row.hold_sync():
                    self.scale_row.min, self.scale_row.max = 0.5, rows + 0.5
            # Explicit domains: the auto domain of a GridHeatMap column scale kept old runs' steps in view.
            width = float(columns[1] - columns[0]) if len(columns) > 1 else 1.0
            low, high = float(columns[0]), float(columns[-1]) + width
            with self.scale_column.hold_sync():
                self.scale_column.min, self.scale_column.max = low, high
            with self.row_names.hold_sync():
                self.row_names.x = np.full(len(labels), low)
                self.row_names.y = np.arange(1, len(labels) + 1, dtype=np.float64)
                self.row_names.text = list(labels)
            ticks = nice_ticks(low, high, count=4, integer=True)
            if not np.array_equal(ticks, self.axis_column.tick_values):
                self.axis_column.tick_values = ticks
            with self.heat.hold_sync(), self.heat.hold_trait_notifications():  # row/column/color validate together
                self.heat.row = np.arange(1, rows + 1) - 0.5  # cells centred on their layer number
                self.heat.column = columns.astype(np.float32)
                self.heat.color = logs.astype(np.float32)
                self.heat.visible = True
            if not self.axis_column.visible:
                for axis in (self.axis_column, self.axis_color):
                    axis.visible = True
                self.figure.title = self.title

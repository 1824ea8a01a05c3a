"""``DecisionBoundary``: a 2-D classifier's p(class 1) on a coarse grid, with the training points over it.

The grid is computed on the trainer's side (:mod:`gradwidgets.core.boundary`); this view only draws plain arrays
(no torch here). A vanishing net colours the whole plane one shade; a net that learns carves the spiral.
"""

from __future__ import annotations

import threading
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from .figures import chart_axis, chart_figure, legend_html, nice_ticks
from .style import KIND_COLORS

__all__ = ["CLASS_COLORS", "DecisionBoundary"]

CLASS_COLORS = ("#1f77b4", "#ff7f0e")
"""The training points of class 0 and class 1."""
SHADES = ["#6baed6", "#f2f2f2", "#fd8d3c"]
"""p(class 1) = 0, 0.5, 1: the class colours, lighter, through a neutral middle where the net cannot decide."""


class DecisionBoundary(widgets.VBox):
    """``show(xs, ys, probability, points_x, points_y, labels, step)`` draws a grid and its points; ``clear()``
    empties it (the Playground hides the view for data without a 2-D picture)."""

    def __init__(self, title: str = "Decision boundary", height: str = "300px", **kwargs: Any) -> None:
        self.title = title
        self.scale_x = bq.LinearScale(min=-1.0, max=1.0, allow_padding=False)
        self.scale_y = bq.LinearScale(min=-1.0, max=1.0, allow_padding=False)
        self.scale_color = bq.ColorScale(colors=SHADES, min=0.0, max=1.0, mid=0.5)
        # bqplot 0.13's front end cannot draw an empty colour grid (see heatmap.py): a hidden 2x2 placeholder.
        self.grid = bq.GridHeatMap(
            row=np.array([-1.0, 0.0]),
            column=np.array([-1.0, 0.0]),
            color=np.full((2, 2), 0.5),
            visible=False,
            scales={"row": self.scale_y, "column": self.scale_x, "color": self.scale_color},
            null_color=KIND_COLORS["nonfinite"],
            stroke=None,
            row_align="start",
            column_align="start",
        )
        scales = {"x": self.scale_x, "y": self.scale_y}
        self.points = [
            bq.Scatter(
                x=np.zeros(0),
                y=np.zeros(0),
                scales=scales,
                colors=[color],
                stroke="white",
                stroke_width=0.5,
                default_size=18,
                visible=False,
            )
            for color in CLASS_COLORS
        ]
        # Round ticks, no axis names: the inputs are the data's two (standardised) features, nothing to read off.
        self.axis_x = chart_axis(self.scale_x, visible=False, tick_format=".2~g")
        self.axis_y = chart_axis(self.scale_y, vertical=True, visible=False, tick_format=".2~g")
        self.figure = chart_figure(
            [self.grid, *self.points],
            [self.axis_x, self.axis_y],
            title,  # short: the column is narrow; the step and the key go under the plot
            height,
            min_width="200px",
            margin={"top": 40, "bottom": 30, "left": 36, "right": 12},
        )
        self.legend = widgets.HTML("")
        self._lock = threading.Lock()
        self._points_sent: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.step: int | None = None
        """The training step of the grid shown (``None``: none)."""
        super().__init__([self.figure, self.legend], **kwargs)

    def show(
        self,
        xs: np.ndarray,
        ys: np.ndarray,
        probability: np.ndarray,
        points_x: np.ndarray,
        points_y: np.ndarray,
        labels: np.ndarray,
        step: int,
    ) -> None:
        """Draw p(class 1) on the grid of cell centres ``xs`` x ``ys`` (``probability[i, j]`` at ``ys[i]``,
        ``xs[j]``) and the points (sent only when they changed: they are the run's training data)."""
        xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
        probability = np.asarray(probability, np.float64)
        if probability.shape != (len(ys), len(xs)) or len(xs) < 2 or len(ys) < 2:
            raise ValueError(f"probability must be [len(ys), len(xs)] with 2+ cells a side, got {probability.shape}")
        half_x, half_y = (xs[1] - xs[0]) / 2, (ys[1] - ys[0]) / 2
        with self._lock:
            for scale, axis, centres, half in (
                (self.scale_x, self.axis_x, xs, half_x),
                (self.scale_y, self.axis_y, ys, half_y),
            ):
                low, high = float(centres[0] - half), float(centres[-1] + half)
                if (scale.min, scale.max) != (low, high):
                    with scale.hold_sync():
                        scale.min, scale.max = low, high
                    axis.tick_values = nice_ticks(low, high, count=4)
            # One message, validated once: bqplot checks row and column against the colour grid's shape.
            with self.grid.hold_sync(), self.grid.hold_trait_notifications():
                self.grid.color = probability.astype(np.float32)
                row, column = (ys - half_y).astype(np.float32), (xs - half_x).astype(np.float32)
                if self.grid.row is None or not np.array_equal(self.grid.row, row):
                    self.grid.row = row  # the cells stay put within a run: sent once, not with every grid
                if self.grid.column is None or not np.array_equal(self.grid.column, column):
                    self.grid.column = column
                self.grid.visible = True
            self._show_points(np.asarray(points_x), np.asarray(points_y), np.asarray(labels))
            if not self.axis_x.visible:
                self.axis_x.visible = self.axis_y.visible = True
            self.step = int(step)
            self.legend.value = legend_html(
                [("class 0", CLASS_COLORS[0]), ("class 1", CLASS_COLORS[1])], lead=f"step {step} · shade: p(class 1) ·"
            )

    def _show_points(self, x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> None:
        sent = self._points_sent
        if sent is not None and all(np.array_equal(a, b) for a, b in zip(sent, (x, y, labels), strict=True)):
            return
        self._points_sent = (x, y, labels)
        for label, mark in enumerate(self.points):
            chosen = labels == label
            with mark.hold_sync():
                mark.x, mark.y = x[chosen].astype(np.float32), y[chosen].astype(np.float32)
                mark.visible = bool(chosen.any())

    def clear(self) -> None:
        """Back to the empty state (a new run)."""
        with self._lock:
            self.grid.visible = False
            for mark in self.points:
                mark.visible = False
            self._points_sent = None
            self.axis_x.visible = self.axis_y.visible = False
            self.legend.value = ""
            self.step = None

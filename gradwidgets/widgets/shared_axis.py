"""``SharedLogAxis``: one log y axis for several bar charts side by side (Compare, RunViewer), so that equal
heights mean equal values. One range (widened only when a value leaves it, see :mod:`.log_range`), one
``bq.LogScale`` every chart draws on, the same decade ticks on each."""

from __future__ import annotations

from collections.abc import Sequence

import bqplot as bq
import numpy as np

from .bars import GradientBars, log_ticks
from .log_range import LogRange

__all__ = ["SharedLogAxis"]


class SharedLogAxis:
    """Hand ``scale`` to each ``GradientBars(scale=...)``; call :meth:`fit` with their values before drawing and
    pass :attr:`bounds` to ``show``; :meth:`reset` when the runs restart."""

    def __init__(self) -> None:
        self.range = LogRange()
        low, high = self.range.bounds
        self.scale = bq.LogScale(min=low, max=high)

    @property
    def bounds(self) -> tuple[float, float]:
        return self.range.bounds

    def reset(self) -> None:
        """Forget the range (new runs, or another quantity): the next ``fit`` sets it afresh."""
        self.range = LogRange()

    def fit(self, charts: Sequence[GradientBars], values: Sequence[np.ndarray]) -> bool:
        """Include ``values`` in the range; when it changed, move the scale and every chart's ticks (True)."""
        if not values or not self.range.fit(*values):
            return False
        low, high = self.range.bounds
        with self.scale.hold_sync():
            self.scale.min, self.scale.max = low, high
        ticks = log_ticks(low, high)
        for chart in charts:
            chart.chart.axis_y.tick_values = ticks
        return True

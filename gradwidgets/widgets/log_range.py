"""The y-range of a log axis: fixed for a run, re-ranged only when values leave it.

A range that follows the data every frame makes bars jump and hides the very thing to see (a layer whose
gradient shrinks 10x looks the same after rescaling). So the range is set from the first reading with a
decade of margin each side, snapped to whole decades, and widened only when a value falls outside it.
Zeros, NaNs and infinities never set the range; views clamp them to the floor and mark them.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LogRange", "clamp_to_range"]

LOWEST = 1e-30
HIGHEST = 1e30
MAX_DECADES = 24
"""A wider axis squeezes every real difference into a few pixels; values below the floor are clamped."""


class LogRange:
    """Whole-decade ``(low, high)`` for a log axis; :meth:`fit` says whether it had to change."""

    def __init__(self, margin_decades: int = 1) -> None:
        self.margin = int(margin_decades)
        self.low: float | None = None
        self.high: float | None = None

    def reset(self) -> None:
        """Forget the range (a new run starts)."""
        self.low = self.high = None

    @property
    def bounds(self) -> tuple[float, float]:
        """The current range, or a neutral ``(1e-3, 1e1)`` before any value was seen."""
        if self.low is None or self.high is None:
            return 1e-3, 1e1
        return self.low, self.high

    def fit(self, *value_arrays: np.ndarray) -> bool:
        """Include these values; return True when the range changed (the view must send new scale bounds)."""
        values = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in value_arrays] or [np.zeros(0)])
        good = values[np.isfinite(values) & (values > 0)]
        if not len(good):
            return False
        smallest, largest = float(good.min()), float(good.max())
        if self.low is not None and self.high is not None and self.low <= smallest and largest <= self.high:
            return False
        low_exp = math.floor(math.log10(max(smallest, LOWEST))) - self.margin
        high_exp = math.ceil(math.log10(min(largest, HIGHEST))) + self.margin
        if self.low is not None and self.high is not None:
            low_exp = min(low_exp, round(math.log10(self.low)))
            high_exp = max(high_exp, round(math.log10(self.high)))
        low_exp = max(low_exp, high_exp - MAX_DECADES, round(math.log10(LOWEST)))
        high_exp = min(max(high_exp, low_exp + 1), round(math.log10(HIGHEST)))
        low, high = 10.0**low_exp, 10.0**high_exp
        changed = (low, high) != (self.low, self.high)
        self.low, self.high = low, high
        return changed


def clamp_to_range(values: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Values safe to draw on a log axis, and a mask of the ones that were not (zero, negative, NaN, inf,
    or outside the range). Bad values sit on the floor so the log scale never sees them."""
    values = np.asarray(values, dtype=np.float64)
    finite_positive = np.isfinite(values) & (values > 0)
    out_of_range = finite_positive & ((values < low) | (values > high))
    drawn = np.where(finite_positive, np.clip(values, low, high), low)
    return drawn, ~finite_positive | out_of_range

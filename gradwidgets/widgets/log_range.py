"""The y-range of a log axis: fixed for a run, re-ranged only when values leave it.

A range that follows the data every frame makes bars jump and hides the very thing to see (a layer whose
gradient shrinks 10x looks the same after rescaling). So the range is set from the first reading with a
decade of margin each side, snapped to whole decades, and widened at once when a value falls outside it.
It also follows the data back: once every reading for ``shrink_after`` fits in a span at least
``SHRINK_SLACK`` decades narrower (an early outlier, a spike that passed), the range shrinks to that span plus
its margin, so bars near 1e-1 are not drawn on an axis from 1e-2 to 1e+6 for the rest of the run.
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
SHRINK_AFTER = 20
"""Readings in a row that must fit a narrower range before the axis shrinks (about 2 s of frames at 10 fps)."""
SHRINK_SLACK = 2
"""Decades of unused axis (both ends together, beyond the margin) that count as a narrower range."""


class LogRange:
    """Whole-decade ``(low, high)`` for a log axis; :meth:`fit` says whether it had to change."""

    def __init__(self, margin_decades: int = 1, shrink_after: int = SHRINK_AFTER) -> None:
        self.margin = int(margin_decades)
        self.shrink_after = int(shrink_after)
        self.low: float | None = None
        self.high: float | None = None
        self._narrow: tuple[int, int] | None = None
        self._narrow_count = 0

    def reset(self) -> None:
        """Forget the range (a new run starts)."""
        self.low = self.high = None
        self._narrow, self._narrow_count = None, 0

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
        want_low = math.floor(math.log10(max(smallest, LOWEST))) - self.margin
        want_high = math.ceil(math.log10(min(largest, HIGHEST))) + self.margin
        if self.low is not None and self.high is not None and self.low <= smallest and largest <= self.high:
            return self._follow_back(want_low, want_high)
        self._narrow, self._narrow_count = None, 0
        low_exp, high_exp = want_low, want_high
        if self.low is not None and self.high is not None:
            low_exp = min(low_exp, round(math.log10(self.low)))
            high_exp = max(high_exp, round(math.log10(self.high)))
        return self._set(low_exp, high_exp)

    def _set(self, low_exp: int, high_exp: int) -> bool:
        low_exp = max(low_exp, high_exp - MAX_DECADES, round(math.log10(LOWEST)))
        high_exp = min(max(high_exp, low_exp + 1), round(math.log10(HIGHEST)))
        low, high = 10.0**low_exp, 10.0**high_exp
        changed = (low, high) != (self.low, self.high)
        self.low, self.high = low, high
        return changed

    def _follow_back(self, want_low: int, want_high: int) -> bool:
        """Values inside the range: count the readings in a row that would fit a narrower one; shrink to the
        span they all fit once there are ``shrink_after`` of them (True then)."""
        assert self.low is not None and self.high is not None
        current_low, current_high = round(math.log10(self.low)), round(math.log10(self.high))
        if (want_low - current_low) + (current_high - want_high) < SHRINK_SLACK:
            self._narrow, self._narrow_count = None, 0
            return False
        if self._narrow is None:
            self._narrow = (want_low, want_high)
        else:
            self._narrow = (min(self._narrow[0], want_low), max(self._narrow[1], want_high))
        self._narrow_count += 1
        if self._narrow_count < self.shrink_after:
            return False
        low_exp, high_exp = self._narrow
        self._narrow, self._narrow_count = None, 0
        return self._set(low_exp, high_exp)


def clamp_to_range(values: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Values safe to draw on a log axis, and a mask of the ones that were not (zero, negative, NaN, inf,
    or outside the range). Bad values sit on the floor so the log scale never sees them."""
    values = np.asarray(values, dtype=np.float64)
    finite_positive = np.isfinite(values) & (values > 0)
    out_of_range = finite_positive & ((values < low) | (values > high))
    drawn = np.where(finite_positive, np.clip(values, low, high), low)
    return drawn, ~finite_positive | out_of_range

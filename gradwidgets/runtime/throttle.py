"""``BudgetThrottle``: how often the monitor may measure and draw without slowing the user's loop.

A fixed "every k-th call" is wrong for someone (a 1 ms step and a 1 s step need different k), so the throttle
works in time: a frame is due when both

* ``1 / fps`` seconds have passed since the last one, and
* the last frame's cost is at most ``budget`` of the wall time since it (cost 3 ms, budget 3% -> wait 100 ms).

The loop then spends at most ``budget`` of its time on monitoring whatever the model size, and a check that is
not due costs one ``time.monotonic()`` call.
"""

from __future__ import annotations

import math
import time

__all__ = ["BudgetThrottle"]


class BudgetThrottle:
    def __init__(self, fps: float = 10.0, budget: float = 0.03) -> None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 30:
            raise ValueError(f"fps must be a number in (0, 30], got {fps!r}")
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
            raise ValueError(f"budget must be a fraction of time in (0, 1], got {budget!r}")
        self.max_fps = float(fps)
        self.budget = float(budget)
        self._next = -math.inf

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self._next

    def spent(self, seconds: float, started: float) -> None:
        """Record that a frame started at ``started`` took ``seconds``; schedules the next one."""
        self._next = started + max(1.0 / self.max_fps, seconds / self.budget)

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

from ..validation import check_limit

__all__ = ["BudgetThrottle"]


class BudgetThrottle:
    def __init__(self, fps: float = 10.0, budget: float = 0.03) -> None:
        self.max_fps: float = check_limit("fps", fps)
        self.budget: float = check_limit("budget", budget)  # a fraction of the loop's wall time
        self._next = -math.inf

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self._next

    def spent(self, seconds: float, started: float) -> None:
        """Record that a frame started at ``started`` took ``seconds``; schedules the next one."""
        self._next = started + max(1.0 / self.max_fps, seconds / self.budget)

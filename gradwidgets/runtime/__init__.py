"""Layer 3, runtime: training off the kernel's main thread (:class:`Runner`: trainer + renderer threads,
one-slot frame mailbox, at most ``fps`` frames a second) and the time-budget throttle the monitor uses.
Knows nothing of widgets: it hands frames to a callback."""

from __future__ import annotations

from .runner import DEFAULT_FPS, MAX_FPS, Runner
from .throttle import BudgetThrottle

__all__ = ["DEFAULT_FPS", "MAX_FPS", "BudgetThrottle", "Runner"]

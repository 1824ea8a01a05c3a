"""``RunRecord``: one step of a run file, typed: what the logger and the exports write and the viewer reads."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..diagnosis import Diagnosis
from ..signals import InstabilityReading
from ..stats import GradientStats

__all__ = ["LAYOUT_FIELDS", "RunRecord", "split_stats"]

LAYOUT_FIELDS = ("names", "kinds", "roles", "blocks", "param_count", "aliases")
"""``GradientStats`` fields that describe the model, not a step: stored once, in the header."""


@dataclass
class RunRecord:
    """One recorded step.

    ``arrays``: the per-layer fields of the reading (``grad_norm``, ``has_grad``, ...) and any other array field of
    :class:`GradientStats`; ``scalars``: its scalar fields (``loss``, ``skipped``, ``grad_scale``, ...);
    ``verdict``: the :class:`Diagnosis` at this step; ``loss_steps``/``losses``: every loss logged since the
    previous record (optimizer steps, counted from 1); ``extra``: other JSON-able facts (``scale``: the
    ``GradScaler``'s loss scale, ``dropped``: records lost to I/O errors before this one).
    ``losses_only``: a record of losses logged after the last step record (no gradients: written by ``close()``).
    ``signals``: the instability readings measured since the previous record (attention logits, entropy, log Z
    per block; :class:`~gradwidgets.core.signals.InstabilityReading`), empty when none were (optional: files
    before them, and models without attention, have none).
    """

    step: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)
    verdict: Diagnosis | None = None
    loss_steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    time: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)
    losses_only: bool = False
    signals: tuple[InstabilityReading, ...] = ()

    @classmethod
    def from_stats(
        cls,
        stats: GradientStats,
        verdict: Diagnosis | None = None,
        loss_steps: Sequence[float] | np.ndarray = (),
        losses: Sequence[float] | np.ndarray = (),
        *,
        moment: float | None = None,
        extra: dict[str, Any] | None = None,
        signals: Sequence[InstabilityReading] = (),
    ) -> RunRecord:
        """The record of a reading: every array and scalar field of the stats (new fields come too)."""
        _, scalars, arrays = split_stats(stats)
        return cls(
            step=int(stats.step),
            arrays=arrays,
            scalars=scalars,
            verdict=verdict,
            loss_steps=np.asarray(loss_steps, dtype=np.float64).reshape(-1),
            losses=np.asarray(losses, dtype=np.float64).reshape(-1),
            time=time.time() if moment is None else float(moment),
            extra=dict(extra or {}),
            signals=tuple(signals),
        )

    @property
    def grad_norm(self) -> np.ndarray:
        return self.arrays["grad_norm"]

    @property
    def skipped(self) -> bool:
        """A step ``GradScaler`` skips, by the probe's rule (``GradientStats.skipped``); files before that was
        the one place it was stored kept the logger's own flag."""
        if "skipped" in self.scalars:
            return bool(self.scalars["skipped"])
        return bool(self.extra.get("skipped", False))

    @property
    def dropped(self) -> int:
        """Records the writer could not write (I/O errors) before this one."""
        value = self.extra.get("dropped", 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0


def split_stats(stats: GradientStats) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """``(layout, scalars, arrays)`` of a reading, found by walking the dataclass's fields (so new ones come too)."""
    layout: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for item in dataclasses.fields(stats):
        value = getattr(stats, item.name)
        if item.name in LAYOUT_FIELDS:
            layout[item.name] = np.asarray(value).tolist() if isinstance(value, np.ndarray) else list(value)
        elif isinstance(value, np.ndarray):
            arrays[item.name] = value
        elif isinstance(value, (bool, int, float, str, np.generic)) or value is None:
            scalars[item.name] = value.item() if isinstance(value, np.generic) else value
    return layout, scalars, arrays

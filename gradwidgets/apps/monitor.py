"""``GradientMonitor``: live gradient bars for *your* training loop, on any ``nn.Module``.

::

    monitor = gw.GradientMonitor(model)
    display(monitor)
    for x, y in loader:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(); loss.backward()
        monitor.update(loss)          # after backward(), before the next zero_grad()
        optimizer.step()

A looping cell blocks the kernel from handling widget messages, but messages *out* still flow, so
``update()`` draws from the calling thread itself. It is throttled in time (:class:`BudgetThrottle`): at most
``fps`` frames a second and at most ``budget`` (3%) of the loop's wall time spent reading and drawing.
Calls in between cost a clock read (and keeping a detached reference to the loss, for the loss curve: losses
are turned into numbers once per frame, so a GPU loop is not synchronised at every step).

Because the probe is read only at frames, ``update_ratio`` in ``monitor.stats`` spans all the optimizer
steps since the previous frame; the bars divide it by that number of steps (an average per step).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from torch import nn

from ..core.diagnosis import Diagnosis, diagnose
from ..core.probe import GradientProbe, GradientStats
from ..runtime.throttle import BudgetThrottle
from ..widgets.banner import DiagnosisBanner
from ..widgets.bars import GradientBars
from ..widgets.loss_curve import LossCurve
from ..widgets.style import css_widget
from .lifecycle import close_tree

__all__ = ["GradientMonitor"]

logger = logging.getLogger(__name__)

LOSS_WINDOW = 2000


class GradientMonitor(widgets.VBox):
    """Watch any model's gradients while your own loop trains it: ``monitor.update(loss)`` after ``backward()``.

    ``fps`` caps frames per second, ``budget`` the fraction of wall time the monitor may take (both enforce
    the "slows your loop by at most a few percent" promise). ``track_weights=False`` saves two copies of the
    parameters (no update ratio). ``monitor.stats`` is the latest reading (``None`` before the first).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        fps: float = 10.0,
        budget: float = 0.03,
        track_weights: bool = True,
        show_loss: bool = True,
        title: str = "Gradient reaching each layer",
    ) -> None:
        self.probe = GradientProbe(model, track_weights=track_weights)
        self.throttle = BudgetThrottle(fps, budget)
        self.banner = DiagnosisBanner()
        self.banner.show_text("waiting", "Waiting for gradients", "Call monitor.update(loss) after loss.backward().")
        self.bars = GradientBars(title=title)
        self.loss = LossCurve(show_test=False, title="Training loss") if show_loss else None
        self.calls = 0
        self.reads = 0
        self.frames = 0
        self.stats: GradientStats | None = None
        self.diagnosis: Diagnosis | None = None
        self.error: BaseException | None = None
        self._read_at_call = 0
        self._loss_steps: deque[int] = deque(maxlen=LOSS_WINDOW)
        self._losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        self._pending: list[tuple[int, Any]] = []
        charts = [self.bars, *([self.loss] if self.loss is not None else [])]
        super().__init__([css_widget(), self.banner, *charts], layout=widgets.Layout(width="100%"))
        self.add_class("gw-app")

    def update(self, loss: Any = None, force: bool = False) -> GradientStats | None:
        """Count a training step; when a frame is due (or ``force``), read the gradients and redraw.

        Returns the new stats when it read them, else ``None``. ``loss`` (a float or a scalar tensor) feeds
        the loss curve and the stats.
        """
        self.calls += 1
        if loss is not None:
            self._pending.append((self.calls, loss.detach() if isinstance(loss, torch.Tensor) else loss))
            if len(self._pending) > LOSS_WINDOW:
                self._collect_losses()
        started = time.monotonic()
        if not (force or self.throttle.due(started)):
            return None
        steps_between = self.calls - self._read_at_call
        self._read_at_call = self.calls
        self._collect_losses()
        stats = self.probe.read(self._losses[-1] if loss is not None else None, step=self.calls)
        self.reads += 1
        self.stats = stats
        self.diagnosis = diagnose(stats, config=getattr(self.probe.model, "config", None))
        if self.error is None:
            self._draw(stats, self.diagnosis, steps_between)
        self.throttle.spent(time.monotonic() - started, started)
        return stats

    def _collect_losses(self) -> None:
        """Turn the losses kept since the last frame into floats, with one device transfer."""
        if not self._pending:
            return
        steps, values = zip(*self._pending, strict=True)
        self._pending.clear()
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        if len(tensors) == len(values):
            numbers = torch.stack([t.reshape(()) for t in tensors]).double().cpu().tolist()
        else:
            numbers = [float(v) for v in values]
        self._loss_steps.extend(steps)
        self._losses.extend(numbers)

    def close(self) -> None:
        """Close every widget of the monitor (the model is untouched)."""
        close_tree(self)

    def _draw(self, stats: GradientStats, diagnosis: Diagnosis, steps_between: int) -> None:
        try:
            self.bars.per_step_divisor = max(steps_between, 1)
            self.bars.show(stats, diagnosis)
            self.banner.show(diagnosis, note=f"step {self.calls}")
            if self.loss is not None and self._losses:
                self.loss.show([np.fromiter(self._loss_steps, float)], [np.fromiter(self._losses, float)])
            self.frames += 1
        except Exception as exc:  # noqa: BLE001 - a drawing bug must not stop the user's training
            self.error = exc
            logger.exception("GradientMonitor stopped drawing")
            self.banner.show_text(
                "error",
                f"Monitor stopped drawing: {type(exc).__name__}",
                str(exc) or repr(exc),
                "Your training is unaffected; monitor.stats still updates.",
            )

    # ------------------------------------------------------------------ save and export (see .export)

    def save_run(self, path: str | os.PathLike[str]) -> Path:
        """The latest reading and the loss curve as a run file. For every step, log with ``gw.GradientLogger``."""
        from .export import write_stats_run

        if self.stats is None:
            raise ValueError("nothing to save yet: call monitor.update() after backward() first")
        self._collect_losses()
        meta = {"app": "GradientMonitor", "model": type(self.probe.model).__name__}
        return write_stats_run(path, [self.stats], list(self._loss_steps), list(self._losses), meta)

    def save_csv(self, path: str | os.PathLike[str]) -> Path:
        """The latest reading as CSV: one row per layer, every per-layer field."""
        from .export import stats_rows, write_csv

        if self.stats is None:
            raise ValueError("nothing to save yet: call monitor.update() after backward() first")
        return write_csv(path, stats_rows(self.stats))

    def save_png(self, path: str | os.PathLike[str]) -> Path:
        """The gradient bars as PNG, drawn by the browser; the file is written when the image arrives."""
        from .export import save_png

        return save_png(self.bars.figure, path)

"""``GradientMonitor``: live gradient bars for *your* training loop, on any ``nn.Module``.

::

    monitor = gw.GradientMonitor(model)
    display(monitor)
    for x, y in loader:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(); loss.backward()
        monitor.update(loss)          # after backward(), before the next zero_grad()
        optimizer.step()

    # AMP: scaler.scale(loss).backward(); monitor.update(loss, scaler=scaler); scaler.step(optimizer); ...

``update()`` reads the gradients on the calling thread (they are only valid between ``backward()`` and the next
``zero_grad()``), at most ``fps`` times a second and within ``budget`` of the loop's time (reading plus the
drawing thread's CPU time, which shares the interpreter with the loop); every other call costs
a clock read and keeps a detached reference to the loss. Drawing happens on a background thread from a one-slot
mailbox (:class:`~gradwidgets.runtime.draw.DrawThread`), so a slow front end never slows the loop. When the
loop stops calling ``update()`` with a step still unread, that last step (its gradients are still in ``.grad``)
is read and drawn within about a second, on the drawing thread.

``update()`` never raises into the loop: an error is shown in the widget, logged once, and kept in
``monitor.error``. Because the probe is read only at frames, ``update_ratio`` in ``monitor.stats`` spans all the
optimizer steps since the previous frame; the bars divide it by that number of steps (an average per step).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from torch import nn

from ..core.blocks import group_stats
from ..core.diagnosis import Diagnosis, diagnose
from ..core.optimizer_reads import StepReads
from ..core.probe import GradientProbe
from ..core.signals import (
    InstabilityReading,
    InstabilitySignals,
    InstabilityWarning,
    check_scheduler,
    has_attention,
    unstable_verdict,
    warn_unstable,
)
from ..core.stats import GradientStats
from ..runtime.draw import DrawThread
from ..runtime.throttle import BudgetThrottle
from ..widgets.banner import DiagnosisBanner
from ..widgets.bars import GradientBars
from ..widgets.loss_curve import LossCurve
from ..widgets.signals_panel import SignalsPanel
from ..widgets.style import css_widget
from .lifecycle import close_tree

__all__ = ["GradientMonitor"]

logger = logging.getLogger(__name__)

LOSS_WINDOW = 2000
FINAL_READ_IDLE = 0.3
"""Seconds without an ``update()`` call after which a step left unread is read and drawn (the loop ended)."""
THREAD_IDLE_EXIT = 5.0
"""Seconds with nothing to draw after which the drawing thread ends (the next frame starts another)."""
SIGNALS_EVERY = 10
"""The instability signals measure the training forward pass of the first step and of every 10th (~1% of a
6-block GPT's step, benchmarks/instability/cost.py); their warning rule looks 20 steps back."""
SIGNALS_SAMPLE = 4
SIGNALS_WINDOW = 1000
"""Readings drawn (the newest): the panel's frame stays bounded on a long run."""


@dataclass(frozen=True)
class _Frame:
    stats: GradientStats
    diagnosis: Diagnosis
    steps_between: int
    loss_steps: np.ndarray
    losses: np.ndarray
    readings: tuple[InstabilityReading, ...] = ()
    warning: InstabilityWarning | None = None


class GradientMonitor(widgets.VBox):
    """Watch any model's gradients while your own loop trains it: ``monitor.update(loss)`` after ``backward()``.

    ``fps`` caps reads per second, ``budget`` (2%) the fraction of the loop's wall time reading and drawing may
    take, a margin under the "at most 3% slower" promise for what cannot be measured (contention for the
    interpreter). ``track_weights=False`` saves the weight
    copies (no update ratio or drift). ``monitor.stats`` is the latest reading (``None`` before the first);
    ``monitor.flush()`` waits until it is drawn.

    ``signals``: measure the instability signals (largest attention logit and entropy per block, the output's
    log Z; update ratio and gradient RMS with ``optimizer``) on the first step's and every 10th step's forward
    pass and draw them in a second panel (:class:`~gradwidgets.widgets.signals_panel.SignalsPanel`); ``None``
    (default) turns them on when the model has an attention module
    :func:`~gradwidgets.core.signals.attention_kind` recognises. While the warning rule holds (a signal growing the
    way it does before a loss spike) the verdict is ``unstable``, naming the block and the fix; ``monitor.warning``
    keeps the last warning given (the panel goes on showing it when the growth has stopped and the spike is due).
    ``scheduler``: the learning-rate scheduler (``torch.optim.lr_scheduler``) **stepped once per optimizer step**;
    the signals then look ahead at the learning rate it will set over the next 100 steps (``lr_ahead``, from a
    stepped copy; the real one is untouched), which turns on the edge warning: the run oscillating
    (gradient-momentum cosine <= -0.3) while the schedule is about to double its learning rate. The signals read
    the learning rate and the momentum from the scheduler's optimizer when ``optimizer`` is not given. Do not pass
    a scheduler stepped once per epoch: its "100 steps ahead" would be 100 epochs ahead.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        fps: float = 10.0,
        budget: float = 0.02,
        track_weights: bool = True,
        show_loss: bool = True,
        title: str = "Gradient reaching each layer",
        optimizer: Any = None,
        signals: bool | None = None,
        scheduler: Any = None,
    ) -> None:
        if signals is not None and not isinstance(signals, bool):
            raise ValueError(f"signals must be True, False or None (on when the model has attention), got {signals!r}")
        check_scheduler(scheduler)
        self.optimizer = optimizer
        self.probe = GradientProbe(model, track_weights=track_weights)
        self.throttle = BudgetThrottle(fps, budget)
        self.banner = DiagnosisBanner()
        self.banner.show_text("waiting", "Waiting for gradients", "Call monitor.update(loss) after loss.backward().")
        self.bars = GradientBars(title=title, grouper=group_stats)  # one bar per block for a model with blocks
        # Points arrive right after display(): a title changed then could stay "none yet" (see LossCurve).
        loss_title = "Training loss"
        self.loss = LossCurve(show_test=False, title=loss_title, empty_title=loss_title) if show_loss else None
        self.calls = 0
        self.reads = 0
        self.frames = 0
        self.stats: GradientStats | None = None
        self.diagnosis: Diagnosis | None = None
        self.error: BaseException | None = None
        self._logged_errors: set[str] = set()
        self._read_at_call = 0
        self._last_call = time.monotonic()
        self._scaler: Any = None
        self._loss_steps: deque[int] = deque(maxlen=LOSS_WINDOW)
        self._losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        self._pending: list[tuple[int, Any]] = []
        self._read_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._drawn_reads = 0
        self._draw_cost = 0.0
        self.draw_seconds = 0.0
        """CPU time the drawing thread has spent drawing (it shares the interpreter with the loop)."""
        self._draw_failed = False
        self._latest: _Frame | None = None
        self._drawer: DrawThread[_Frame] = DrawThread(
            self._draw,
            name="gradwidgets-monitor",
            on_error=lambda exc: self._report(exc, "drawing"),
            on_idle=self._read_left_step,
            idle_exit=THREAD_IDLE_EXIT,
            poll=0.1,
        )
        self.warning: InstabilityWarning | None = None
        self.signals: InstabilitySignals | None = None
        self.signals_panel: SignalsPanel | None = None
        if has_attention(model) if signals is None else signals:
            self.signals = InstabilitySignals(
                model,
                sample=SIGNALS_SAMPLE,
                optimizer=optimizer,
                schedule=self._signals_step,
                scheduler=scheduler,
            )
            self.signals_panel = SignalsPanel()
        charts = [
            self.bars,
            *([self.signals_panel] if self.signals_panel is not None else []),
            *([self.loss] if self.loss is not None else []),
        ]
        super().__init__([css_widget(), self.banner, *charts], layout=widgets.Layout(width="100%"))
        self.bars.on_redraw = self._redraw_latest  # a toggle redraws on the drawing thread
        self.add_class("gw-app")
        # With the optimizer known, reads happen right before optimizer.step(): complete gradients wherever the
        # loop calls zero_grad(); update(loss) then only counts the step and keeps its loss.
        self._step_reads = StepReads(optimizer, self._read_at_step) if optimizer is not None else None

    # ------------------------------------------------------------------------------------------ the user's loop
    def update(self, loss: Any = None, force: bool = False, scaler: Any = None) -> GradientStats | None:
        """Count a training step; when a read is due (or ``force``), read the gradients and queue a frame.

        Returns the new stats when it read them, else ``None``. ``loss`` (a float or a scalar tensor) feeds the
        loss curve and the stats; ``scaler`` (a ``torch.amp.GradScaler``) divides the scaled gradients by its
        scale, and a step it will skip (inf/NaN) is reported as skipped. Never raises.
        """
        try:
            self.calls += 1
            self._last_call = started = time.monotonic()
            if loss is not None:
                with self._pending_lock:  # the drawing thread may collect them for a last read
                    self._pending.append((self.calls, loss.detach() if isinstance(loss, torch.Tensor) else loss))
                if len(self._pending) > LOSS_WINDOW:
                    with self._read_lock:
                        self._collect_losses()
            self._scaler = scaler
            if self._step_reads is not None and not force:
                return None
            if not (force or self.throttle.due(started)):
                return None
            stats = self._read(scaler)
            # The drawing thread shares the interpreter with the loop: its last frame's CPU time counts too.
            self.throttle.spent(time.monotonic() - started + self._draw_cost, started)
            return stats
        except Exception as exc:  # noqa: BLE001 - the user's training must go on
            self._report(exc, "reading the gradients")
            self.throttle.spent(0.0, time.monotonic())
            return None

    def _signals_step(self) -> int | None:
        """A training forward pass: its step (the next ``update()`` call) when the signals measure it, else None."""
        upcoming = self.calls + 1
        return upcoming if upcoming == 1 or upcoming % SIGNALS_EVERY == 0 else None

    def _read(self, scaler: Any, final: bool = False, step: int | None = None) -> GradientStats | None:
        """The one read path: probe the gradients, diagnose, keep the stats and post a frame to the drawing thread.
        ``final``: the loop's last step, read on the drawing thread after the loop stopped; ``step``: the optimizer
        step being read (reads at ``optimizer.step()``)."""
        with self._read_lock:
            steps_between = self.calls - self._read_at_call
            self._read_at_call = self.calls
            self._collect_losses()
            step = self.calls if step is None else step
            loss = self._losses[-1] if self._loss_steps and self._loss_steps[-1] == step else None
            stats = self.probe.read(loss, step=step, scaler=scaler)
            diagnosis = diagnose(stats, config=getattr(self.probe.model, "config", None), optimizer=self.optimizer)
            if final and diagnosis.kind == "no_gradient":
                return None  # the loop zeroed its gradients after the last update(): keep the last frame
            readings: tuple[InstabilityReading, ...] = ()
            if self.signals is not None:
                history = self.signals.history
                readings = tuple(history)[-SIGNALS_WINDOW:] if history else ()
                current = warn_unstable(readings) if readings else None
                self.warning = current or self.warning  # the panel keeps the last warning given until the run ends
                diagnosis = unstable_verdict(diagnosis, current)
            self.reads += 1
            self.stats, self.diagnosis = stats, diagnosis
            frame = _Frame(
                stats,
                diagnosis,
                max(steps_between, 1),
                np.fromiter(self._loss_steps, float),
                np.fromiter(self._losses, float),
                readings,
                self.warning,
            )
            self._latest = frame
        self._post(frame)
        return stats

    def _read_at_step(self) -> None:
        """optimizer.step() is about to run (a step pre-hook): read now when a read is due."""
        started = time.monotonic()
        if self.throttle.due(started) and self._step_reads is not None:
            self._read(self._scaler, step=self._step_reads.steps)  # the optimizer step about to be taken
            self.throttle.spent(time.monotonic() - started + self._draw_cost, started)

    def _collect_losses(self) -> None:
        """Turn the losses kept since the last frame into floats, with one device transfer."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        steps, values = zip(*pending, strict=True)
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        if len(tensors) == len(values):
            numbers = torch.stack([t.reshape(()).float() for t in tensors]).cpu().tolist()  # MPS has no float64
        else:
            numbers = [float(v) for v in values]
        self._loss_steps.extend(steps)
        self._losses.extend(numbers)

    # ------------------------------------------------------------------------------------ the drawing thread
    def _post(self, frame: _Frame) -> None:
        self._drawer.post(frame)

    def _redraw_latest(self) -> None:
        """Draw the latest reading again (the bars' quantity changed)."""
        if self._latest is not None:
            self._post(self._latest)

    @property
    def _thread(self) -> threading.Thread | None:
        """The drawing thread while it runs (it ends when idle; the next frame starts another)."""
        return self._drawer.thread

    def _read_left_step(self) -> bool:
        """Idle on the drawing thread: read a last step the loop left unread once it stopped calling
        ``update()``. True while such a step waits (the thread stays)."""
        if self._read_at_call >= self.calls:
            return False
        if time.monotonic() - self._last_call > FINAL_READ_IDLE:
            self._final_read()
        return True

    def _final_read(self) -> None:
        """The loop has stopped with its last step unread: read it now (the gradients are still in ``.grad``)."""
        try:
            # With AMP the loop ended after scaler.step(), which already unscaled the gradients in place.
            self._read(None, final=True)
        except Exception as exc:  # noqa: BLE001 - shown in the widget, never lost in the thread
            self._read_at_call = self.calls
            self._report(exc, "reading the last step")

    def _draw(self, frame: _Frame) -> None:
        try:
            self._draw_views(frame)
        finally:
            self._drawn_reads = max(self._drawn_reads, frame.stats.step)

    def _draw_views(self, frame: _Frame) -> None:
        if self._draw_failed:
            return
        cpu = time.thread_time()
        try:
            stats, diagnosis = frame.stats, frame.diagnosis
            self.bars.per_step_divisor = frame.steps_between
            self.bars.show(stats, diagnosis)
            note = f"step {stats.step}" + (" (AMP step skipped)" if stats.skipped else "")
            self.banner.show(diagnosis, note=note)
            if self.loss is not None and len(frame.losses):
                self.loss.show([frame.loss_steps], [frame.losses])
            if self.signals_panel is not None and frame.readings:
                self.signals_panel.show_readings(frame.readings, frame.warning)
            self.frames += 1
            self._draw_cost = time.thread_time() - cpu
            self.draw_seconds += self._draw_cost
        except Exception as exc:  # noqa: BLE001 - a drawing bug must not stop the user's training
            self._report(exc, "drawing")
            self._draw_failed = True

    def _report(self, exc: BaseException, doing: str) -> None:
        """Keep, log once (per kind of failure) and show an error; the loop is unaffected."""
        self.error = exc
        key = f"{doing}:{type(exc).__name__}"
        if key not in self._logged_errors:
            self._logged_errors.add(key)
            logger.error("GradientMonitor failed while %s", doing, exc_info=exc)
        try:
            self.banner.show_text(
                "error",
                f"Monitor error while {doing}: {type(exc).__name__}",
                str(exc) or repr(exc),
                "Your training is unaffected and keeps running; monitor.error holds the exception.",
            )
        except Exception:  # noqa: BLE001 - nothing left to show it with
            logger.exception("GradientMonitor could not show an error")

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the latest reading has been drawn (and, if the loop left its last step unread, until
        that step is read and drawn). Returns False on timeout."""

        def done() -> bool:
            # A read in progress holds _read_lock: its stats are not assigned yet, so it is still pending.
            pending = self._drawer.busy or self._read_at_call < self.calls or self._read_lock.locked()
            drawn = self.stats is None or self._drawn_reads >= self.stats.step or self._draw_failed
            return (not pending and drawn) or self._drawer.closed

        return self._drawer.wait_until(done, timeout)

    def close(self) -> None:
        """Stop the drawing thread and close every widget of the monitor (the model is untouched)."""
        if not hasattr(self, "_drawer"):  # __init__ refused its arguments
            return
        self._drawer.close()
        self.probe.close()
        if self.signals is not None:
            self.signals.remove()
        if self._step_reads is not None:
            self._step_reads.remove()
        close_tree(self)

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

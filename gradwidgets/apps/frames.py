"""App-layer: what one frame of a live run contains, and how it is read off a ``TrainingSession``.

A frame is built on the trainer thread between two steps while holding the session's lock, so it never mixes
the old and new model across a ``reconfigure``. It holds copies: the render thread can take its time.
Heavy parts (loss window, heatmap window) are included only at their own slower cadence; light parts (the
latest stats and diagnosis) every frame.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

from ..core.boundary import BOUNDARY_BUDGET, BoundaryGrid, boundary_applies, evaluate_boundary
from ..core.diagnosis import Diagnosis, diagnose
from ..core.session import TrainingSession
from ..core.stats import GradientStats
from ..core.theory import ActivationCurve, RatioPrediction, activation_curve, predict_ratio
from ..nets import NetConfig

__all__ = ["Cadence", "FrameBuilder", "RunStatus", "SessionFrame", "replay_stats"]

LOSS_WINDOW = 500
HEAT_WINDOW = 200

# How often the slow views refresh while training plays (paused or changed: at once). The bars follow every
# frame; these carry little news per frame but cost a widget message each (~0.5 kB of Jupyter envelope on the
# wire), so together they keep a playing page near 10 messages a second above the bars' frames.
LOSS_INTERVAL = 0.5
"""Loss curve, with the step counter and scrubber (so the numbers agree)."""
HEAT_INTERVAL = 2.0
"""The layer x step heatmap (its columns are a few kB)."""
BOUNDARY_INTERVAL = 2.0
"""The decision boundary while playing: a grid is ~13 kB on the wire, so at most one per this many seconds (with
the trainer's time budget, :data:`~gradwidgets.core.boundary.BOUNDARY_BUDGET`); the class's per-tab traffic bound
(tests/test_class_capacity.py) holds with it."""
TEXT_INTERVAL = 1.0
"""Banner, theory readout and the bars' ratio: together, from one frame."""


class Cadence:
    """``due()`` at most once per ``interval`` seconds: how slow views (loss, heatmap, text) are throttled."""

    def __init__(self, interval: float) -> None:
        self.interval = float(interval)
        self._last = -math.inf

    def due(self, now: float | None = None, force: bool = False) -> bool:
        now = time.monotonic() if now is None else now
        if force or now - self._last >= self.interval:
            self._last = now
            return True
        return False


@dataclass(frozen=True)
class RunStatus:
    """The runner's side of a frame: playing or not, and how fast."""

    playing: bool
    rate: float


@dataclass(frozen=True)
class SessionFrame:
    """One frame of one session. ``run`` is the session's ``run_id``: it changes whenever the session rebuilt its
    model (new history)."""

    run: int
    steps: int
    config: NetConfig
    stats: GradientStats | None
    diagnosis: Diagnosis | None
    history_steps: tuple[int, int]
    """(first, last) step held in the history, for the replay scrubber; (0, 0) when empty."""
    diverged: bool
    replay: int | None = None
    at_init: bool = False
    """``stats`` is the reading at the current weights before any step (``TrainingSession.peek``), not a step's."""
    restart: str | None = None
    """Why this run started afresh (``"activation changed"``, ``"reset"``); ``None`` for the first run."""
    curve: ActivationCurve | None = None
    """Cached per activation: the same object every frame, so it costs nothing to include."""
    loss_steps: np.ndarray | None = None
    loss: np.ndarray | None = None
    test_steps: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    heat_steps: np.ndarray | None = None
    heat: np.ndarray | None = None
    boundary: BoundaryGrid | None = None
    """The decision boundary at ``steps`` (2-D two-class data, at the builder's cadence; else ``None``)."""
    boundary_applies: bool = False
    """Whether this run's data has a decision boundary to draw (a view hides itself otherwise)."""
    prediction: RatioPrediction | None = None
    """(mean slope x weight gain)^(depth-1) at the current weights, for a plain MLP (``None`` where the product
    does not predict the ratio: skip connections, normalization, SwiGLU, recurrent or attention nets)."""


def replay_stats(latest: GradientStats, record: dict) -> GradientStats:
    """Stats for a step held in the history (``History.at``): the layer layout of ``latest`` with that step's
    numbers. Weight norms and drift are not in the history, so they are NaN."""
    n = len(latest)
    nan = np.full(n, np.nan)
    return dataclasses.replace(
        latest,
        grad_norm=np.asarray(record["grad_norm"]),
        grad_mean_abs=np.asarray(record["grad_mean_abs"]),
        grad_max_abs=np.asarray(record["grad_max_abs"]),
        update_ratio=np.asarray(record["update_ratio"]),
        weight_norm=nan,
        drift=nan,
        has_grad=np.isfinite(np.asarray(record["grad_norm"])) | latest.has_grad,
        step=int(record["step"]),
        loss=float(record["loss"]),
        time_grad_norm=record.get("time_grad_norm", latest.time_grad_norm),
    )


class FrameBuilder:
    """Reads frames off one session; tracks runs so views know when to reset their ranges."""

    def __init__(
        self,
        session: TrainingSession,
        loss_interval: float = LOSS_INTERVAL,
        heat_interval: float = HEAT_INTERVAL,
        loss_window: int = LOSS_WINDOW,
        heat_window: int = HEAT_WINDOW,
        boundary_every: int | None = None,
        boundary_interval: float = BOUNDARY_INTERVAL,
    ) -> None:
        self.session = session
        self.loss_cadence = Cadence(loss_interval)
        self.heat_cadence = Cadence(heat_interval)
        self.loss_window = loss_window
        self.heat_window = heat_window
        self._run = 0
        self._peeked: GradientStats | None = None
        self.boundary_every = boundary_every
        self.boundary_interval = float(boundary_interval)
        """Steps between two decision-boundary grids while playing; ``None``: never computed (nobody draws it)."""
        self._boundary_at: tuple[int, int] | None = None  # (run, step) of the last grid
        self._boundary_ready = -math.inf  # monotonic time before which a playing run gets no new grid (budget)
        self.boundary_seconds = 0.0
        """Time spent evaluating grids (the trainer thread's, between steps): the cost per step is this over steps."""
        self.boundary_count = 0
        self._prediction: RatioPrediction | None = None
        self._prediction_at: tuple[int, int] | None = None  # (run, step) it was computed at
        self.prediction_cadence = Cadence(TEXT_INTERVAL)

    def build(
        self, replay: int | None = None, with_loss: bool | None = None, with_heat: bool | None = None
    ) -> SessionFrame:
        """A frame of the current state, or of the history step ``replay`` (a step number) when given.

        ``with_loss``/``with_heat`` force the heavy parts in or out; ``None`` follows this builder's cadence.
        """
        session = self.session
        with session.lock:
            history = session.history
            new_run = session.run_id != self._run
            if new_run:
                self._run = session.run_id
                self._peeked = None
            config = session.config
            stats = session.last_stats
            at_init = stats is None
            if at_init:
                if self._peeked is None:
                    self._peeked = session.peek()
                stats = self._peeked
            held = len(history)
            steps_held = history.steps if held else np.zeros(0, np.int64)
            first_last = (int(steps_held[0]), int(steps_held[-1])) if held else (0, 0)
            replayed = None
            if replay is not None and stats is not None and held and first_last[0] <= replay <= first_last[1]:
                stats = replay_stats(stats, history.at(int(replay) - first_last[0]))
                replayed = int(replay)
            diagnosis = diagnose(stats, history, config) if stats is not None else None
            parts: dict = {}
            if with_loss if with_loss is not None else new_run or self.loss_cadence.due():
                window = slice(-self.loss_window, None)
                test_steps = history.test_steps
                recent = test_steps >= (steps_held[window][0] if held else 0)
                parts.update(
                    loss_steps=steps_held[window],
                    loss=history.loss[window] if held else np.zeros(0),
                    test_steps=test_steps[recent],
                    test_loss=history.test_loss[recent],
                )
            if held and (with_heat if with_heat is not None else new_run or self.heat_cadence.due()):
                parts.update(heat_steps=steps_held[-self.heat_window :], heat=history.grad_norm[-self.heat_window :])
            if replayed is None:
                self._update_prediction(session, new_run)
            applies = self.boundary_every is not None and boundary_applies(session.data)
            if applies and replayed is None and self._boundary_due(session.steps, force=bool(with_loss)):
                parts.update(boundary=self._evaluate_boundary())
            return SessionFrame(
                run=self._run,
                steps=session.steps,
                config=config,
                stats=stats,
                diagnosis=diagnosis,
                history_steps=first_last,
                diverged=session.diverged,
                replay=replayed,
                at_init=at_init,
                restart=session.restart_reason,
                curve=activation_curve(config.activation),
                boundary_applies=applies,
                prediction=self._prediction if replayed is None else None,
                **parts,
            )

    def _update_prediction(self, session: TrainingSession, new_run: bool) -> None:
        """The theory line's prediction at the current weights: once per run and then at most once per
        ``TEXT_INTERVAL`` (one forward pass of 256 training examples, called with the session's lock held)."""
        at = (self._run, session.steps)
        if at == self._prediction_at or not (new_run or self._prediction_at is None or self.prediction_cadence.due()):
            return
        self._prediction_at = at
        self._prediction = None
        if session.config.kind != "mlp":
            return
        try:
            self._prediction = predict_ratio(session.model, session.data.x_train[:256])
        except ValueError:  # not a plain stack: skip connections or normalization change the product
            self._prediction = None

    def _boundary_due(self, steps: int, force: bool) -> bool:
        """A new grid for a new run, for a paused frame at a step not drawn yet, or while playing every
        ``boundary_every`` steps once the time budget allows (:data:`BOUNDARY_BUDGET`) and ``boundary_interval``
        seconds (:data:`BOUNDARY_INTERVAL`) have passed."""
        last = self._boundary_at
        if last is None or last[0] != self._run:
            return True
        if last[1] == steps:
            return False
        if force:
            return True
        return steps - last[1] >= (self.boundary_every or 0) and time.monotonic() >= self._boundary_ready

    def _evaluate_boundary(self) -> BoundaryGrid:
        session = self.session
        start = time.perf_counter()
        grid = evaluate_boundary(session.model, session.data, step=session.steps)
        cost = time.perf_counter() - start
        self.boundary_seconds += cost
        self._boundary_ready = time.monotonic() + max(cost / BOUNDARY_BUDGET, self.boundary_interval)
        self.boundary_count += 1
        self._boundary_at = (self._run, session.steps)
        return grid

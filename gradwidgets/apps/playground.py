"""``Playground``: train a net live and watch its gradients, with every knob at hand.

Data flows one way: controls -> ``session.reconfigure`` (lands between two steps) -> training step (runner
thread) -> frame (between steps, at most ``fps`` a second) -> render thread -> views. The render thread writes
the charts (a bars toggle asks it for a frame); the table in :mod:`gradwidgets.runtime` lists every thread.
Divergence pauses the run and says so; ``reset()`` recovers.
"""

from __future__ import annotations

import html
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ..core.blocks import group_columns, group_stats
from ..core.boundary import BOUNDARY_EVERY
from ..core.data import DATASETS, SEQUENCE_DATASETS
from ..core.diagnosis import format_number
from ..core.session import OPTIMIZERS, TrainingSession, restart_reason
from ..core.signals import InstabilityReading, InstabilitySignals, InstabilityWarning, warn_unstable
from ..core.theory import theoretical_bound
from ..nets import INITS, NORMS, NetConfig
from ..nets.activations import ACTIVATIONS
from ..runtime.runner import DEFAULT_FPS
from ..validation import CELLS
from ..widgets.activation_plot import ActivationPlot
from ..widgets.banner import DiagnosisBanner
from ..widgets.bars import GradientBars, TimeBars
from ..widgets.boundary import DecisionBoundary
from ..widgets.controls import CONTROL_FIELDS, Controls
from ..widgets.heatmap import GradientHeatmap
from ..widgets.loss_curve import LossCurve
from ..widgets.signals_panel import SignalsPanel
from ..widgets.slider import move_slider
from ..widgets.style import css_widget, kind_text
from .distributions import DistributionsSection
from .forward_row import ForwardRow
from .frames import LOSS_INTERVAL, TEXT_INTERVAL, Cadence, FrameBuilder, RunStatus, SessionFrame
from .lifecycle import RunnerApp
from .wording import ratio_text, show_error, show_frame, valid_values

__all__ = ["Playground", "field_choices", "ratio_text", "restart_reason", "valid_values"]

CONTROLS_WIDTH = "320px"
SIGNALS_WINDOW = 1000
"""Instability readings drawn (the newest): a bounded frame on a long run."""
CHART_HEIGHT = "260px"
"""The first row's charts: at 1280x720 the verdict, the bars with their key, the decision boundary and the loss
all fit on the first screen of the dashboard (checked in tests/test_dashboard_browser.py)."""


def field_choices(session: TrainingSession) -> dict[str, tuple[str, ...]]:
    """The values each choice control may take for this session's kind (checked against ``NetConfig``)."""
    config = session.config

    def valid(name: str, options: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for option in options:
            try:
                config.replace(**{name: option})
            except ValueError:
                continue
            out.append(option)
        return tuple(out)

    sequence = config.kind != "mlp"
    return {
        "activation": valid("activation", tuple(ACTIVATIONS)),
        "norm": valid("norm", NORMS),
        "init": valid("init", INITS),
        "optimizer": OPTIMIZERS,
        "dataset": tuple(d for d in DATASETS if (d in SEQUENCE_DATASETS) == sequence),
        "cell": CELLS if config.kind == "rnn" else (config.cell,),
    }


def _column(flex: str, min_width: str) -> widgets.Layout:
    """A chart column that shrinks to ``min_width`` and no further (its row wraps instead of overflowing)."""
    return widgets.Layout(flex=flex, min_width=min_width)


def _row() -> widgets.Layout:
    return widgets.Layout(width="100%", flex_flow="row wrap")


def _session_arguments(config: NetConfig | Mapping[str, Any] | None, fields: dict[str, Any]) -> dict[str, Any]:
    if config is None or isinstance(config, NetConfig):
        return {"config": config, **fields}
    if isinstance(config, Mapping):
        return {**dict(config), **fields}
    raise ValueError(f"config must be a NetConfig, a dict of fields or None, got {type(config).__name__}")


class Playground(RunnerApp):
    """A live training run with controls, gradient bars, loss, heatmap, activation and diagnosis.

    ``Playground(activation="sigmoid", depth=12)`` takes a ``NetConfig`` (or dict) and/or any of those fields
    as keywords; the bars show the at-initialization reading at once, ``pg.play()`` trains in the background.
    ``fps`` caps frames per second (default 10, at most 30), ``speed`` steps per second (``None``: as fast as possible).
    The controls are attributes: ``pg.depth = 30``. Also: ``pg.pause()``, ``pg.step(n)``, ``pg.reset()``,
    ``pg.close()``, ``pg.session`` (the ``TrainingSession``).
    ``signals=True`` (``kind="transformer"`` only; off by default: it costs ~1% of a step) measures the instability
    signals (largest attention logit, attention entropy, log Z per block, every 10th step) and draws their panel
    with its warning under the charts.
    """

    def __init__(
        self,
        config: NetConfig | Mapping[str, Any] | None = None,
        *,
        fps: float = DEFAULT_FPS,
        speed: float | None = None,
        torch_threads: int | None = 1,
        history_size: int = 2000,
        autoplay: bool = False,
        signals: bool = False,
        **fields: Any,
    ) -> None:
        if not isinstance(signals, bool):
            raise ValueError(f"signals must be True or False, got {signals!r}")
        self.session = TrainingSession(history_size=history_size, **_session_arguments(config, fields))
        if signals and self.session.config.kind != "transformer":
            kind = self.session.config.kind
            raise ValueError(f"signals: only for kind='transformer' (attention to measure), got kind={kind!r}")
        self.signals: InstabilitySignals | None = None
        self._warning: InstabilityWarning | None = None
        self.signals_panel = SignalsPanel(height="240px") if signals else None
        mlp = self.session.config.kind == "mlp"
        self._builder = FrameBuilder(self.session, boundary_every=BOUNDARY_EVERY if mlp else None)
        self._replay: int | None = None
        self._scrubber_sync = threading.local()
        self._drawn_run = 0
        self._drawn_curve = ""
        self._text_key: tuple | None = None
        self._status_key: tuple | None = None
        self._text_cadence = Cadence(TEXT_INTERVAL)
        self._status_cadence = Cadence(LOSS_INTERVAL)
        self._shown_ratio = ""

        recurrent = self.session.config.kind == "rnn"
        self.banner = DiagnosisBanner()
        # A transformer's bars start with one bar per block (issue 23); the teaching MLPs and RNNs keep their rows.
        grouper = group_stats if self.session.config.kind == "transformer" else None
        self.banner.layout.min_height = "0"  # no reserved gap under a short verdict: the loss must stay in view
        self.bars = GradientBars(height=CHART_HEIGHT, grouper=grouper)
        self.time_bars = TimeBars(height=CHART_HEIGHT) if recurrent else None
        self.loss = LossCurve(height=CHART_HEIGHT, min_width="210px")
        self.boundary = DecisionBoundary(height=CHART_HEIGHT)
        self._boundary_shown: bool | None = None
        self.heatmap = GradientHeatmap(height="300px")
        self.activation_plot = ActivationPlot(height="240px")
        self.forward = ForwardRow()  # optional forward statistics under the bars (a toggle)
        self.controls = Controls(
            values=self.session.describe(),
            choices=field_choices(self.session),
            apply=self._apply,
            speed=speed,
            layout=widgets.Layout(width=CONTROLS_WIDTH, min_width=CONTROLS_WIDTH, flex="0 0 auto", padding="4px"),
        )
        self.scrubber = widgets.IntSlider(
            value=0,
            min=0,
            max=0,
            description="replay step",
            disabled=True,
            readout=False,
            continuous_update=True,
            style={"description_width": "100px"},
            layout=widgets.Layout(width="100%"),
        )
        self.scrubber.observe(self._scrubbed, "value")
        # Fixed columns: the controls keep their width, the charts share the rest in fixed proportions, so no
        # text (a longer verdict, a bigger step count) can push the layout around while training. First screen
        # (1280x720): controls, verdict, the bars, the decision boundary (2-D data) and the loss; for a recurrent
        # net the per-time-step bars come first. The activation curve and the heatmap are one scroll away.
        if self.time_bars is not None:  # the per-layer bars of a recurrent net are few (a layer or two)
            top = [(self.time_bars, "3 1 0", "300px"), (self.loss, "2 1 0", "240px")]
            # The bars' title needs ~350 px to clear their top tick; the two others take what is left.
            bottom = [
                (self.bars, "3 1 0", "350px"),
                (self.activation_plot, "2 1 0", "260px"),
                (self.heatmap, "2 1 0", "260px"),
            ]
        else:
            # The bars' column is wide enough (> 410 px at 1280) for their two toggles side by side.
            top = [(self.bars, "6 1 0", "300px"), (self.boundary, "3 1 0", "200px"), (self.loss, "3 1 0", "210px")]
            bottom = [(self.activation_plot, "1 1 0", "280px"), (self.heatmap, "1 1 0", "280px")]
        columns = {id(view): widgets.VBox([view], layout=_column(flex, width)) for view, flex, width in top}
        self._boundary_column = columns.get(id(self.boundary))
        if self._boundary_column is not None:
            self._boundary_column.layout.display = "none"  # until a frame says the data has a picture
        main = widgets.VBox(
            [
                self.banner,
                widgets.HBox(list(columns.values()), layout=_row()),
                self.forward.widget,
                self.scrubber,
                widgets.HBox(
                    [widgets.VBox([view], layout=_column(flex, width)) for view, flex, width in bottom], layout=_row()
                ),
            ],
            layout=widgets.Layout(flex="1 1 0", min_width="0", padding="0 0 0 8px"),
        )
        if self.signals_panel is not None:
            main.children = (*main.children, self.signals_panel)
        super().__init__(
            [css_widget(), widgets.HBox([self.controls, main], layout=widgets.Layout(width="100%"))],
            layout=widgets.Layout(width="100%"),
        )
        self.add_class("gw-app")
        # -- Distributions per layer (issue 22): a toggle and, while on, Karpathy's charts under the app. The
        # trainer thread attaches its probe (before_step); the render thread draws it (render). ----------------
        self.distributions = DistributionsSection()
        self.children = (*self.children, self.distributions.widget)
        # -- end of the distributions block ----------------------------------------------------------------------
        self._start_runner(
            self.controls.transport, name="gradwidgets-playground", fps=fps, speed=speed, torch_threads=torch_threads
        )
        self.bars.on_redraw = self.runner.request_frame  # a toggle redraws on the render thread
        if autoplay:
            self.play()

    # ------------------------------------------------------------------ public control

    def play(self) -> None:
        """Train continuously in the background (the notebook stays responsive)."""
        self._replay = None
        self.runner.play()

    def step(self, n: int = 1) -> None:
        """Pause, then train exactly ``n`` steps and show the result."""
        self._replay = None
        self.runner.step(n)

    def reset(self) -> None:
        """Fresh weights from the seed, step 0, empty history; also the way out of a diverged run."""
        self._replay = None
        self.runner.call(self.session.reset)
        self.runner.clear_error()

    # ------------------------------------------------------------------ controls -> session

    def _apply(self, changes: dict[str, Any]) -> None:
        if "speed" in changes:
            self.runner.max_steps_per_second = changes.pop("speed")
        if changes and self.session.reconfigure(**changes) == {"model"}:
            self._replay = None  # a new run: the session names the reason (``restart_reason``)
        self.runner.request_frame()

    def _scrubbed(self, change: dict) -> None:
        if getattr(self._scrubber_sync, "active", False) or self.runner.playing:
            return
        value = int(change["new"])
        self._replay = None if value >= self.scrubber.max else value
        self.runner.request_frame()

    # ------------------------------------------------------------------ trainer thread

    def _train_step(self) -> bool:
        model, optimizer = self.session.model, self.session.optimizer_instance
        if self.signals_panel is not None and (
            self.signals is None or self.signals.model is not model or self.signals.optimizer is not optimizer
        ):
            if self.signals is not None:
                self.signals.remove()  # a new run built a new model or optimizer: measure that one
            self.signals = InstabilitySignals(model, optimizer=optimizer)
        self.forward.before_step(self.session.model)
        self.distributions.before_step(self.session.model, self.session.optimizer_instance, self.session.steps)
        self.session.step()
        self.forward.after_step()
        return not self.session.diverged

    def _snapshot(self) -> tuple[SessionFrame, RunStatus, tuple[InstabilityReading, ...]]:
        playing = self.runner.playing
        # The slow views follow their cadence while playing; a paused frame (a single step, a pause, a reset, a
        # replayed step) is the last one for a while, so it carries everything.
        full = None if playing else True
        frame = self._builder.build(self._replay, with_loss=full, with_heat=full)
        readings: tuple[InstabilityReading, ...] = ()
        if self.signals is not None and self.signals.model is self.session.model:
            readings = tuple(self.signals.history)[-SIGNALS_WINDOW:]
        return frame, RunStatus(playing, self.runner.step_rate), readings

    # ------------------------------------------------ render thread (writes the charts; see gradwidgets.runtime)

    def _render(self, item: tuple[SessionFrame, RunStatus, tuple[InstabilityReading, ...]]) -> None:
        frame, status, readings = item
        if self.signals_panel is not None and readings:
            if frame.run != self._drawn_run:
                self._warning = None
            self._warning = warn_unstable(readings) or self._warning  # shown until the run ends
            self.signals_panel.show_readings(readings, self._warning)
        now = time.monotonic()
        if frame.run != self._drawn_run:
            self._drawn_run = frame.run
            for view in (self.bars, *([self.time_bars] if self.time_bars else [])):
                view.new_run()
            self.heatmap.clear()
            self.loss.clear()
            self.boundary.clear()
            # One word in the narrow loss chart's title; the status line beside the controls says why.
            self.loss.set_note("restarted" if frame.restart else "")
        if frame.curve is not None and frame.curve.name != self._drawn_curve:
            self._drawn_curve = frame.curve.name
            curve = frame.curve
            self.activation_plot.show_curve(curve.label, curve.x, curve.f, curve.df, curve.max_derivative)
        if frame.loss is not None and frame.loss_steps is not None:
            self.loss.show([frame.loss_steps], [frame.loss], frame.test_steps, frame.test_loss)
        self._render_text(frame, status, now)
        if frame.stats is not None:
            self.bars.show(frame.stats, frame.diagnosis, ratio_text=self._shown_ratio)
            if self.time_bars is not None and frame.diagnosis is not None:
                self.time_bars.show(frame.stats.time_grad_norm, frame.diagnosis.kind, frame.stats.time_state)
        else:
            self.bars.clear()
        if frame.heat is not None and frame.heat_steps is not None:
            shown = self.bars.shown if self.bars.grouper is not None else None
            names = shown.names if shown is not None and getattr(shown, "group_of", None) is not None else None
            self.heatmap.show(frame.heat_steps, group_columns(frame.heat, shown), names)
        self._render_boundary(frame)
        self._render_status(frame, status, now)
        self.forward.render()
        self.distributions.render(status.playing)

    def _render_boundary(self, frame: SessionFrame) -> None:
        """The decision boundary beside the bars, shown only while the data has a 2-D picture."""
        if self._boundary_column is None:
            return
        if frame.boundary_applies != self._boundary_shown:
            self._boundary_shown = frame.boundary_applies
            self._boundary_column.layout.display = None if frame.boundary_applies else "none"
        grid = frame.boundary
        if grid is not None:
            self.boundary.show(grid.xs, grid.ys, grid.probability, grid.points_x, grid.points_y, grid.labels, grid.step)

    def _render_text(self, frame: SessionFrame, status: RunStatus, now: float) -> None:
        """Banner, theory readout and the bars' tooltip ratio: one frame, one formatter, one moment."""
        diagnosis = frame.diagnosis
        key = (frame.run, diagnosis.kind if diagnosis else None, frame.replay, frame.diverged, status.playing)
        if not self._text_cadence.due(now, force=key != self._text_key or not status.playing):
            return
        self._text_key = key
        ratio = ratio_text(frame)
        self._shown_ratio = ratio
        self._render_banner(frame, status, ratio)
        self._render_ratio(frame, ratio)

    def _render_banner(self, frame: SessionFrame, status: RunStatus, ratio: str) -> None:
        if self.runner.error is None:  # an error stays shown until the next play/step clears it
            show_frame(self.banner, frame, ratio, playing=status.playing, lockstep=False)

    def _render_ratio(self, frame: SessionFrame, ratio: str) -> None:
        config, diagnosis = frame.config, frame.diagnosis
        entry = ACTIVATIONS[config.activation]
        recurrent = config.kind == "rnn"
        length = int(config.seq_len if recurrent else config.depth or 1)
        if recurrent:
            caveat = "the recurrent weights multiply in too" if config.cell == "rnn" else "gates, not f′, set this"
        elif config.kind == "transformer":
            caveat = "attention, skip connections and normalization change the product"
        elif config.residual or config.norm != "none":
            caveat = "skip connections or normalization change the product"
        elif config.activation == "swiglu":
            caveat = "SwiGLU's gate is not one slope per unit"
        else:
            caveat = ""
        prediction = frame.prediction
        predicted = None
        if prediction is not None and prediction.steps:
            predicted = (prediction.mean_slope, prediction.weight_gain, format_number(prediction.ratio))
        self.activation_plot.show_ratio(
            entry.max_derivative,
            length,
            format_number(theoretical_bound(config.activation, length)),
            ratio or "—",
            caveat=caveat,
            kind=diagnosis.kind if diagnosis is not None else "healthy",
            through="time" if recurrent else "layers",
            predicted=predicted,
        )

    def _render_status(self, frame: SessionFrame, status: RunStatus, now: float) -> None:
        """Step counter and replay scrubber: with the loss curve (so the numbers agree), or at once when paused."""
        key = (status.playing, frame.run)
        force = key != self._status_key or not status.playing or frame.loss is not None
        if not self._status_cadence.due(now, force=force):
            return
        self._status_key = key
        extra = ""
        if frame.restart:
            extra = f" · <b style='color:{kind_text('vanishing')}'>restarted: {html.escape(frame.restart)}</b>"
        self.controls.transport.show_status(frame.steps, status.playing, status.rate, extra)
        self._sync_scrubber(frame, status)

    def _sync_scrubber(self, frame: SessionFrame, status: RunStatus) -> None:
        """Disabled while playing; when paused, spans the steps held in the history."""
        first, last = frame.history_steps
        slider = self.scrubber
        self._scrubber_sync.active = True
        try:
            if status.playing or last == 0:
                # No number while it cannot be used: a greyed "0" at step 1014 reads as a wrong step count.
                with slider.hold_sync():
                    slider.disabled, slider.readout = True, False
                return
            move_slider(slider, first, last, frame.replay if frame.replay is not None else last)
            with slider.hold_sync():
                slider.disabled, slider.readout = False, True
        finally:
            self._scrubber_sync.active = False

    def _show_error(self, error: BaseException) -> None:
        show_error(self.banner, error, "Change the setting that caused it and press ▶ Play, or press Reset.")

    # ------------------------------------------------------------------ save and export (see .export)

    def save_run(self, path: str | os.PathLike[str]) -> Path:
        """The steps the history holds as a run file (``gw.load_run``, ``gradwidgets watch``)."""
        from .export import write_history_run

        with self.session.lock:
            if self.session.last_stats is None:
                raise ValueError("nothing to save yet: train at least one step")
            meta = {"app": "Playground", "config": self.session.config.as_dict()}
            return write_history_run(path, self.session.history, self.session.last_stats, meta, self.session.config)

    def save_csv(self, path: str | os.PathLike[str]) -> Path:
        """The history as CSV: one row per (step, layer)."""
        from .export import history_rows, write_csv

        with self.session.lock:
            if self.session.last_stats is None:
                raise ValueError("nothing to save yet: train at least one step")
            rows = list(history_rows(self.session.history, self.session.last_stats.names))
        return write_csv(path, rows)

    def save_png(self, path: str | os.PathLike[str]) -> Path:
        """The gradient bars as PNG, drawn by the browser; the file is written when the image arrives."""
        from .export import save_png

        return save_png(self.bars.figure, path)

    def close(self) -> None:
        """Stop the threads, take the signals' and distributions' hooks out of the model and optimizer, close every
        widget."""
        super().close()
        signals = getattr(self, "signals", None)
        if signals is not None:
            signals.remove()
        if getattr(self, "distributions", None) is not None:
            self.distributions.remove()


# The values first: help(gw.Playground) opens on what a learner can type (pydoc then lists ipywidgets' members).
Playground.__doc__ = valid_values() + "\n\n    " + (Playground.__doc__ or "").strip()


def _forward(name: str) -> property:
    def getter(self: Playground) -> Any:
        return getattr(self.controls, name)

    def setter(self: Playground, value: Any) -> None:
        setattr(self.controls, name, value)

    return property(getter, setter, doc=f"``controls.{name}``: validated, applied to the run between two steps.")


for _name in (*CONTROL_FIELDS, "speed"):
    setattr(Playground, _name, _forward(_name))

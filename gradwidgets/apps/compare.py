"""``Compare``: two to four nets on the same data and seed, trained in lockstep, bars on one shared log axis.

"Sigmoid vs ReLU" or "with vs without skip connections" at a glance: the columns share one y scale, so equal
heights mean equal gradients. One trainer thread steps every run once per tick, so they stay in step.
A run that diverges stops (its banner says so) while the others continue; ``reset()`` restarts them all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from traitlets import Enum, observe

from ..core.session import TrainingSession
from ..nets import NetConfig
from ..runtime.runner import DEFAULT_FPS
from ..widgets.banner import DiagnosisBanner
from ..widgets.bars import QUANTITIES, GradientBars
from ..widgets.loss_curve import SERIES_COLORS, LossCurve
from ..widgets.shared_axis import SharedLogAxis
from ..widgets.style import css_widget
from ..widgets.transport import Transport
from .frames import LOSS_INTERVAL, TEXT_INTERVAL, Cadence, FrameBuilder, RunStatus, SessionFrame
from .lifecycle import RunnerApp
from .wording import ratio_text, show_error, show_frame, valid_values

__all__ = ["Compare", "describe_differences"]

SHARED_FIELDS = frozenset({"dataset", "seed", "n_samples", "noise"})
"""Session options every run shares: same data, same seed, or the comparison means nothing."""
PER_RUN_OPTIONS = frozenset({"optimizer", "lr", "batch_size", "momentum", "weight_decay", "clip", "freeze"})
NET_FIELDS = frozenset(f.name for f in fields(NetConfig))


def _as_dict(config: NetConfig | Mapping[str, Any], index: int) -> dict[str, Any]:
    if isinstance(config, NetConfig):
        return config.as_dict()
    if isinstance(config, Mapping):
        unknown = set(config) - NET_FIELDS - PER_RUN_OPTIONS
        if unknown:
            shared = sorted(unknown & SHARED_FIELDS)
            hint = f"; {shared} must be the same for all runs: pass them to Compare(...) once" if shared else ""
            raise ValueError(
                f"configs[{index}] has unknown field(s) {sorted(unknown)}; allowed are NetConfig fields "
                f"{sorted(NET_FIELDS)} and per-run options {sorted(PER_RUN_OPTIONS)}{hint}"
            )
        return dict(config)
    raise ValueError(f"configs[{index}] must be a NetConfig or a dict, got {type(config).__name__}")


def _short(key: str, value: Any) -> str:
    """A few words for one setting, as a lecture slide would put it."""
    if key == "activation":
        return str(value)
    if key == "residual":
        return "skip" if value else "no skip"
    if key == "norm":
        return {"none": "no norm", "batch": "BatchNorm", "layer": "LayerNorm"}.get(value, f"norm={value}")
    if key == "init":
        return f"{value} init"
    return f"{key}={value}"


def describe_differences(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """A short label per run naming only what differs between them (``"sigmoid"`` vs ``"relu, skip"``)."""
    keys = sorted({k for c in configs for k in c}, key=lambda k: (k not in ("activation", "residual", "norm"), k))
    differing = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
    labels = []
    for index, config in enumerate(configs):
        parts = [_short(k, config.get(k)) for k in differing[:4]]
        labels.append(", ".join(parts) if parts else f"run {index + 1}")
    return labels


class Compare(RunnerApp):
    """Train 2-4 configs (``NetConfig`` or dicts of fields) side by side, same data and seed, in lockstep.

    Shared session options (``dataset``, ``seed``, ``optimizer``, ``lr``, ``batch_size``, ...) are keywords;
    a dict config may override the per-run options (``optimizer``, ``lr``, ``batch_size``, ``momentum``,
    ``weight_decay``, ``clip``, ``freeze``). ``labels`` defaults to what differs between the configs.
    """

    quantity = Enum(tuple(QUANTITIES), default_value="grad_norm")

    def __init__(
        self,
        configs: Sequence[NetConfig | Mapping[str, Any]],
        *,
        labels: Sequence[str] | None = None,
        dataset: str | None = None,
        optimizer: str = "sgd",
        lr: float = 0.1,
        batch_size: int = 128,
        seed: int = 0,
        fps: float = DEFAULT_FPS,
        speed: float | None = None,
        torch_threads: int | None = 1,
        history_size: int = 2000,
        **options: Any,
    ) -> None:
        if isinstance(configs, (NetConfig, Mapping)) or not isinstance(configs, Sequence):
            raise ValueError("configs must be a list of 2 to 4 NetConfigs or dicts")
        if not 2 <= len(configs) <= len(SERIES_COLORS):
            raise ValueError(f"configs must hold 2 to {len(SERIES_COLORS)} configs, got {len(configs)}")
        specs = [_as_dict(c, i) for i, c in enumerate(configs)]
        if labels is not None and (len(labels) != len(specs) or not all(isinstance(label, str) for label in labels)):
            raise ValueError(f"labels must be {len(specs)} strings, one per config, got {labels!r}")
        self.sessions = []
        effective = []
        for spec in specs:
            net = NetConfig(**{k: v for k, v in spec.items() if k in NET_FIELDS})
            run = {"optimizer": optimizer, "lr": lr, "batch_size": batch_size, **options}
            run.update({k: v for k, v in spec.items() if k in PER_RUN_OPTIONS})
            self.sessions.append(TrainingSession(net, dataset=dataset, seed=seed, history_size=history_size, **run))
            effective.append({**net.as_dict(), **run})
        self.labels = tuple(labels) if labels is not None else tuple(describe_differences(effective))
        datasets = {s.settings.dataset for s in self.sessions}
        if len(datasets) > 1:
            raise ValueError(
                f"configs must train on one dataset, got {sorted(datasets)} (mixing kinds?); pass dataset=..."
            )
        self._builders = [FrameBuilder(s) for s in self.sessions]
        self._loss_cadence = Cadence(LOSS_INTERVAL)
        self._text_cadence = Cadence(TEXT_INTERVAL)
        self._runs = [0] * len(self.sessions)
        self._ratios = [""] * len(self.sessions)
        self._stopped = [False] * len(self.sessions)

        self.axis = SharedLogAxis()
        self.scale = self.axis.scale
        self.bars = [
            GradientBars(title=label, scale=self.scale, height="320px", show_toggle=False, update_title=label)
            for label in self.labels
        ]
        self.banners = [DiagnosisBanner(compact=True) for _ in self.sessions]
        self.toggle = widgets.ToggleButtons(
            options=[(label, key) for key, label in QUANTITIES.items()], style={"button_width": "210px"}
        )
        self.toggle.observe(lambda change: setattr(self, "quantity", change["new"]), "value")
        self.loss = LossCurve(labels=self.labels, title="Training loss", show_test=False)
        self.transport = Transport(layout=widgets.Layout(width="320px"))
        columns = [
            widgets.VBox([bars, banner], layout=widgets.Layout(flex="1 1 0", min_width="290px", padding="0 4px"))
            for bars, banner in zip(self.bars, self.banners, strict=True)
        ]
        super().__init__(
            [
                css_widget(),
                widgets.HBox([self.transport, self.toggle], layout=widgets.Layout(align_items="center", width="100%")),
                widgets.HBox(columns, layout=widgets.Layout(width="100%", flex_flow="row wrap")),
                self.loss,
            ],
            layout=widgets.Layout(width="100%"),
        )
        self.add_class("gw-app")
        self._start_runner(
            self.transport, name="gradwidgets-compare", fps=fps, speed=speed, torch_threads=torch_threads
        )

    # ------------------------------------------------------------------ public control

    def play(self) -> None:
        self.runner.play()

    def step(self, n: int = 1) -> None:
        """Pause, then step every (non-diverged) run ``n`` times."""
        self.runner.step(n)

    def reset(self) -> None:
        """Fresh weights for every run (same seed), step 0; diverged runs train again."""

        def reset_all() -> None:
            for session in self.sessions:
                session.reset()
            self._stopped = [False] * len(self.sessions)

        self.runner.call(reset_all)
        self.runner.clear_error()

    @observe("quantity")
    def _quantity_changed(self, change: dict) -> None:
        self.toggle.value = change["new"]
        self.axis.reset()
        self.runner.request_frame()

    # ------------------------------------------------------------------ trainer thread

    def _train_step(self) -> bool:
        for index, session in enumerate(self.sessions):
            if self._stopped[index]:
                continue
            session.step()
            if session.diverged:
                self._stopped[index] = True
        return not all(self._stopped)

    def _snapshot(self) -> tuple[tuple[SessionFrame, ...], RunStatus]:
        # Paused (a single step, a pause, a reset): no later frame would bring the loss, so it comes now.
        with_loss = self._loss_cadence.due(force=not self.runner.playing)
        frames = tuple(b.build(with_loss=with_loss, with_heat=False) for b in self._builders)
        return frames, RunStatus(self.runner.playing, self.runner.step_rate)

    # ------------------------------------------------ render thread (writes the charts; see gradwidgets.runtime)

    def _render(self, item: tuple[tuple[SessionFrame, ...], RunStatus]) -> None:
        frames, status = item
        now = time.monotonic()
        runs = [f.run for f in frames]
        if runs != self._runs:
            self._runs = runs
            self.axis.reset()
            self.loss.clear()
        if self._text_cadence.due(now, force=not status.playing):
            self._ratios = [ratio_text(frame) for frame in frames]
            for frame, banner, ratio in zip(frames, self.banners, self._ratios, strict=True):
                self._render_banner(frame, banner, ratio, status.playing)
            self.transport.show_status(frames[0].steps, status.playing, status.rate)
        self._render_bars(frames)
        curves = [(f.loss_steps, f.loss) for f in frames if f.loss_steps is not None and f.loss is not None]
        if len(curves) == len(frames):
            self.loss.show([steps for steps, _ in curves], [loss for _, loss in curves])

    def _render_bars(self, frames: tuple[SessionFrame, ...]) -> None:
        shown = [(f, b) for f, b in zip(frames, self.bars, strict=True) if f.stats is not None]
        for bars in self.bars:
            bars.quantity = self.quantity
        self.axis.fit(self.bars, [b.values(f.stats) for f, b in shown])
        for frame, bars, ratio in zip(frames, self.bars, self._ratios, strict=True):
            if frame.stats is None:
                bars.clear()
            else:
                bars.show(frame.stats, frame.diagnosis, bounds=self.axis.bounds, ratio_text=ratio)

    def _render_banner(self, frame: SessionFrame, banner: DiagnosisBanner, ratio: str, playing: bool) -> None:
        if self.runner.error is None:  # an error stays shown until the next play/step clears it
            show_frame(banner, frame, ratio, playing=playing, lockstep=True)

    def _show_error(self, error: BaseException) -> None:
        for banner in self.banners:
            show_error(banner, error, "Press Reset, or ▶ Play to try again.")

    # ------------------------------------------------------------------ save and export (see .export)

    def save_run(self, folder: str | os.PathLike[str]) -> list[Path]:
        """One run file per run, ``<folder>/<label>.gwrun``: ``gradwidgets watch <folder>`` shows them side by side."""
        from .export import run_paths, write_history_run

        paths = run_paths(folder, self.labels)
        for session, label, path in zip(self.sessions, self.labels, paths, strict=True):
            with session.lock:
                if session.last_stats is None:
                    raise ValueError("nothing to save yet: train at least one step")
                meta = {"app": "Compare", "label": label, "config": session.config.as_dict()}
                write_history_run(path, session.history, session.last_stats, meta, session.config)
        return paths

    def save_csv(self, path: str | os.PathLike[str]) -> Path:
        """Every run's history as one CSV: one row per (run, step, layer)."""
        from .export import history_rows, write_csv

        rows: list[dict] = []
        for session, label in zip(self.sessions, self.labels, strict=True):
            with session.lock:
                if session.last_stats is not None:
                    rows.extend(history_rows(session.history, session.last_stats.names, {"run": label}))
        return write_csv(path, rows)

    def save_png(self, path: str | os.PathLike[str]) -> list[Path]:
        """Each run's bars as PNG, ``<stem>-<label>.png`` (drawn by the browser, written when they arrive)."""
        from .export import save_png, slug

        base = Path(path)
        return [
            save_png(bars.figure, base.with_name(f"{base.stem}-{slug(label)}{base.suffix or '.png'}"))
            for bars, label in zip(self.bars, self.labels, strict=True)
        ]


# The values first (each config's fields and the shared options take the Playground's values).
Compare.__doc__ = (
    valid_values()
    + "\n    configs        2 to 4 NetConfigs or dicts of those fields (+ optimizer, lr, batch_size, momentum, "
    + "weight_decay, clip, freeze)\n\n    "
    + (Compare.__doc__ or "").strip()
)

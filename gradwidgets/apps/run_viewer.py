"""``RunViewer``: the live views for a run file, or several side by side, following them while a script writes.

::

    gw.RunViewer("run.gwrun")              # in a notebook; `gradwidgets watch run.gwrun` serves the same in Voila
    gw.RunViewer("runs/")                  # every *.gwrun in a folder (the newest four), side by side

One background thread polls the files (every ``interval`` seconds, 0.25 by default: new records reach the screen
within a second) and is the only writer of the charts, like the training apps' render thread. Each run gets a
column: verdict banner, gradient bars and heatmap, and, for a run recorded with instability signals (a model with
attention), their panel (largest attention logit, entropy, log Z per block); the loss curves share one chart. The
replay scrubber picks a step: every run shows its record at (or just before) that step; "Follow" jumps back to
the newest.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from ..core.blocks import group_columns, group_stats
from ..core.runfile import (
    SUFFIX,
    NotARunFileError,
    Run,
    RunFileError,
    RunFileVersionError,
    RunReader,
    find_runs,
    writer_alive,
)
from ..validation import check_limit
from ..widgets.banner import DiagnosisBanner
from ..widgets.bars import GradientBars
from ..widgets.heatmap import GradientHeatmap
from ..widgets.loss_curve import SERIES_COLORS, LossCurve
from ..widgets.shared_axis import SharedLogAxis
from ..widgets.signals_panel import SignalsPanel, readings_arrays
from ..widgets.slider import move_slider
from ..widgets.style import css_widget
from .lifecycle import close_tree

__all__ = ["RunViewer", "watch_app"]

logger = logging.getLogger(__name__)

MAX_RUNS = len(SERIES_COLORS)
HEAT_WINDOW = 200
RESCAN_SECONDS = 2.0
"""A folder is searched for new run files this often."""
SIGNALS_WINDOW = 1000
"""Instability readings drawn per run (the newest up to the step shown)."""


class RunSource:
    """One run file being followed: its reader, the :class:`Run` read so far, and what went wrong, if anything."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader = RunReader(path, salvage=True)
        self.run: Run | None = None
        self.error: str = ""
        self.last_change = time.monotonic()
        self.failed = False
        self.restarted = False
        """The file was cut to nothing after records were shown: the column must be cleared."""

    @property
    def label(self) -> str:
        return self.path.name[: -len(SUFFIX)] if self.path.name.endswith(SUFFIX) else self.path.name

    def poll(self) -> bool:
        """Read what was appended; True when something changed."""
        if self.failed:
            return False
        try:
            records, reset = self.reader.poll()
        except (RunFileVersionError, NotARunFileError) as error:
            self.failed, self.error = True, str(error)  # refused once: reading it again cannot help
            return True
        except (RunFileError, OSError) as error:
            self.error = str(error)  # maybe transient (a half-copied file): keep trying
            return True
        if self.error:
            self.error = ""
        header = self.reader.header
        if header is None:
            if reset and self.run is not None:  # cut to nothing (or replaced by an empty file): start over
                self.run = None
                self.restarted = True
                self.last_change = time.monotonic()
                return True
            return False
        if reset or self.run is None:
            self.run = Run(header, path=self.path, version=self.reader.version or 1)
        if records or reset:
            self.run.extend(records)
            self.last_change = time.monotonic()
            return True
        return False

    def close(self) -> None:
        self.reader.close()


class RunColumn(widgets.VBox):
    """Banner, bars and heatmap of one run; the instability signals' panel under them once the run has any."""

    def __init__(self, label: str, color: str, scale: bq.LogScale | None, compact: bool) -> None:
        self.banner = DiagnosisBanner(compact=compact)
        self.banner.show_text("waiting", f"Waiting for {label}", "No step recorded yet.")
        self.bars = GradientBars(
            title=label, scale=scale, height="320px", show_toggle=scale is None, update_title=label,
            grouper=group_stats,
        )
        if scale is not None:
            self.bars.chart.figure.title_style = {"font-size": "16px", "font-weight": "bold", "fill": color}
        # Side by side a column is ~310 px wide at 1280 px: a title naming the run was cut off at both ends there;
        # the bar chart above names the run, in its colour.
        heat_title = "Recent gradient norms" if compact else f"{label}: gradient norm over recent records"
        self.heatmap = GradientHeatmap(title=heat_title, height="260px")
        self.shown_step: int | None = None
        self.signals: SignalsPanel | None = None
        super().__init__(
            [self.banner, self.bars, self.heatmap],
            layout=widgets.Layout(flex="1 1 0", min_width="300px", padding="0 4px"),
        )

    def show_signals(self, run: Run, step: int) -> None:
        """The run's instability readings up to ``step`` and the warning they give there (nothing for a run
        recorded without signals: no panel)."""
        readings = [r for r in run.signals if r.step <= step]
        if not readings:
            return
        if self.signals is None:
            self.signals = SignalsPanel(height="220px")
            self.children = (self.banner, self.bars, self.heatmap, self.signals)
        warning = None
        warned = [r for r in run.records if r.step <= step and r.verdict is not None and r.verdict.kind == "unstable"]
        if warned:  # the last warning recorded up to this step: it stays shown once the growth has stopped
            verdict = warned[-1].verdict
            assert verdict is not None
            warning = (verdict.layers[0] if verdict.layers else "", warned[-1].step, verdict.message)
        self.signals.show_warning(warning, redraw=False)
        self.signals.show(**readings_arrays(readings[-SIGNALS_WINDOW:]))


class RunViewer(widgets.VBox):
    """Watch one or more run files (a path, a folder of ``*.gwrun``, or a list of them), live or finished.

    ``follow``: keep reading files that are still being written (``False`` reads once). ``interval``: seconds
    between polls. ``labels``: one per run (default: the file names). At most four runs show; a folder shows its
    four newest.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        follow: bool = True,
        interval: float = 0.25,
        labels: Sequence[str] | None = None,
    ) -> None:
        interval = check_limit("interval", interval, limit="poll_interval")
        targets = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not targets or not all(isinstance(t, (str, os.PathLike)) for t in targets):
            raise ValueError(f"path must be a run file, a folder of {SUFFIX} files, or a list of them; got {path!r}")
        self.targets = [Path(t).expanduser() for t in targets]
        for target in self.targets:
            if not target.exists() and not target.parent.is_dir():
                raise FileNotFoundError(f"no run file or folder at {target} (nor a folder to wait for it in)")
        self.follow = bool(follow)
        self.interval = float(interval)
        self._labels = list(labels) if labels is not None else None
        self.sources: list[RunSource] = []
        self.columns: list[RunColumn] = []
        self.frames = 0
        self.error: BaseException | None = None
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._scrub_from_code = False
        self._last_scan = -1e9
        self._dirty = True
        self.axis = SharedLogAxis()
        self.scale = self.axis.scale

        self.title = widgets.HTML()
        self.status = widgets.HTML()
        self.scrubber = widgets.IntSlider(
            value=0, min=0, max=0, description="Step", continuous_update=True,
            layout=widgets.Layout(width="100%"), style={"description_width": "50px"},
        )
        self.follow_toggle = widgets.ToggleButton(
            value=True, description="Follow", icon="forward", tooltip="Show the newest record as it arrives",
            layout=widgets.Layout(width="120px"),
        )
        self.scrubber.observe(self._on_scrub, "value")
        self.follow_toggle.observe(lambda _: self._request(), "value")
        self.column_box = widgets.HBox(layout=widgets.Layout(width="100%", flex_flow="row wrap"))
        self.loss: LossCurve | None = None
        self.loss_box = widgets.VBox(layout=widgets.Layout(width="100%"))
        super().__init__(
            [
                css_widget(),
                self.title,
                widgets.HBox([self.follow_toggle, self.scrubber], layout=widgets.Layout(width="100%")),
                self.status,
                self.column_box,
                self.loss_box,
            ],
            layout=widgets.Layout(width="100%"),
        )
        self.add_class("gw-app")
        self._scan()
        self._refresh()
        self._thread = threading.Thread(target=self._loop, name="gradwidgets-run-viewer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public

    @property
    def runs(self) -> list[Run | None]:
        return [s.run for s in self.sources]

    @property
    def shown_steps(self) -> list[int | None]:
        """The step each column shows now (``None`` before its first record)."""
        return [c.shown_step for c in self.columns]

    def show_step(self, step: int) -> None:
        """Replay: stop following and show every run at ``step``."""
        self.follow_toggle.value = False
        self.scrubber.value = int(step)

    def refresh(self) -> None:
        """Read the files now and redraw (the thread does this by itself every ``interval``)."""
        self._request()

    def close(self) -> None:
        """Stop the thread, close the files and every widget."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        for source in self.sources:
            source.close()
        if self.loss is not None:
            close_tree(self.loss)
        close_tree(self)

    # ------------------------------------------------------------------ thread

    def _request(self) -> None:
        self._dirty = True
        self._wake.set()

    def _on_scrub(self, change: dict) -> None:
        if self._scrub_from_code:
            return
        if self.follow_toggle.value:
            self.follow_toggle.value = False  # the user took the scrubber: replay, stop following
        self._request()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._refresh()
            except Exception as exc:  # noqa: BLE001 - shown in the banner, never lost in the thread
                logger.exception("RunViewer stopped drawing")
                self.error = exc
                for column in self.columns:
                    column.banner.show_text("error", f"Viewer error: {type(exc).__name__}", str(exc) or repr(exc))
                self._stop.wait(2.0)

    def _refresh(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self.follow and now - self._last_scan >= RESCAN_SECONDS:
                self._scan()
            changed = False
            for source in self.sources:
                if self.follow or source.run is None:
                    changed |= source.poll()
            if any(source.restarted for source in self.sources):
                for source in self.sources:
                    source.restarted = False
                self._build_columns()  # fresh columns: nothing of the old records stays on screen
            if changed or self._dirty:
                self._dirty = False
                self._render()
            self._render_status()

    # ------------------------------------------------------------------ sources and layout

    def _scan(self) -> None:
        self._last_scan = time.monotonic()
        paths: list[Path] = []
        for target in self.targets:
            paths.extend(find_runs(target) if target.exists() else [target])
        paths = paths[-MAX_RUNS:]
        self._hidden = max(0, sum(len(find_runs(t)) if t.exists() else 1 for t in self.targets) - MAX_RUNS)
        if [s.path for s in self.sources] == paths:
            return
        known = {s.path: s for s in self.sources}
        for source in self.sources:
            if source.path not in paths:
                source.close()
        self.sources = [known.get(p) or RunSource(p) for p in paths]
        self._build_columns()

    def _build_columns(self) -> None:
        labels = [s.label for s in self.sources]
        if self._labels is not None and len(self._labels) == len(labels):
            labels = list(self._labels)
        several = len(self.sources) > 1
        old = list(self.columns)
        self.axis.reset()
        self.columns = [
            RunColumn(label, color, self.scale if several else None, compact=several)
            for label, color in zip(labels, SERIES_COLORS, strict=False)
        ]
        old_loss = self.loss
        self.loss = LossCurve(labels=labels or ["run"], title="Training loss", show_test=False)
        for column in self.columns:
            column.bars.on_redraw = self._request  # a toggle redraws on the viewer's thread
        self.column_box.children = tuple(self.columns)
        self.loss_box.children = (self.loss,)
        for column in old:
            close_tree(column, keep=(self.scale,))  # the log scale is shared with the new columns
        if old_loss is not None:
            close_tree(old_loss)
        names = ", ".join(str(t) for t in self.targets)
        self.title.value = (
            f"<div style='font-size:22px;font-weight:bold'>Watching {len(self.sources)} run"
            f"{'s' if len(self.sources) != 1 else ''}</div><div style='opacity:0.75;font-size:15px'>{names}</div>"
        )
        self._dirty = True

    # ------------------------------------------------------------------ drawing (this thread only)

    def _steps_span(self) -> tuple[int, int]:
        firsts, lasts = [], []
        for source in self.sources:
            if source.run is not None and len(source.run):
                firsts.append(int(source.run.steps[0]))
                lasts.append(int(source.run.steps[-1]))
        return (min(firsts), max(lasts)) if firsts else (0, 0)

    def _render(self) -> None:
        low, high = self._steps_span()
        following = self.follow_toggle.value
        self._scrub_from_code = True
        try:
            move_slider(self.scrubber, low, high, high if following else None)
        finally:
            self._scrub_from_code = False
        step = high if following else int(self.scrubber.value)
        stats_list: list[tuple[Any, Run, int] | None] = []
        for source, column in zip(self.sources, self.columns, strict=True):
            run = source.run
            if source.error:
                column.banner.show_text("error", f"Cannot read {source.path.name}", source.error)
            if run is None or not len(run):
                stats_list.append(None)
                continue
            index = len(run) - 1 if following else run.index_of(step)
            stats_list.append((run.stats(index), run, index))
        shared = len(self.sources) > 1
        if shared:
            values = [c.bars.values(s[0]) for c, s in zip(self.columns, stats_list, strict=True) if s is not None]
            self.axis.fit([column.bars for column in self.columns], values)
        for column, item, source in zip(self.columns, stats_list, self.sources, strict=True):
            if item is None:
                continue
            stats, run, index = item
            record = run.records[index]
            verdict = record.verdict
            column.bars.show(stats, verdict, bounds=self.axis.bounds if shared else None)
            if not source.error:
                note = f"step {stats.step}"
                if stats.skipped:
                    note += " · skipped by the GradScaler (inf/NaN in the scaled gradients), not a divergence"
                if verdict is not None:
                    column.banner.show(verdict, note=note)
                else:
                    column.banner.show_text("waiting", "No verdict recorded", "", note=note)
            lo = max(0, index + 1 - HEAT_WINDOW)
            window = run.records[lo : index + 1]
            if len(window) >= 2:
                shown = column.bars.shown  # the heatmap's rows follow the bars' grouping (blocks, kinds, rows)
                grads = group_columns(np.stack([r.grad_norm for r in window]), shown)
                names = shown.names if getattr(shown, "group_of", None) is not None else None
                column.heatmap.show(np.array([r.step for r in window]), grads, names)
            column.show_signals(run, int(stats.step))
            column.shown_step = int(stats.step)
        self._render_loss(step if not following else None)
        self.frames += 1

    def _render_loss(self, until: int | None) -> None:
        xs, ys = [], []
        for source in self.sources:
            run = source.run
            if run is None or not len(run):
                xs.append(np.zeros(0))
                ys.append(np.zeros(0))
                continue
            steps, losses = run.loss_steps, run.losses
            if until is not None:
                keep = steps <= until
                steps, losses = steps[keep], losses[keep]
            xs.append(steps)
            ys.append(losses)
        if self.loss is not None and any(len(x) for x in xs):
            self.loss.show(xs, ys)

    def _render_status(self) -> None:
        parts = []
        for source in self.sources:
            run = source.run
            if run is None or not len(run):
                state = "waiting for the first record" if not source.error else "unreadable"
                parts.append(f"<b>{source.label}</b>: {state}")
                continue
            live = writer_alive(source.path)
            ago = time.monotonic() - source.last_change
            if live:
                state = f"<span style='color:#1a7f37'>live</span> (last record {ago:.0f} s ago)"
            else:
                state = "finished" if source.reader.finished else "stopped (not closed: the writer ended early)"
            notes = ""
            if run.dropped:
                notes += f" · {run.dropped} record(s) dropped by the writer (I/O errors)"
            if source.reader.damage:
                notes += f" · damaged at byte {source.reader.damage[0]}: intact records after it recovered"
            parts.append(f"<b>{source.label}</b>: step {int(run.steps[-1])} · {len(run)} records · {state}{notes}")
        if getattr(self, "_hidden", 0):
            parts.append(f"{self._hidden} older run(s) not shown (at most {MAX_RUNS})")
        value = "<div style='font-size:16px'>" + " &nbsp;|&nbsp; ".join(parts) + "</div>"
        if value != self.status.value:
            self.status.value = value


def watch_app(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], interval: float = 0.25) -> widgets.VBox:
    """The page ``gradwidgets watch PATH`` serves: a heading and a :class:`RunViewer`."""
    viewer = RunViewer(path, interval=interval)
    header = widgets.HTML(
        "<h1 style='font-size:28px;margin:4px 0'>gradwidgets watch</h1>"
        "<div style='font-size:16px'>Per-layer gradients of a training run, read from its run file as "
        "the script writes it. Drag the step slider to replay; press Follow to return to the newest record.</div>"
    )
    page = widgets.VBox([header, viewer], layout=widgets.Layout(width="100%"))
    page.add_class("gw-dashboard")
    page.viewer = viewer  # type: ignore[attr-defined]
    return page

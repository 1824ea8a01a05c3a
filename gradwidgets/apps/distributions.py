"""Distributions per layer in a notebook (``gw.Distributions(model, optimizer)``) and in the Playground (a
toggle that opens the section).

The probe (:mod:`gradwidgets.core.distributions`) measures at the detail cadence around ``optimizer.step()``;
these classes turn its readings into the view's arrays and draw them at most twice a second, always the newest
one, so a fast loop costs frames, never its own time.
"""

from __future__ import annotations

import html
import logging
import time
from typing import Any

import ipywidgets as widgets
from torch import nn

from ..core.distributions import DistributionProbe, DistributionReading, UpdateDataSeries
from ..runtime.draw import DrawThread
from ..widgets.distributions import DistributionsView
from ..widgets.style import css_widget
from .frames import Cadence
from .lifecycle import close_tree

__all__ = ["DRAW_INTERVAL", "Distributions", "DistributionsSection", "draw_reading"]

logger = logging.getLogger(__name__)

UNMEASURED = "no hidden state to hook in this net"
"""Why a recurrent net (its cell keeps the states inside) or a model without activation modules has no
hidden-state charts."""
DRAW_INTERVAL = 0.5
"""Seconds between two drawings: four charts of up to ~60 lines, a few kB each."""


def draw_reading(view: DistributionsView, reading: DistributionReading, series: UpdateDataSeries) -> None:
    """Every chart of ``view`` from one reading and the update:data series so far."""
    if reading.activations is not None:
        acts = reading.activations
        view.show_activations(acts.names, acts.centres(), acts.fractions(), acts.mean, acts.std, reading.step)
    elif reading.gradients is None:
        view.show_unmeasured(UNMEASURED)
    if reading.gradients is not None:
        grads = reading.gradients
        view.show_gradients(grads.names, grads.centres()[0], grads.fractions(), reading.step)
    if reading.updates is not None:
        updates = reading.updates
        view.show_updates(updates.names, updates.centres()[0], updates.fractions(), reading.step)
    if len(series.steps):
        view.show_update_data(series.names, series.steps, series.values)


class Distributions(widgets.VBox):
    """Karpathy's distribution plots for your own loop: histograms of every layer's activations, gradients and
    weight updates, and update:data over time with the 1e-3 reference.

    ``Distributions(model, optimizer, every=20)``: hooks on the model and on ``optimizer.step()`` measure at
    the first step and every ``every``-th; nothing else to call in the loop. ``close()`` removes the hooks and
    the widgets; ``probe`` holds the numbers (``probe.latest``, ``probe.series()``).
    """

    def __init__(self, model: nn.Module, optimizer: Any, every: int = 20, height: str = "250px") -> None:
        self.view = DistributionsView(height=height)
        self.status = widgets.HTML("<i>The distributions appear after the first optimizer step.</i>")
        self._draw = DrawThread(
            self._draw_frame, name="gradwidgets-distributions", idle_exit=5.0, on_error=self._show_error
        )
        self.probe = DistributionProbe(model, optimizer, every=every, on_reading=self._draw.post)
        super().__init__([css_widget(), self.status, self.view], layout=widgets.Layout(width="100%"))
        self.add_class("gw-app")

    def _draw_frame(self, reading: DistributionReading) -> None:
        started = time.monotonic()
        draw_reading(self.view, reading, self.probe.series())
        value = f"Measured at step {reading.step} (every {self.probe.every} steps)."
        if self.status.value != value:
            self.status.value = value
        time.sleep(max(0.0, DRAW_INTERVAL - (time.monotonic() - started)))  # the mailbox keeps the newest

    def _show_error(self, error: BaseException) -> None:
        self.status.value = f"<b>Drawing the distributions failed:</b> {html.escape(repr(error))}"

    def close(self) -> None:
        self.probe.remove()
        self._draw.close()
        close_tree(self)


class DistributionsSection:
    """The Playground's "distributions" toggle and, while it is on, the four charts under it.

    ``before_step(model, optimizer)`` on the trainer thread attaches or drops the probe to match the toggle and a
    rebuilt model; ``render(playing)`` on the render thread draws the newest reading (throttled while playing).
    """

    def __init__(self, height: str = "240px") -> None:
        self.toggle = widgets.ToggleButton(
            value=False,
            description="distributions",
            tooltip="Per-layer histograms of activations, gradients and updates; update:data over time (Karpathy)",
            layout=widgets.Layout(width="130px"),
        )
        self.note = widgets.HTML("")
        self.view = DistributionsView(height=height, layout=widgets.Layout(width="100%", display="none"))
        self.widget = widgets.VBox(
            [widgets.HBox([self.toggle, self.note], layout=widgets.Layout(width="100%")), self.view],
            layout=widgets.Layout(width="100%"),
        )
        self.probe: DistributionProbe | None = None
        self._drawn: DistributionReading | None = None
        self._cadence = Cadence(DRAW_INTERVAL)
        self._cleared = True

    def before_step(self, model: nn.Module, optimizer: Any, steps: int = 0) -> None:
        """``steps``: the optimizer steps the run has made so far (the readings count on from there)."""
        want = bool(self.toggle.value)
        probe = self.probe
        if probe is not None and (not want or probe.model is not model or probe.optimizer is not optimizer):
            probe.remove()
            self.probe = None
        if want and self.probe is None:
            self.probe = DistributionProbe(model, optimizer, first_step=steps)

    def render(self, playing: bool) -> None:
        on = bool(self.toggle.value)
        display = None if on else "none"
        if self.view.layout.display != display:
            self.view.layout.display = display
        probe = self.probe
        reading = probe.latest if probe is not None and on else None
        if reading is None:
            note = "<i>The distributions appear after the next training step.</i>" if on else ""
            if not self._cleared and (probe is None or probe.latest is None):
                self.view.clear()
                self._cleared = True
            if self.note.value != note:
                self.note.value = note
            return
        if reading is self._drawn or not self._cadence.due(force=not playing):
            return
        self._drawn = reading
        self._cleared = False
        assert probe is not None
        draw_reading(self.view, reading, probe.series())
        note = f"measured at step {reading.step}, every {probe.every} steps · dashed: 1e-3"
        if self.note.value != note:
            self.note.value = note

    def remove(self) -> None:
        if self.probe is not None:
            self.probe.remove()
            self.probe = None

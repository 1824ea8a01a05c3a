"""A toggle that adds the forward side to an app: batch spread, saturation, dead units and |dL/dh|.

Why a row of text and not another chart: the numbers that explain a gradient bar (the batch spread collapsing,
units saturated or dead, dL/dh vs the parameter gradient) are few, and a one-line summary reads at a glance
beside the bars. Hooks live only while the toggle is on; they are attached and removed on the trainer thread,
between two steps (``before_step``), so a forward pass never sees the hook table change under it.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
from torch import nn

from ..core.activation_stats import ActivationReading, ActivationStats

__all__ = ["ForwardRow", "forward_summary"]


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return "—"
    return "0" if value == 0 else f"{value:.1e}"


def forward_summary(reading: ActivationReading) -> str:
    """One line of HTML: batch spread first -> last hidden layer, worst saturation / dead share, dL/dh ratio."""
    stack = reading.in_stack
    spread = reading.std[stack]
    parts = [f"batch spread, first → last hidden layer: {_fmt(spread[0])} → {_fmt(spread[-1])}"]
    zero = int(np.sum(spread == 0))
    if zero:
        parts[-1] += f" ({zero} layer(s) exactly constant across the batch)"
    saturated = reading.saturated[stack]
    if np.isfinite(saturated).any():
        parts.append(f"saturated (|z| > {reading.saturation_z:g}): at most {np.nanmax(saturated):.0%}")
    dead = reading.dead[stack]
    if np.isfinite(dead).any():
        parts.append(f"dead units: at most {np.nanmax(dead):.0%}")
    parts.append(f"|dL/dh| first/last: {_fmt(reading.state_grad_ratio())}")
    return "<span style='font-size:14px'><b>Forward:</b> " + html.escape(" · ".join(parts)) + "</span>"


class ForwardRow:
    """``widget`` (a toggle and a line of text); call ``before_step(model)`` and ``after_step()`` on the trainer
    thread around each training step, and ``render()`` on the render thread."""

    def __init__(self) -> None:
        self.toggle = widgets.ToggleButton(
            value=False,
            description="forward stats",
            tooltip="Per-layer batch spread, saturated/dead units and dL/dh, read by forward hooks",
            layout=widgets.Layout(width="130px"),
        )
        self.text = widgets.HTML("")
        self.widget = widgets.HBox([self.toggle, self.text], layout=widgets.Layout(width="100%"))
        self.stats: ActivationStats | None = None
        self.reading: ActivationReading | None = None
        self._unavailable: int | None = None

    def before_step(self, model: nn.Module) -> None:
        """Attach or drop the hooks to match the toggle (and a rebuilt model)."""
        want = bool(self.toggle.value)
        if self.stats is not None and (not want or self.stats.model is not model):
            self.stats.remove()
            self.stats, self.reading = None, None
        if want and self.stats is None and self._unavailable != id(model):
            try:
                self.stats = ActivationStats(model)
                self._unavailable = None
            except ValueError:
                self._unavailable = id(model)  # e.g. recurrent cells: no activation module to hook

    def after_step(self) -> None:
        """Keep the reading of the last *training* forward (evaluation passes run without gradients)."""
        stats = self.stats
        if stats is None or stats.forwards == 0:
            return
        reading = stats.read()
        if np.isfinite(reading.state_grad_norm).any():
            self.reading = reading

    def render(self) -> None:
        if not self.toggle.value:
            value = ""
        elif self._unavailable is not None:
            value = "<i>Forward statistics need a net with activation modules (MLP or transformer).</i>"
        elif self.reading is None:
            value = "<i>Forward statistics appear after the next training step.</i>"
        else:
            value = forward_summary(self.reading)
        if self.text.value != value:
            self.text.value = value

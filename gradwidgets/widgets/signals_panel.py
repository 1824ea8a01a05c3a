"""``SignalsPanel``: the instability signals per block over the steps (issue 23), beside the gradient bars.

Four charts share the step axis: the largest attention logit per block (log axis: it grows by decades before an
attention-logit spike, Wortsman et al. 2023), the attention entropy per block (it collapses with it; Zhai et al.
2023), the output's log Z (mean and largest; it drifts in an output-logit divergence) and per block the cosine
between the gradient and the optimizer's momentum (below the dashed line successive gradients point against each
other: the run oscillates at the edge of stability, which spikes the loss if the schedule keeps raising the learning
rate). Blocks are coloured from
first (light) to last (dark); the block a warning names is drawn on top, thick, in the warning's colour, and the
warning's message stands above the charts. Plain arrays in (the apps turn readings into them): no torch here.
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Sequence
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from .figures import chart_axis, chart_figure, legend_html, nice_ceiling, nice_step, nice_ticks
from .style import kind_background, kind_text

__all__ = ["MAX_POINTS", "SignalsPanel", "block_colors", "readings_arrays"]

MAX_POINTS = 200
"""Steps drawn per line (evenly spread, the newest always in): a frame's message stays small on a long run."""
WARNING_COLOR = "#ad1457"
LOG_Z_COLORS = ("#1f77b4", "#ff7f0e")


def block_colors(count: int) -> list[str]:
    """``count`` blues from light (the first block) to dark (the last): order reads at a glance. Both ends stay
    visible on a light and a dark page (#6baed6: 2.4:1 on white, 7.8:1 on #111; #2171b5: 5.1:1 and 3.7:1; the
    earlier #9ecae1 .. #08306b had 1.7:1 on white and 1.5:1 on dark)."""
    if count <= 0:
        return []
    light, dark = np.array([0x6B, 0xAE, 0xD6]), np.array([0x21, 0x71, 0xB5])
    mix = np.linspace(0.0, 1.0, count) if count > 1 else np.zeros(1)
    return ["#" + "".join(f"{int(round(c)):02x}" for c in light + (dark - light) * t) for t in mix]


def readings_arrays(readings: Sequence[Any]) -> dict[str, Any]:
    """Readings (anything with ``step``, ``blocks``, ``max_logit``, ``entropy``, ``log_z``, ``log_z_max`` and
    optionally ``momentum_cos``, as :class:`gradwidgets.core.signals.InstabilityReading`) as the arrays
    :meth:`SignalsPanel.show` takes; the blocks are the latest reading's and earlier readings that name other blocks
    are left out."""
    if not readings:
        return {"steps": np.zeros(0), "blocks": (), "max_logit": np.zeros((0, 0)), "entropy": np.zeros((0, 0)),
                "log_z": np.zeros(0), "log_z_max": np.zeros(0), "momentum_cos": np.zeros((0, 0))}
    blocks = tuple(readings[-1].blocks)
    same = [r for r in readings if tuple(r.blocks) == blocks]
    return {
        "steps": np.array([r.step for r in same], dtype=np.float64),
        "blocks": blocks,
        "max_logit": np.array([np.asarray(r.max_logit, dtype=np.float64) for r in same]).reshape(len(same), -1),
        "entropy": np.array([np.asarray(r.entropy, dtype=np.float64) for r in same]).reshape(len(same), -1),
        "log_z": np.array([r.log_z for r in same], dtype=np.float64),
        "log_z_max": np.array([r.log_z_max for r in same], dtype=np.float64),
        "momentum_cos": np.array(
            [np.asarray(getattr(r, "momentum_cos", np.full(len(blocks), np.nan)), dtype=np.float64) for r in same]
        ).reshape(len(same), -1),
    }


def _spread(count: int, limit: int) -> np.ndarray:
    """At most ``limit`` indices of ``count``, evenly spread, the first and the last included."""
    if count <= limit:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, limit)).astype(int))


def _log_range(values: np.ndarray, floor: float) -> tuple[float, float]:
    """Powers of ten around the positive finite values (at least one decade): the axis follows the data."""
    positive = values[np.isfinite(values) & (values > 0)]
    if not len(positive):
        return floor, floor * 10
    low = 10.0 ** math.floor(math.log10(max(float(positive.min()), floor)))
    high = 10.0 ** math.ceil(math.log10(float(positive.max()) * 1.05))
    return low, max(high, low * 10)


class SignalsPanel(widgets.VBox):
    """Per-block instability signals over the steps: ``show(...)`` with arrays, or ``show_readings(readings,
    warning)``. ``logit_limit`` and ``edge_cos`` draw the warning rules' thresholds on the logit and the cosine
    charts (dashed)."""

    def __init__(
        self, logit_limit: float = 300.0, height: str = "260px", edge_cos: float = -0.3, **kwargs: Any
    ) -> None:
        self.logit_limit, self.edge_cos = float(logit_limit), float(edge_cos)
        self._lock = threading.Lock()
        self.scale_x = bq.LinearScale(min=0.0, max=10.0, allow_padding=False)
        self.scale_logit = bq.LogScale(min=1.0, max=1e3, allow_padding=False)
        self.scale_entropy = bq.LinearScale(min=0.0, max=1.0, allow_padding=False)
        self.scale_log_z = bq.LinearScale(min=0.0, max=10.0, allow_padding=False)
        self.scale_cos = bq.LinearScale(min=-1.0, max=1.0, allow_padding=False)
        cos_scales = {"x": self.scale_x, "y": self.scale_cos}
        logit_scales = {"x": self.scale_x, "y": self.scale_logit}
        entropy_scales = {"x": self.scale_x, "y": self.scale_entropy}
        self.logit_lines = self._lines(logit_scales)
        self.logit_warned = self._lines(logit_scales, [WARNING_COLOR], 4.0)
        self.limit_line = self._lines(logit_scales, ["#888888"], 1.5, line_style="dashed")
        self.entropy_lines = self._lines(entropy_scales)
        self.entropy_warned = self._lines(entropy_scales, [WARNING_COLOR], 4.0)
        self.log_z_lines = self._lines({"x": self.scale_x, "y": self.scale_log_z}, list(LOG_Z_COLORS))
        self.cos_lines = self._lines(cos_scales)
        self.cos_warned = self._lines(cos_scales, [WARNING_COLOR], 4.0)
        self.edge_line = self._lines(cos_scales, ["#888888"], 1.5, line_style="dashed")
        self.axes_x = [chart_axis(self.scale_x, "step", tick_format="d") for _ in range(4)]
        self.axis_logit = chart_axis(self.scale_logit, "largest q·k/√d", vertical=True, tick_format=".0e",
                                     label_offset="56px")
        self.axis_entropy = chart_axis(self.scale_entropy, "nats", vertical=True, tick_format=".2~g",
                                       label_offset="48px")
        self.axis_log_z = chart_axis(self.scale_log_z, "log Z", vertical=True, tick_format=".3~g",
                                     label_offset="48px")
        self.axis_cos = chart_axis(self.scale_cos, "cos", vertical=True, tick_format=".1~f", label_offset="48px")
        self.axis_cos.tick_values = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
        margin = {"bottom": 50, "left": 72, "right": 16}
        self.logit_figure = chart_figure([self.limit_line, self.logit_lines, self.logit_warned],
                                         [self.axes_x[0], self.axis_logit], "Largest attention logit", height,
                                         margin=margin)
        self.entropy_figure = chart_figure([self.entropy_lines, self.entropy_warned],
                                           [self.axes_x[1], self.axis_entropy], "Attention entropy", height,
                                           margin=margin)
        self.log_z_figure = chart_figure([self.log_z_lines], [self.axes_x[2], self.axis_log_z],
                                         "Output log Z (z-loss quantity)", height, margin=margin)
        self.cos_figure = chart_figure([self.edge_line, self.cos_lines, self.cos_warned],
                                       [self.axes_x[3], self.axis_cos], "Gradient vs momentum", height,
                                       margin=margin)
        self.note = widgets.HTML()
        self.legend = widgets.HTML()
        self.warned_block: str | None = None
        self.blocks: tuple[str, ...] = ()
        self.steps = np.zeros(0)
        self.frames = 0
        self._legend_key: tuple[Any, ...] = ()
        self.show_warning(None)
        self.figures = (self.logit_figure, self.entropy_figure, self.log_z_figure, self.cos_figure)
        for figure in self.figures:
            figure.layout.width, figure.layout.flex = "auto", "1 1 280px"  # side by side where they fit
        charts = widgets.HBox(
            list(self.figures),
            layout=widgets.Layout(width="100%", flex_flow="row wrap"),
        )
        super().__init__([self.note, charts, self.legend], layout=widgets.Layout(width="100%"), **kwargs)

    @staticmethod
    def _lines(
        scales: dict[str, bq.Scale], colors: list[str] | None = None, width: float = 2.0, **options: Any
    ) -> bq.Lines:
        return bq.Lines(x=np.zeros(0), y=np.zeros(0), scales=scales, colors=colors or ["#1f77b4"],
                        stroke_width=width, **options)

    # ------------------------------------------------------------------------------------------------ drawing

    def show_readings(self, readings: Sequence[Any], warning: Any | None = None) -> None:
        """Draw readings (see :func:`readings_arrays`); ``warning`` anything with ``block``, ``step`` and
        ``message`` (an ``InstabilityWarning``) or None."""
        self.show_warning(None if warning is None else (warning.block, int(warning.step), warning.message), False)
        self.show(**readings_arrays(readings))

    def show(
        self,
        steps: np.ndarray,
        blocks: Sequence[str],
        max_logit: np.ndarray,
        entropy: np.ndarray,
        log_z: np.ndarray,
        log_z_max: np.ndarray,
        momentum_cos: np.ndarray | None = None,
    ) -> None:
        """``steps`` [T]; ``max_logit``, ``entropy`` and ``momentum_cos`` (None: not measured) [T, blocks];
        ``log_z``/``log_z_max`` [T]. At most :data:`MAX_POINTS` steps are sent per line."""
        steps = np.asarray(steps, dtype=np.float64).reshape(-1)
        count, width = len(steps), len(blocks)
        max_logit = np.asarray(max_logit, dtype=np.float64).reshape(count, width)
        entropy = np.asarray(entropy, dtype=np.float64).reshape(count, width)
        log_z = np.asarray(log_z, dtype=np.float64).reshape(count)
        log_z_max = np.asarray(log_z_max, dtype=np.float64).reshape(count)
        cos = np.full((count, width), np.nan) if momentum_cos is None else np.asarray(momentum_cos, dtype=np.float64)
        cos = cos.reshape(count, width)
        keep = _spread(count, MAX_POINTS)
        steps, max_logit, entropy, cos = steps[keep], max_logit[keep], entropy[keep], cos[keep]
        log_z, log_z_max = log_z[keep], log_z_max[keep]
        with self._lock:
            self.blocks, self.steps = tuple(blocks), steps
            colors = block_colors(width)
            first, last = (float(steps[0]), float(steps[-1])) if count else (0.0, 10.0)
            tick = nice_step(max(last - first, 10.0), 5)
            high_x = first + math.ceil(max(last - first, 10.0) / tick - 1e-9) * tick  # the data's end, a tick on
            with self.scale_x.hold_sync():
                self.scale_x.min, self.scale_x.max = first, high_x
            for axis in self.axes_x:
                axis.tick_values = nice_ticks(first, high_x, integer=True)
            low, high = _log_range(max_logit, 1e-2)
            if high * 10 >= self.logit_limit:  # within a decade of the warning's threshold: show the threshold
                high = max(high, 10.0 ** math.ceil(math.log10(self.logit_limit * 1.05)))
            with self.scale_logit.hold_sync():
                self.scale_logit.min, self.scale_logit.max = low, high
            self.axis_logit.tick_values = 10.0 ** np.arange(round(math.log10(low)), round(math.log10(high)) + 1)
            positive = np.where(max_logit > 0, max_logit, np.nan)  # a log axis draws no zero or negative logit
            self._set(self.logit_lines, steps, positive.T, colors)
            with self.limit_line.hold_sync():
                inside = low <= self.logit_limit <= high
                self.limit_line.x = np.array([first, high_x]) if inside else np.zeros(0)
                self.limit_line.y = np.full(2, self.logit_limit) if inside else np.zeros(0)
            finite = entropy[np.isfinite(entropy)]
            top = nice_ceiling(float(finite.max())) if len(finite) else 1.0
            with self.scale_entropy.hold_sync():
                self.scale_entropy.min, self.scale_entropy.max = 0.0, top
            self.axis_entropy.tick_values = nice_ticks(0.0, top)
            self._set(self.entropy_lines, steps, entropy.T, colors)
            both = np.concatenate([log_z, log_z_max])
            both = both[np.isfinite(both)]
            low_z = min(0.0, -nice_ceiling(-float(both.min()))) if len(both) and both.min() < 0 else 0.0
            high_z = nice_ceiling(float(both.max())) if len(both) and both.max() > 0 else 1.0
            with self.scale_log_z.hold_sync():
                self.scale_log_z.min, self.scale_log_z.max = low_z, high_z
            self.axis_log_z.tick_values = nice_ticks(low_z, high_z)
            self._set(self.log_z_lines, steps, np.vstack([log_z, log_z_max]), list(LOG_Z_COLORS))
            self._set(self.cos_lines, steps, cos.T, colors)
            with self.edge_line.hold_sync():
                self.edge_line.x, self.edge_line.y = np.array([first, high_x]), np.full(2, self.edge_cos)
            self._draw_warned(positive, entropy, cos)
            self._set_legend(colors)
            self.frames += 1

    @staticmethod
    def _set(mark: bq.Lines, x: np.ndarray, y: np.ndarray, colors: list[str]) -> None:
        with mark.hold_sync():
            mark.x = x.astype(np.float32)
            mark.y = np.asarray(y, dtype=np.float32)
            if colors:
                mark.colors = colors

    def _draw_warned(self, logits: np.ndarray, entropy: np.ndarray, cos: np.ndarray) -> None:
        index = self.blocks.index(self.warned_block) if self.warned_block in self.blocks else None
        for mark, values in ((self.logit_warned, logits), (self.entropy_warned, entropy), (self.cos_warned, cos)):
            with mark.hold_sync():
                if index is None or not len(self.steps):
                    mark.x, mark.y = np.zeros(0), np.zeros(0)
                else:
                    mark.x, mark.y = self.steps.astype(np.float32), values[:, index].astype(np.float32)

    def _set_legend(self, colors: list[str]) -> None:
        key = (self.blocks, self.warned_block)
        if key == self._legend_key:
            return
        self._legend_key = key
        entries: list[tuple[str, str] | tuple[str, str, str]] = list(zip(self.blocks, colors, strict=True))
        if len(entries) > 12:  # names where they fit: first, middle, last, and the warned one
            picks = sorted({0, len(entries) // 2, len(entries) - 1})
            entries = [entries[i] for i in picks]
        if self.warned_block is not None:
            entries.append((f"{self.warned_block} (warning)", WARNING_COLOR))
        entries += [("log Z mean", LOG_Z_COLORS[0], "solid"), ("log Z max", LOG_Z_COLORS[1], "solid")]
        self.legend.value = legend_html(entries, lead="blocks, first to last:")

    def show_warning(self, warning: tuple[str, int, str] | None, redraw: bool = True) -> None:
        """``(block, step, message)`` of the instability warning to highlight, or None (no warning); ``redraw``
        the highlighted line now (else at the next :meth:`show`)."""
        block = None if warning is None else warning[0]
        changed = block != self.warned_block
        self.warned_block = block
        if warning is None:
            self.note.value = (
                f"<div style='padding:4px 8px;color:{kind_text('healthy')}'>No instability warning: attention "
                f"logits and log Z are not growing the way they do before a loss spike, and the run is not "
                f"oscillating while its schedule raises the learning rate.</div>"
            )
        else:
            self.note.value = (
                f"<div style='padding:6px 8px;background:{kind_background('unstable')};"
                f"color:{kind_text('unstable')}'><b>Unstable at step {warning[1]}</b>: {html.escape(warning[2])}</div>"
            )
        if redraw and changed and len(self.steps):
            with self._lock:
                logits = np.asarray(self.logit_lines.y, dtype=np.float64)
                entropy = np.asarray(self.entropy_lines.y, dtype=np.float64)
                cos = np.asarray(self.cos_lines.y, dtype=np.float64)
                if logits.ndim == 2 and entropy.ndim == 2 and cos.ndim == 2:
                    self._draw_warned(logits.T, entropy.T, cos.T)
                self._set_legend(block_colors(len(self.blocks)))

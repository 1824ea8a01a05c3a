"""Bars on a log axis: one per layer (``GradientBars``) or one per time step (``TimeBars``).

Pitfall handled here: bqplot ``Bars`` on a ``LogScale`` with the default ``base=0`` draw NaN heights (log 0), so
``base`` always equals the axis floor, a positive number. Zeros and NaNs sit on the floor with a label saying
what they really are. The axis keeps a fixed range per run (:class:`LogRange`) and moves only when a value
leaves it; bar heights animate between frames.

Views are thin: they read plain arrays off a stats object (anything shaped like ``GradientStats``) and never do
torch math. Only :meth:`show` (the render path) writes chart traits.
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np
from traitlets import Enum, observe

from .figures import chart_axis, chart_figure, legend_html
from .log_range import LogRange, clamp_to_range
from .style import FROZEN_COLOR, KIND_COLORS, ROLE_COLORS, ROLE_NAMES, kind_text

__all__ = ["QUANTITIES", "GradientBars", "LogBarsChart", "TimeBars", "bar_count_text", "log_ticks"]

QUANTITIES = {
    "grad_norm": "gradient norm ‖g‖",
    "update_ratio": "update ratio |Δw|/|w|",
}
UPDATE_TITLE = "How much each layer's weights move per step"
MAX_X_LABELS = 12
"""An ordinal axis ignores ``tick_values``; ``num_ticks`` makes it label every k-th bar beyond this many."""
ANIMATION_MS = 250
HIGHLIGHTED_KINDS = ("vanishing", "exploding", "dead", "nonfinite")


def log_ticks(low: float, high: float, max_ticks: int = 8) -> np.ndarray:
    """Powers of ten between ``low`` and ``high``, every k-th decade so that at most ``max_ticks`` show."""
    first, last = round(math.log10(low)), round(math.log10(high))
    step = max(1, math.ceil((last - first + 1) / max_ticks))
    return 10.0 ** np.arange(first, last + 1, step)


def _format(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    return f"{value:.4g}" if 0.01 <= abs(value) < 1000 else f"{value:.3e}"


def _bad_label(value: float, low: float) -> str:
    """What a clamped bar really is: NaN, ∞, 0 (or negative), or off the axis below/above."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞"
    if value <= 0:
        return "0"
    return "↓" if value < low else "↑"


class LogBarsChart:
    """A bqplot figure holding bars over positions ``1..n`` on a log y axis, plus labels for bad values.

    ``scale`` may be shared between several charts (Compare); then the owner passes ``bounds`` to
    :meth:`draw` and this chart leaves the scale alone.
    """

    def __init__(
        self,
        title: str,
        x_label: str,
        y_label: str,
        scale: bq.LogScale | None = None,
        height: str = "340px",
        tooltip: widgets.DOMWidget | None = None,
    ) -> None:
        self.owns_scale = scale is None
        low, high = LogRange().bounds
        self.scale_y = scale if scale is not None else bq.LogScale(min=low, max=high)
        self.scale_x = bq.OrdinalScale()
        self.bars = bq.Bars(
            x=np.zeros(0),
            y=np.zeros(0),
            base=low,
            scales={"x": self.scale_x, "y": self.scale_y},
            colors=[ROLE_COLORS["hidden"]],
            color_mode="group",  # 1-D bars: every bar is its own group, so one colour each
            padding=0.15,
            tooltip=tooltip,
            tooltip_style={"opacity": 0.95},
        )
        self.bad_labels = bq.Label(
            x=np.zeros(0),
            y=np.zeros(0),
            text=[],
            scales={"x": self.scale_x, "y": self.scale_y},
            colors=["var(--gw-text)"],
            default_size=15,
            font_weight="bold",
            align="middle",
            y_offset=-6,
            apply_clip=False,
        )
        self.axis_x = chart_axis(self.scale_x, x_label, label_offset="36px", num_ticks=MAX_X_LABELS)
        self.axis_y = chart_axis(
            self.scale_y,
            y_label,
            vertical=True,
            tick_format=".0e",
            tick_values=log_ticks(low, high),
            label_offset="58px",
            grid_lines="dashed",
        )
        self.figure = chart_figure(
            [self.bars, self.bad_labels],
            [self.axis_x, self.axis_y],
            title,
            height,
            margin={"bottom": 56, "left": 78, "right": 16},
            animation_duration=ANIMATION_MS,
        )
        self.range = LogRange()

    @property
    def bounds(self) -> tuple[float, float]:
        return self.range.bounds if self.owns_scale else (self.scale_y.min, self.scale_y.max)

    def draw(self, values: np.ndarray, colors: Sequence[str], bounds: tuple[float, float] | None = None) -> np.ndarray:
        """Draw ``values`` (one message per mark at most); returns the mask of values drawn clamped."""
        values = np.asarray(values, dtype=np.float64)
        n = len(values)
        if bounds is None:
            rescaled = self.range.fit(values)
            low, high = self.range.bounds
        else:
            rescaled, (low, high) = False, bounds
        drawn, bad = clamp_to_range(values, low, high)
        positions = np.arange(1, n + 1)
        if rescaled and self.owns_scale:
            with self.scale_y.hold_sync():
                self.scale_y.min, self.scale_y.max = low, high
            self.axis_y.tick_values = log_ticks(low, high)
        with self.bars.hold_sync():
            if not np.array_equal(self.bars.x, positions):
                self.bars.x = positions
            self.bars.y = drawn.astype(np.float32)
            self.bars.base = low
            self.bars.colors = list(colors)
        label_y = low * (high / low) ** 0.04
        with self.bad_labels.hold_sync():
            self.bad_labels.x = positions[bad]
            self.bad_labels.y = np.full(int(bad.sum()), label_y)
            self.bad_labels.text = [_bad_label(v, low) for v in values[bad]]
        return bad


def bar_count_text(roles: Sequence[str]) -> str:
    """``"14 bars = input + 12 hidden + head"``: why a depth-12 net shows 14 bars (roles in net order)."""
    counts: dict[str, int] = {}
    for role in roles:
        name = ROLE_NAMES.get(role, role)
        counts[name] = counts.get(name, 0) + 1
    parts = [name if count == 1 and name in ("input", "head") else f"{count} {name}" for name, count in counts.items()]
    return f"{len(roles)} bar{'s' if len(roles) != 1 else ''} = " + " + ".join(parts)


class _BarsView(widgets.VBox):
    """What the per-layer and per-time-step bar views share: a :class:`LogBarsChart`, a lock, a run reset."""

    chart: LogBarsChart

    def _setup(self, children: list[widgets.Widget], **kwargs: Any) -> None:
        self._lock = threading.RLock()
        super().__init__(children, **kwargs)

    @property
    def figure(self) -> bq.Figure:
        return self.chart.figure

    @property
    def bars(self) -> bq.Bars:
        return self.chart.bars

    def _ranges(self) -> list[LogRange]:
        return [self.chart.range]

    def new_run(self) -> None:
        """Forget the axis ranges: the next reading sets fresh ones."""
        with self._lock:
            for log_range in self._ranges():
                log_range.reset()


class GradientBars(_BarsView):
    """One bar per layer, input side left: the gradient norm (or update ratio) each layer receives.

    Layers the diagnosis singles out (vanishing, exploding, dead) take the diagnosis colour; frozen layers are
    grey; the others their role's colour (input, hidden, norm, head), named in the key under the chart along
    with the bar count. Zeros and NaNs sit on the axis floor, labelled. Hover a bar for its name, exact norm,
    mean/max |g| and the first/last ratio the banner shows. ``quantity`` switches between ``"grad_norm"`` and
    ``"update_ratio"`` (the toggle above).
    """

    quantity = Enum(tuple(QUANTITIES), default_value="grad_norm")

    def __init__(
        self,
        title: str = "Gradient reaching each layer",
        scale: bq.LogScale | None = None,
        height: str = "340px",
        show_toggle: bool = True,
        update_title: str = UPDATE_TITLE,
        show_key: bool = True,
        **kwargs: Any,
    ) -> None:
        self.hover_box = widgets.HTML("", layout=widgets.Layout(padding="4px 8px"))
        self.chart = LogBarsChart(
            title=title,
            x_label="layer (input → output)",
            y_label=QUANTITIES["grad_norm"],
            scale=scale,
            height=height,
            tooltip=self.hover_box,
        )
        self.toggle = widgets.ToggleButtons(
            options=[(label, key) for key, label in QUANTITIES.items()],
            value="grad_norm",
            style={"button_width": "200px"},
        )
        self.key = widgets.HTML("", layout=widgets.Layout(width="100%", min_height="24px"))
        """The bar count ("14 bars = input + 12 hidden + head") and what each colour means."""
        self._titles = {"grad_norm": title, "update_ratio": update_title}
        self._stats: Any = None
        self._diagnosis: Any = None
        self._bounds: tuple[float, float] | None = None
        self._hovered: int | None = None
        self._ratio_text = ""
        self._key_roles: tuple[tuple[str, ...], bool] | None = None
        self._quantity_ranges = {key: LogRange() for key in QUANTITIES}
        self.chart.range = self._quantity_ranges["grad_norm"]
        self.per_step_divisor = 1
        """The monitor reads every k-th step: it divides the update ratio by k (an average per step)."""
        self.on_redraw: Callable[[], None] | None = None
        """Set by an app with a draw thread: a toggle then asks it for a frame (the chart is redrawn on that
        thread) instead of redrawing from the kernel thread that received the click."""
        children = [self.toggle, self.chart.figure] if show_toggle else [self.chart.figure]
        self._setup([*children, *([self.key] if show_key else [])], **kwargs)
        self.toggle.observe(self._on_toggle, "value")
        self.chart.bars.on_hover(self._on_hover)

    @property
    def scale(self) -> bq.LogScale:
        return self.chart.scale_y

    def _ranges(self) -> list[LogRange]:
        return list(self._quantity_ranges.values())

    def clear(self) -> None:
        """No bars (a rebuilt model that has not been read yet)."""
        with self._lock:
            self._stats, self._hovered = None, None
            self.chart.draw(np.zeros(0), [ROLE_COLORS["hidden"]])

    def values(self, stats: Any) -> np.ndarray:
        """The numbers the bars show for ``stats`` under the current ``quantity``."""
        if self.quantity == "update_ratio":
            return np.asarray(stats.update_ratio, dtype=np.float64) / max(self.per_step_divisor, 1)
        return np.asarray(stats.grad_norm, dtype=np.float64)

    def show(
        self, stats: Any, diagnosis: Any = None, bounds: tuple[float, float] | None = None, ratio_text: str = ""
    ) -> None:
        """Draw a reading. ``bounds`` is given only when the y scale is shared and owned by the caller;
        ``ratio_text`` is the first/last ratio exactly as the banner and readout print it (for the tooltip)."""
        with self._lock:
            self._stats, self._diagnosis, self._bounds = stats, diagnosis, bounds
            self._ratio_text = ratio_text
            self._label_quantity()
            values = self.values(stats)
            self.chart.draw(values, self.colors(stats, diagnosis), bounds)
            self._write_key(tuple(stats.roles), stats)
            if self._hovered is not None:
                self._write_tooltip()

    def colors(self, stats: Any, diagnosis: Any) -> list[str]:
        """Role colour per layer; the diagnosis colour for the layers it names; grey when frozen."""
        kind = getattr(diagnosis, "kind", "healthy")
        named = set(getattr(diagnosis, "layers", ()) or ()) if kind in HIGHLIGHTED_KINDS else set()
        out = []
        for name, role, frozen in zip(stats.names, stats.roles, stats.frozen, strict=True):
            if frozen:
                out.append(FROZEN_COLOR)
            elif name in named:
                out.append(KIND_COLORS[kind])
            else:
                out.append(ROLE_COLORS.get(role, ROLE_COLORS["hidden"]))
        return out

    def _write_key(self, roles: tuple[str, ...], stats: Any) -> None:
        frozen = bool(np.any(stats.frozen))
        key = (roles, frozen)
        if key == self._key_roles:
            return
        self._key_roles = key
        present = [role for role in ROLE_COLORS if role in roles]
        entries = [(ROLE_NAMES[role], ROLE_COLORS[role]) for role in present]
        entries += [("vanishing", KIND_COLORS["vanishing"]), ("exploding", KIND_COLORS["exploding"])]
        if frozen:
            entries.append(("frozen", FROZEN_COLOR))
        self.key.value = legend_html(entries, lead=bar_count_text(roles) + " ·")

    def _on_toggle(self, change: dict) -> None:
        self.quantity = change["new"]

    @observe("quantity")
    def _quantity_changed(self, change: dict) -> None:
        with self._lock:
            self.toggle.value = change["new"]
            self.chart.range = self._quantity_ranges[change["new"]]
        if self.on_redraw is not None:
            self.on_redraw()
            return
        with self._lock:
            self._label_quantity()
            if self._stats is not None:
                self.show(self._stats, self._diagnosis, self._bounds, self._ratio_text)

    def _label_quantity(self) -> None:
        """The axis label and title of the quantity shown (written only when it changed)."""
        label, title = QUANTITIES[self.quantity], self._titles[self.quantity]
        if self.chart.axis_y.label != label:
            self.chart.axis_y.label = label
        if self.chart.figure.title != title:
            self.chart.figure.title = title

    def _on_hover(self, _mark: Any, event: dict) -> None:
        point = event.get("point") or event.get("data") or {}
        position = point.get("x", None) if isinstance(point, dict) else None
        index = int(position) - 1 if isinstance(position, (int, float)) else point.get("index")
        with self._lock:
            self._hovered = index if isinstance(index, int) else None
            self._write_tooltip()

    def _write_tooltip(self) -> None:
        stats, index = self._stats, self._hovered
        if stats is None or index is None or not 0 <= index < len(stats.names):
            return
        name = stats.names[index] or "(whole model)"
        ratio = float(stats.update_ratio[index]) / max(self.per_step_divisor, 1)
        rows = [
            ("‖g‖", _format(float(stats.grad_norm[index]))),
            ("mean |g|", _format(float(stats.grad_mean_abs[index]))),
            ("max |g|", _format(float(stats.grad_max_abs[index]))),
            ("|Δw|/|w|", _format(ratio)),
        ]
        if self._ratio_text:
            rows.append(("first/last layer", self._ratio_text))
        notes = []
        if bool(stats.frozen[index]):
            notes.append("frozen (requires_grad=False)")
        value = self.values(stats)[index]
        if not (math.isfinite(value) and value > 0):
            notes.append("drawn on the axis floor")
        body = "".join(f"<tr><td>{k}</td><td style='text-align:right'><b>{v}</b></td></tr>" for k, v in rows)
        note = f"<div style='color:{kind_text('error')}'>{'; '.join(notes)}</div>" if notes else ""
        role = ROLE_NAMES.get(stats.roles[index], stats.roles[index])
        self.hover_box.value = (
            f"<div class='gw-text' style='font-size:15px'><b>{index + 1}. {html.escape(name)}</b> "
            f"<span>({html.escape(stats.kinds[index])}, {html.escape(role)})</span>"
            f"<table>{body}</table>{note}</div>"
        )


class TimeBars(_BarsView):
    """Recurrent nets: the gradient reaching each time step's hidden state, ``t = 0`` on the left.

    A vanishing RNN shows a ramp falling towards the left: early inputs get no say in the loss.
    """

    def __init__(self, title: str = "Gradient reaching each time step", height: str = "300px", **kwargs: Any) -> None:
        tooltip = bq.Tooltip(fields=["x", "y"], labels=["time step", "‖∂L/∂h_t‖"], formats=["", ".3e"])
        self.chart = LogBarsChart(
            title=title,
            x_label="time step (first → last)",
            y_label="‖∂L/∂h_t‖",
            height=height,
            tooltip=tooltip,
        )
        self._setup([self.chart.figure], **kwargs)

    def show(self, time_grad_norm: np.ndarray | None, kind: str = "healthy", state_name: str = "h") -> None:
        """Draw the per-time-step gradient norms (nothing to draw for non-recurrent stats)."""
        if time_grad_norm is None:
            return
        with self._lock:
            values = np.asarray(time_grad_norm, dtype=np.float64)
            color = KIND_COLORS[kind] if kind in ("vanishing", "exploding", "nonfinite") else ROLE_COLORS["hidden"]
            self.chart.draw(values, [color] * len(values))
            label = f"‖∂L/∂{state_name}_t‖"
            if self.chart.axis_y.label != label:
                self.chart.axis_y.label = label

"""Bars on a log axis: one per layer (``GradientBars``) or one per time step (``TimeBars``).

Pitfall handled here: bqplot ``Bars`` on a ``LogScale`` with the default ``base=0`` draw NaN heights (log 0), so
``base`` always equals the axis floor, a positive number. Zeros and NaNs sit on the floor with a label saying
what they really are. The axis keeps a fixed range per run (:class:`LogRange`) and moves only when a value
leaves it; bar heights animate between frames.

Views are thin: they read plain arrays off a stats object (anything shaped like ``GradientStats``) and never do
torch math. Only :meth:`show` (the render path) writes chart traits.

Blocks first (issue 23): an app hands ``GradientBars`` a ``grouper`` (``gradwidgets.core.blocks.group_stats``);
for a model with repeated blocks the bars then start with one bar per block and a toggle expands them into module
kinds or every layer. Bars carry their names on the axis where the names fit, numbers where they do not.
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

__all__ = [
    "DETAILS",
    "QUANTITIES",
    "GradientBars",
    "LogBarsChart",
    "TimeBars",
    "bar_count_text",
    "bar_labels",
    "log_ticks",
]

QUANTITIES = {
    "grad_norm": "gradient norm ‖g‖",
    "update_ratio": "update ratio |Δw|/|w|",
}
UPDATE_TITLE = "How much each layer's weights move per step"
MAX_X_LABELS = 12
"""An ordinal axis ignores ``tick_values``; ``num_ticks`` makes it label every k-th bar beyond this many."""
MAX_NAMED_BARS = 16
MAX_NAME_CHARS = 120
"""Bars are labelled by name when there are at most this many and their names together are at most this long
(a 12-block GPT's ``embeddings, h.0 ... h.11, final norm``); by number otherwise."""
DETAILS = {"blocks": "blocks", "kinds": "by module kind", "rows": "every layer"}
"""The grouping toggle's levels (the ``level`` a grouper takes) and their button labels."""
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

    def draw(
        self,
        values: np.ndarray,
        colors: Sequence[str],
        bounds: tuple[float, float] | None = None,
        labels: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Draw ``values`` (one message per mark at most); returns the mask of values drawn clamped. ``labels``
        (one per value) name the bars on the axis; without them the bars are numbered 1..n."""
        values = np.asarray(values, dtype=np.float64)
        n = len(values)
        if bounds is None:
            rescaled = self.range.fit(values)
            low, high = self.range.bounds
        else:
            rescaled, (low, high) = False, bounds
        drawn, bad = clamp_to_range(values, low, high)
        positions: np.ndarray = np.arange(1, n + 1)
        if labels is not None and len(labels) == n:
            positions = np.asarray(labels, dtype=str)
        ticks = n if labels is not None else MAX_X_LABELS
        if self.axis_x.num_ticks != ticks:
            self.axis_x.num_ticks = ticks
        if rescaled and self.owns_scale:
            with self.scale_y.hold_sync():
                self.scale_y.min, self.scale_y.max = low, high
            self.axis_y.tick_values = log_ticks(low, high)
        with self.bars.hold_sync():
            if len(self.bars.x) != n or not np.array_equal(np.asarray(self.bars.x).astype(str), positions.astype(str)):
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


def bar_labels(names: Sequence[str]) -> list[str] | None:
    """The names to put under the bars, or None when they would not fit (then the bars are numbered)."""
    names = [str(n) for n in names]
    if not names or len(names) > MAX_NAMED_BARS or sum(len(n) for n in names) > MAX_NAME_CHARS:
        return None
    if len(set(names)) != len(names) or any(not n or n.isdigit() for n in names):
        return None  # a bare nn.Sequential index (``20``) under bar 11 reads as the wrong number
    return names


def grouped_count_text(stats: Any) -> str:
    """``"14 bars = embeddings + 12 blocks + final norm (75 layers)"`` for stats grouped into blocks."""
    members = getattr(stats, "members", ())
    parts: list[str] = []
    blocks = 0
    for name, block in zip(stats.names, stats.blocks, strict=True):
        if int(block) >= 0:
            blocks += 1
            if blocks == 1:
                parts.append("")
        else:
            parts.append(name)
    if blocks:
        unit = "blocks" if getattr(stats, "level", "blocks") == "blocks" else "block parts"
        parts[parts.index("")] = f"{blocks} {unit}"
    layers = sum(len(m) for m in members)
    n = len(stats.names)
    return f"{n} bar{'s' if n != 1 else ''} = " + " + ".join(parts) + f" ({layers} layers)"


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

    ``grouper(stats, level)`` (``gradwidgets.core.blocks.group_stats``; the view imports no core code) groups the
    rows: for a model with repeated blocks it returns other stats (one row per block), and ``detail`` (the
    second toggle, shown only then) picks the level: ``"blocks"``, ``"kinds"`` or ``"rows"``. With a grouper the
    bars are also named on the axis where the names fit (without one, the teaching nets keep numbered bars).
    """

    quantity = Enum(tuple(QUANTITIES), default_value="grad_norm")
    detail = Enum(tuple(DETAILS), default_value="blocks")

    def __init__(
        self,
        title: str = "Gradient reaching each layer",
        scale: bq.LogScale | None = None,
        height: str = "340px",
        show_toggle: bool = True,
        update_title: str = UPDATE_TITLE,
        show_key: bool = True,
        grouper: Callable[[Any, str], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.grouper = grouper
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
        self.detail_toggle = widgets.ToggleButtons(
            options=[(label, key) for key, label in DETAILS.items()],
            value="blocks",
            style={"button_width": "130px"},
            layout=widgets.Layout(display="none"),
            tooltip="One bar per block, per block and module kind (attention / MLP / norm), or per layer",
        )
        self.key = widgets.HTML("", layout=widgets.Layout(width="100%", min_height="24px"))
        """The bar count ("14 bars = input + 12 hidden + head") and what each colour means."""
        self._titles = {"grad_norm": title, "update_ratio": update_title}
        self._stats: Any = None
        self._raw: Any = None
        self._diagnosis: Any = None
        self._bounds: tuple[float, float] | None = None
        self._hovered: int | None = None
        self._ratio_text = ""
        self._key_roles: tuple[tuple[str, ...], bool, tuple[str, ...]] | None = None
        self._quantity_ranges = {key: LogRange() for key in QUANTITIES}
        self.chart.range = self._quantity_ranges["grad_norm"]
        self.per_step_divisor = 1
        """The monitor reads every k-th step: it divides the update ratio by k (an average per step)."""
        self.on_redraw: Callable[[], None] | None = None
        """Set by an app with a draw thread: a toggle then asks it for a frame (the chart is redrawn on that
        thread) instead of redrawing from the kernel thread that received the click."""
        toggles = [self.toggle, self.detail_toggle] if show_toggle else [self.detail_toggle]
        row = widgets.HBox(toggles, layout=widgets.Layout(flex_flow="row wrap", gap="4px 16px"))
        self._setup([row, self.chart.figure, *([self.key] if show_key else [])], **kwargs)
        self.toggle.observe(self._on_toggle, "value")
        self.detail_toggle.observe(self._on_detail_toggle, "value")
        self.chart.bars.on_hover(self._on_hover)

    @property
    def scale(self) -> bq.LogScale:
        return self.chart.scale_y

    def _ranges(self) -> list[LogRange]:
        return list(self._quantity_ranges.values())

    def clear(self) -> None:
        """No bars (a rebuilt model that has not been read yet)."""
        with self._lock:
            self._stats, self._raw, self._hovered = None, None, None
            self.chart.draw(np.zeros(0), [ROLE_COLORS["hidden"]])

    def grouped(self, stats: Any) -> Any:
        """``stats`` as the bars show them at the current ``detail`` (itself without a grouper, for a model
        without repeated blocks, or stats that are grouped already)."""
        if self.grouper is None or getattr(stats, "group_of", None) is not None:
            return stats
        return self.grouper(stats, self.detail)

    def _groupable(self, stats: Any, grouped: Any) -> bool:
        """Whether the grouping toggle applies: the model has repeated blocks."""
        if getattr(stats, "group_of", None) is not None:
            return True
        if self.grouper is None:
            return False
        return grouped is not stats or self.grouper(stats, "blocks") is not stats

    @property
    def shown(self) -> Any:
        """The stats the bars show now (grouped), or None."""
        return self._stats

    def values(self, stats: Any) -> np.ndarray:
        """The numbers the bars show for ``stats`` under the current ``quantity`` (and grouping)."""
        stats = self.grouped(stats)
        if self.quantity == "update_ratio":
            return np.asarray(stats.update_ratio, dtype=np.float64) / max(self.per_step_divisor, 1)
        return np.asarray(stats.grad_norm, dtype=np.float64)

    def show(
        self, stats: Any, diagnosis: Any = None, bounds: tuple[float, float] | None = None, ratio_text: str = ""
    ) -> None:
        """Draw a reading. ``bounds`` is given only when the y scale is shared and owned by the caller;
        ``ratio_text`` is the first/last ratio exactly as the banner and readout print it (for the tooltip)."""
        with self._lock:
            self._raw = stats
            grouped = self.grouped(stats)
            display = "" if self._groupable(stats, grouped) else "none"
            if self.detail_toggle.layout.display != display:
                self.detail_toggle.layout.display = display
            stats = grouped
            self._stats, self._diagnosis, self._bounds = stats, diagnosis, bounds
            self._ratio_text = ratio_text
            self._label_quantity()
            values = self.values(stats)
            labels = bar_labels(stats.names) if self.grouper is not None else None
            x_label = ("block" if getattr(stats, "level", "") == "blocks" else "layer") + " (input → output)"
            if self.chart.axis_x.label != x_label:
                self.chart.axis_x.label = x_label
            self.chart.draw(values, self.colors(stats, diagnosis), bounds, labels=labels)
            self._write_key(tuple(stats.roles), stats)
            if self._hovered is not None:
                self._write_tooltip()

    def colors(self, stats: Any, diagnosis: Any) -> list[str]:
        """Role colour per layer; the diagnosis colour for the layers it names; grey when frozen."""
        kind = getattr(diagnosis, "kind", "healthy")
        named = set(getattr(diagnosis, "layers", ()) or ()) if kind in HIGHLIGHTED_KINDS else set()
        members = getattr(stats, "members", None) or [(n,) for n in stats.names]
        out = []
        for group, role, frozen in zip(members, stats.roles, stats.frozen, strict=True):
            if frozen:
                out.append(FROZEN_COLOR)
            elif named.intersection(group):
                out.append(KIND_COLORS[kind])
            else:
                out.append(ROLE_COLORS.get(role, ROLE_COLORS["hidden"]))
        return out

    def _write_key(self, roles: tuple[str, ...], stats: Any) -> None:
        frozen = bool(np.any(stats.frozen))
        key = (roles, frozen, tuple(stats.names) if getattr(stats, "members", None) else ())
        if key == self._key_roles:
            return
        self._key_roles = key
        present = [role for role in ROLE_COLORS if role in roles]
        entries = [(ROLE_NAMES[role], ROLE_COLORS[role]) for role in present]
        entries += [("vanishing", KIND_COLORS["vanishing"]), ("exploding", KIND_COLORS["exploding"])]
        if frozen:
            entries.append(("frozen", FROZEN_COLOR))
        count = grouped_count_text(stats) if getattr(stats, "members", None) else bar_count_text(roles)
        self.key.value = legend_html(entries, lead=count + " ·")

    def _on_toggle(self, change: dict) -> None:
        self.quantity = change["new"]

    def _on_detail_toggle(self, change: dict) -> None:
        self.detail = change["new"]

    @observe("detail")
    def _detail_changed(self, change: dict) -> None:
        with self._lock:
            self.detail_toggle.value = change["new"]
            self._hovered = None
        self._redraw()

    def _redraw(self) -> None:
        """Draw the last reading again after a toggle: on the app's draw thread when it has one."""
        if self.on_redraw is not None:
            self.on_redraw()
            return
        with self._lock:
            self._label_quantity()
            if self._raw is not None:
                self.show(self._raw, self._diagnosis, self._bounds, self._ratio_text)

    @observe("quantity")
    def _quantity_changed(self, change: dict) -> None:
        with self._lock:
            self.toggle.value = change["new"]
            self.chart.range = self._quantity_ranges[change["new"]]
        self._redraw()

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
        if isinstance(position, str) and self._stats is not None and position in self._stats.names:
            index = self._stats.names.index(position)
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
        members = getattr(stats, "members", None)
        if members:
            inside = members[index]
            listed = ", ".join(inside[:4]) + (f" and {len(inside) - 4} more" if len(inside) > 4 else "")
            note = f"<div>{len(inside)} layer{'s' if len(inside) != 1 else ''}: {html.escape(listed)}</div>" + note
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

"""``Controls``: the knobs of a run, as validated traits named like the ``NetConfig``/``TrainingSession`` fields.

Setting a trait (from code, ``pg.depth = 30``, or from the UI) is validated twice: here (allowed choices, types)
and by the session itself through the ``apply`` callback, which reconfigures it between two steps. Either
refusal raises ``TraitError`` naming the field, and leaves the trait, the UI input and the training as they
were; a refusal that came from the UI is shown under the controls instead of being lost in a log.

The page is not trusted: a front end can send ``{max: 200}`` then ``{value: 200}`` to a slider. A value from the UI
is also checked by ``guard`` (set by the app: the class server's limits and memory budget, the same as a shared
link's) before it is applied, and every write puts the inputs' ranges back to the kernel's own.
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
from traitlets import Bool, Float, Int, TraitError, Unicode, observe, validate

from ..validation import BATCH_SIZE_CHOICES, CELLS, LIMITS, WIDTH_CHOICES, check_choice, check_limit
from .transport import Transport

__all__ = ["CHOICE_FIELDS", "CONTROL_FIELDS", "SEQUENCE_SLIDERS", "SPEEDS", "Controls", "applies"]

CHOICE_FIELDS = ("activation", "norm", "init", "optimizer", "dataset", "cell")
CONTROL_FIELDS = (
    "cell",
    "activation",
    "seq_len",
    "forget_bias",
    "depth",
    "width",
    "residual",
    "norm",
    "init",
    "optimizer",
    "lr",
    "batch_size",
    "dataset",
    "seed",
)
"""Trait names, identical to the ``NetConfig`` / ``TrainingSession`` fields they set, in the order shown (the
recurrent ones first: only a recurrent or transformer net shows them, see :func:`applies`)."""

_CLASS_SEQ_LEN, _CLASS_FORGET_BIAS = LIMITS["seq_len"].for_class(), LIMITS["forget_bias"].for_class()
SEQUENCE_SLIDERS = {
    "seq_len": (int(_CLASS_SEQ_LEN.low), int(_CLASS_SEQ_LEN.high), 1),
    "forget_bias": (_CLASS_FORGET_BIAS.low, _CLASS_FORGET_BIAS.high, 0.5),
}
"""(min, max, step) of the sequence sliders: the spans a shared link may ask for (``dashboard.presets``), the class
range of ``validation.LIMITS``; a value set from code outside them widens the slider, as for depth."""
CLASS_MAX_DEPTH = int(LIMITS["depth"].for_class().high)
"""The depth slider's end: a link's and a control's largest depth (a deeper net from code widens it)."""


def applies(name: str, kind: str, cell: str) -> bool | None:
    """Whether control ``name`` means something for a ``kind`` net with this ``cell``: ``True`` (shown),
    ``False`` (shown greyed out: it applies to another cell of this kind) or ``None`` (hidden: never for this
    kind). A recurrent net has no skip connections and its gated cells no activation to choose; the sequence
    controls mean nothing to an MLP."""
    if name in ("cell", "forget_bias"):
        if kind != "rnn":
            return None
        return name == "cell" or cell == "lstm"
    if name == "seq_len":
        return None if kind == "mlp" else True
    if kind == "rnn":
        if name == "residual":
            return None
        if name == "activation":
            return cell == "rnn"
    return True

SPEEDS = (("1/s", 1.0), ("3/s", 3.0), ("10/s", 10.0), ("30/s", 30.0), ("100/s", 100.0), ("max", math.inf))
"""Training speed choices (steps per second); slow motion lets an instructor narrate single steps."""
DESCRIPTION_WIDTH = "110px"


class Controls(widgets.VBox):
    """Transport buttons (play, pause, step, reset; ``controls.transport``), speed, and the run's settings.

    ``values`` are the starting trait values (e.g. ``session.describe()``); ``choices`` the allowed values of
    the choice fields (:data:`CHOICE_FIELDS`); ``apply(changes)`` applies a change to the session or raises
    ``ValueError`` to refuse it. ``speed`` is steps per second, ``None`` for as fast as possible.
    """

    activation = Unicode()
    depth = Int()
    width = Int()
    residual = Bool()
    norm = Unicode()
    init = Unicode()
    optimizer = Unicode()
    lr = Float()
    batch_size = Int()
    dataset = Unicode()
    seed = Int()
    cell = Unicode()
    seq_len = Int()
    forget_bias = Float()
    speed = Float(None, allow_none=True)

    def __init__(
        self,
        values: Mapping[str, Any],
        choices: Mapping[str, Sequence[str]],
        apply: Callable[[dict[str, Any]], None] | None = None,
        speed: float | None = None,
        **kwargs: Any,
    ) -> None:
        self._choices = {name: tuple(choices.get(name, CELLS if name == "cell" else ())) for name in CHOICE_FIELDS}
        self.kind = str(values.get("kind", "mlp"))
        """The net's kind (fixed once built): which controls show (:func:`applies`)."""
        self._apply: Callable[[dict[str, Any]], None] | None = None
        self.guard: Callable[[dict[str, Any]], None] | None = None
        """Checks a change that came from the UI (raises ``ValueError`` to refuse it); ``None``: no extra check."""
        self._syncing = threading.local()
        self.inputs = self._make_inputs(values)
        self._ranges = {name: (box.min, box.max) for name, box in self.inputs.items() if hasattr(box, "max")}
        self.transport = Transport()
        self.message = widgets.HTML("", layout=widgets.Layout(width="100%"))
        settings = widgets.VBox([self.inputs[name] for name in CONTROL_FIELDS], layout=widgets.Layout(width="100%"))
        kwargs.setdefault("layout", widgets.Layout(width="340px", min_width="300px", padding="4px"))
        super().__init__([self.transport, self.inputs["speed"], settings, self.message], **kwargs)
        for name in CONTROL_FIELDS:
            setattr(self, name, values[name])
        self.speed = speed
        self._apply = apply
        for name, box in self.inputs.items():
            box.observe(self._input_changed(name), "value")
        self._show_what_applies()
        self.observe(lambda _: self._show_what_applies(), "cell")

    def _show_what_applies(self) -> None:
        """Hide the controls that mean nothing for this kind of net, grey out those for another cell."""
        for name in CONTROL_FIELDS:
            shown = applies(name, self.kind, self.cell)
            box = self.inputs[name]
            box.layout.display = "none" if shown is None else None
            box.disabled = shown is False

    # ------------------------------------------------------------------ validation

    @validate(*CONTROL_FIELDS, "speed")
    def _validate(self, proposal: dict) -> Any:
        name, value = proposal["trait"].name, proposal["value"]
        try:
            if name in self._choices:
                check_choice(name, value, self._choices[name])
            if name == "speed":  # steps per second; None: as fast as possible
                check_limit(name, value, allow_none=True, limit="max_steps_per_second")
        except ValueError as exc:
            raise TraitError(str(exc)) from exc
        if self._apply is not None and name != "speed" and getattr(self, name) != value:
            try:
                self._apply({name: value})
            except ValueError as exc:
                text = str(exc)
                raise TraitError(text if text.startswith(name) else f"{name}: {text}") from exc
        return value

    @observe(*CONTROL_FIELDS, "speed")
    def _trait_changed(self, change: dict) -> None:
        name = change["name"]
        if name == "speed" and self._apply is not None:
            self._apply({"speed": change["new"]})  # traitlets skips validators for None, so apply it here
        self._write_input(self.inputs[name], name, change["new"])
        self.message.value = ""

    def _input_changed(self, name: str) -> Callable[[dict], None]:
        def handler(change: dict) -> None:
            if getattr(self._syncing, "active", False):
                return
            value = _from_input(name, change["new"])
            try:
                if self.guard is not None and value != getattr(self, name):
                    try:
                        self.guard({name: value})
                    except ValueError as exc:
                        text = str(exc)
                        raise TraitError(text if text.startswith(name) else f"{name}: {text}") from exc
                setattr(self, name, value)
            except TraitError as exc:
                self._write_input(change["owner"], name, getattr(self, name))
                self.message.value = f"<div style='color:#b71c1c;font-size:15px'>Refused: {html.escape(str(exc))}</div>"

        return handler

    def _write_input(self, box: widgets.Widget, name: str, value: Any) -> None:
        self._syncing.active = True
        try:
            low, high = self._ranges.get(name, (None, None))  # the kernel's range, not what a page sent
            if isinstance(box, (widgets.IntSlider, widgets.FloatSlider)) and value is not None:
                _set_range(box, min(low, value), max(high, value))
            elif isinstance(box, widgets.FloatLogSlider) and value:
                exponent = math.log10(value)
                _set_range(box, min(low, math.floor(exponent)), max(high, math.ceil(exponent)))
            elif low is not None:
                _set_range(box, low, high)
            shown = _to_input(name, value)
            if isinstance(box, (widgets.Dropdown, widgets.SelectionSlider)) and shown not in [
                v for _, v in box.options
            ]:
                box.options = sorted(
                    [*box.options, (f"{shown:g}/s" if name == "speed" else str(shown), shown)],
                    key=lambda option: option[1],
                )
            box.value = shown
        finally:
            self._syncing.active = False

    # ------------------------------------------------------------------ inputs

    def _make_inputs(self, values: Mapping[str, Any]) -> dict[str, widgets.Widget]:
        style = {"description_width": DESCRIPTION_WIDTH}

        def layout() -> widgets.Layout:  # one each: a control is hidden through its own layout (``applies``)
            return widgets.Layout(width="96%")  # 100% plus the widgets' own margins overflows the column

        def dropdown(name: str, options: Sequence, label: str | None = None) -> widgets.Dropdown:
            pairs = [(str(o), o) for o in options]
            return widgets.Dropdown(
                options=pairs, value=values[name], description=label or name, style=style, layout=layout()
            )

        depth = values["depth"]
        lr = values["lr"]
        seq_len, seq_len_step = SEQUENCE_SLIDERS["seq_len"][:2], SEQUENCE_SLIDERS["seq_len"][2]
        bias_span, bias_step = SEQUENCE_SLIDERS["forget_bias"][:2], SEQUENCE_SLIDERS["forget_bias"][2]
        recurrent = values.get("kind", "mlp") == "rnn"
        return {
            "activation": dropdown("activation", self._choices["activation"]),
            "depth": widgets.IntSlider(
                value=depth,
                min=1,
                max=max(CLASS_MAX_DEPTH, depth),
                description="layers" if recurrent else "depth",
                style=style,
                layout=layout(),
                continuous_update=False,
            ),
            "width": dropdown("width", sorted({*WIDTH_CHOICES, values["width"]})),
            "residual": widgets.Checkbox(
                value=values["residual"], description="skip connections", style=style, layout=layout(), indent=True
            ),
            "norm": dropdown("norm", self._choices["norm"], "normalization"),
            "init": dropdown("init", self._choices["init"]),
            "optimizer": dropdown("optimizer", self._choices["optimizer"]),
            "lr": widgets.FloatLogSlider(
                value=lr,
                base=10,
                min=min(-4, math.floor(math.log10(lr))),
                max=max(1, math.ceil(math.log10(lr))),
                step=0.1,
                description="learning rate",
                readout_format=".1e",
                style=style,
                layout=layout(),
                continuous_update=False,
            ),
            "batch_size": dropdown("batch_size", sorted({*BATCH_SIZE_CHOICES, values["batch_size"]}), "batch size"),
            "dataset": dropdown("dataset", self._choices["dataset"]),
            "seed": widgets.BoundedIntText(
                value=values["seed"],
                min=int(LIMITS["seed"].low),
                max=int(LIMITS["seed"].high),
                description="seed",
                style=style,
                layout=layout(),
            ),
            "cell": dropdown("cell", self._choices["cell"]),
            "seq_len": widgets.IntSlider(
                value=values["seq_len"],
                min=min(seq_len[0], values["seq_len"]),
                max=max(seq_len[1], values["seq_len"]),
                step=seq_len_step,
                description="seq length",
                style=style,
                layout=layout(),
                continuous_update=False,
            ),
            "forget_bias": widgets.FloatSlider(
                value=values["forget_bias"],
                min=min(bias_span[0], values["forget_bias"]),
                max=max(bias_span[1], values["forget_bias"]),
                step=bias_step,
                description="forget bias",
                readout_format=".1f",
                style=style,
                layout=layout(),
                continuous_update=False,
            ),
            "speed": widgets.SelectionSlider(
                options=SPEEDS,
                value=math.inf,
                description="speed",
                style=style,
                layout=layout(),
                continuous_update=False,
            ),
        }


def _set_range(box: widgets.Widget, low: float, high: float) -> None:
    """Set ``box.min`` and ``box.max`` in an order that never puts min above max on the way."""
    if low > box.max:
        box.max, box.min = high, low
    else:
        box.min, box.max = low, high


def _to_input(name: str, value: Any) -> Any:
    if name == "speed":
        return math.inf if value is None else value
    return value


def _from_input(name: str, value: Any) -> Any:
    if name == "speed":
        return None if value is None or math.isinf(value) else float(value)
    return value

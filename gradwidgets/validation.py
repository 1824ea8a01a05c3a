"""Layer 0, validation: the allowed values of every setting, and the checks that enforce them at the boundary.

One table (:data:`LIMITS`) holds the numeric ranges of the net, the session and the runtime; the choice tuples
that need no torch live here too. ``NetConfig``, ``SessionSettings``, the ``Runner``, the views' controls and the
help text (``valid_values()``) all read from here, so a limit is written once and the help cannot drift from it.

No torch and no widget library: the views (which must not import torch) validate with the same functions.
Every check returns the checked value, so it reads as an assignment (``width = check_integer("width", w, 1, 4096)``),
and every refusal is a ``ValueError`` naming the field, the allowed values and what it got.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "BATCH_SIZE_CHOICES",
    "CELLS",
    "INITS",
    "KINDS",
    "LIMITS",
    "NORMS",
    "NORM_POSITIONS",
    "OPTIMIZERS",
    "RNN_ACTIVATIONS",
    "WIDTH_CHOICES",
    "Limit",
    "check_bool",
    "check_choice",
    "check_integer",
    "check_limit",
    "check_number",
    "check_positive",
]

KINDS = ("mlp", "rnn", "transformer")
NORMS = ("none", "batch", "layer")
NORM_POSITIONS = ("pre", "post")
INITS = ("default", "xavier", "kaiming", "normal", "orthogonal", "identity")
CELLS = ("rnn", "lstm", "gru")
RNN_ACTIVATIONS = ("tanh", "relu")
OPTIMIZERS = ("sgd", "momentum", "adam")

WIDTH_CHOICES = (2, 4, 8, 16, 32, 64, 128, 256, 512)
"""The widths the Playground's slider offers (any width in ``LIMITS["width"]`` is valid from code)."""
BATCH_SIZE_CHOICES = (8, 16, 32, 64, 128, 256, 512, 1024)
"""The batch sizes the Playground's slider offers."""

Choice = TypeVar("Choice")


@dataclass(frozen=True)
class Limit:
    """An allowed range: whole numbers in ``[low, high]`` or real numbers in ``[low, high]`` / ``(low, high]``.

    A setting that a shared link or the dashboard's controls may set says so here too, with the class server's
    tighter bounds where they differ (``class_low``/``class_high``; ``class_control`` alone: the same range), so
    both ranges of a field are written once, side by side; :meth:`for_class` is that range."""

    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    class_low: float | None = None
    class_high: float | None = None
    class_control: bool = False

    def __post_init__(self) -> None:
        low = self.low if self.class_low is None else self.class_low
        high = self.high if self.class_high is None else self.class_high
        if not self.low <= low <= high <= self.high:
            raise ValueError(f"a class range must lie inside the library's [{self.low:g}, {self.high:g}], "
                             f"got [{low:g}, {high:g}]")

    @property
    def on_class_server(self) -> bool:
        """Whether links and controls reach this setting (and :meth:`for_class` holds them to a range)."""
        return self.class_control or self.class_low is not None or self.class_high is not None

    def for_class(self) -> Limit:
        """The range a link or a control of a class server's page may set: a 200-layer, 4096-wide net is fine
        from a notebook, not from a shared link on a 2-core machine."""
        return Limit(
            self.low if self.class_low is None else self.class_low,
            self.high if self.class_high is None else self.class_high,
            integer=self.integer,
            low_open=self.low_open,
        )

    def describe(self) -> str:
        """``"1 to 200"``, ``"a number in (0, 10000]"``: as the help text prints it."""
        if self.integer:
            return f"{int(self.low)} to {_whole_text(int(self.high))}"
        return f"a number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def check(self, name: str, value: Any) -> Any:
        if self.integer:
            return check_integer(name, value, int(self.low), int(self.high))
        return check_number(name, value, self.low, self.high, low_open=self.low_open)


def _whole_text(value: int) -> str:
    return "2**31-1" if value == 2**31 - 1 else str(value)


LIMITS: dict[str, Limit] = {
    # the net (NetConfig)
    "depth": Limit(1, 200, integer=True, class_high=60),
    "width": Limit(1, 4096, integer=True, class_low=2, class_high=512),
    "seq_len": Limit(1, 500, integer=True, class_low=2, class_high=200),
    "heads": Limit(1, 64, integer=True, class_high=8),
    "init_std": Limit(0.0, 100.0, low_open=True),
    "init_gain": Limit(0.0, 100.0, low_open=True, class_high=10.0),
    "forget_bias": Limit(-100.0, 100.0, class_low=-10.0, class_high=10.0),
    "features": Limit(1, 1_000_000, integer=True),
    # the run (SessionSettings, TrainingSession)
    "lr": Limit(0.0, 1e4, low_open=True, class_high=1000.0),
    "batch_size": Limit(1, 65536, integer=True, class_low=8, class_high=1024),
    "seed": Limit(0, 2**31 - 1, integer=True, class_control=True),
    "n_samples": Limit(16, 1_000_000, integer=True),
    "noise": Limit(0.0, 10.0),
    "momentum": Limit(0.0, 0.9999),
    "weight_decay": Limit(0.0, 10.0),
    "clip": Limit(0.0, 1e6, low_open=True, class_control=True),
    "freeze": Limit(0, 1000, integer=True, class_high=60),
    "eval_every": Limit(1, 1_000_000, integer=True),
    "history_size": Limit(1, 1_000_000, integer=True),
    "train_steps": Limit(1, 10_000_000, integer=True),
    # the runtime (Runner, GradientMonitor, RunViewer)
    "fps": Limit(0.0, 30.0, low_open=True),
    "max_steps_per_second": Limit(0.0, 10_000.0, low_open=True),
    "runner_steps": Limit(1, 1_000_000, integer=True),
    "budget": Limit(0.0, 1.0, low_open=True),
    "poll_interval": Limit(0.02, 60.0),
    # reading and recording (GradientProbe, ShardedReader, GradientLogger, run files)
    "detail_every": Limit(1, 100_000, integer=True),
    "log_every": Limit(1, 1_000_000, integer=True),
    "keep_recent": Limit(10, 10_000_000, integer=True),
}
"""Every numeric range, by field name (a few keys name a use rather than a field: ``features`` bounds
``build_model``'s in/out features, ``train_steps`` ``TrainingSession.train(n)``, ``runner_steps``
``Runner.step(n)``, ``poll_interval`` the ``RunViewer``'s ``interval``). The entries with a class range
(:meth:`Limit.for_class`) make :data:`gradwidgets.nets.cost.CLASS_LIMITS`, what links and controls may set."""


def check_integer(name: str, value: Any, low: int, high: int) -> int:
    """A whole number in ``[low, high]`` (a numpy integer counts; ``True`` does not); returned as ``int``."""
    if not isinstance(value, bool) and isinstance(value, numbers.Integral) and low <= int(value) <= high:
        return int(value)
    raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def check_number(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    allow_none: bool = False,
) -> Any:
    """A finite real number in ``[low, high]`` (``(low, high]`` with ``low_open``); returned as ``float``.
    ``None`` passes (and is returned) only with ``allow_none``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, bool) and isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            number = math.inf
        if math.isfinite(number) and low <= number <= high and not (low_open and number == low):
            return number
    bracket = "(" if low_open else "["
    alternative = " or None" if allow_none else ""
    raise ValueError(f"{name} must be a finite number in {bracket}{low:g}, {high:g}]{alternative}, got {value!r}")


def check_positive(name: str, value: Any, high: float = 1e6) -> float:
    """A finite number in ``(0, high]``."""
    return float(check_number(name, value, 0.0, high, low_open=True))


def check_choice(name: str, value: Any, allowed: Iterable[Choice]) -> Choice:
    """One of ``allowed`` (same type, equal); returns the allowed option itself."""
    options = tuple(allowed)
    for option in options:
        try:
            same_kind = isinstance(value, type(option)) and isinstance(value, bool) == isinstance(option, bool)
            if same_kind and value == option:
                return option
        except (TypeError, ValueError):  # an odd object (an array: ambiguous truth) compared with an option
            break
    raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` exactly (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_limit(name: str, value: Any, *, allow_none: bool = False, limit: str | None = None) -> Any:
    """Check ``value`` against ``LIMITS[limit or name]``: ``depth = check_limit("depth", depth)``."""
    if value is None and allow_none:
        return None
    entry = LIMITS[limit or name]
    if allow_none and not entry.integer:
        return check_number(name, value, entry.low, entry.high, low_open=entry.low_open, allow_none=True)
    return entry.check(name, value)

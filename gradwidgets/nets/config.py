"""``NetConfig``: the validated, immutable description of a net, and the constants its fields take.

Nothing here builds a module: :mod:`.build` turns a config into one, :mod:`.layers` holds the shared pieces
(norms, initialization, the role/block layout the probe reads).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .activations import ACTIVATIONS

__all__ = [
    "CELLS",
    "INITS",
    "KINDS",
    "NORMS",
    "NORM_POSITIONS",
    "RNN_ACTIVATIONS",
    "STRUCTURAL_FIELDS",
    "NetConfig",
    "check_choice",
    "check_integer",
    "check_positive",
    "field_names",
]

KINDS = ("mlp", "rnn", "transformer")
NORMS = ("none", "batch", "layer")
NORM_POSITIONS = ("pre", "post")
INITS = ("default", "xavier", "kaiming", "normal", "orthogonal", "identity")
CELLS = ("rnn", "lstm", "gru")
RNN_ACTIVATIONS = ("tanh", "relu")

DEFAULT_DEPTH = {"mlp": 10, "rnn": 1, "transformer": 6}
MAX_DEPTH = 200
MAX_WIDTH = 4096
MAX_SEQ_LEN = 500


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def check_integer(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def check_positive(name: str, value: Any, high: float = 1e6) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= high
    ):
        raise ValueError(f"{name} must be a finite number in (0, {high:g}], got {value!r}")


@dataclass(frozen=True)
class NetConfig:
    """What to build. Immutable and validated: a bad value raises ``ValueError`` naming the field.

    ``depth`` counts hidden layers (MLP), stacked recurrent layers (RNN) or attention+MLP blocks
    (transformer); left as ``None`` it takes the kind's usual value (10, 1, 6).

    Norm placement (``norm_position``): ``"pre"`` normalizes a block's input (``x + f(norm(x))`` with
    ``residual``, the modern default), ``"post"`` normalizes after the linear map (``act(norm(Wx))``, as in
    Ioffe & Szegedy) or after the sum (``norm(x + f(x))``, the original transformer).
    """

    kind: str = "mlp"
    depth: int | None = None
    width: int = 64
    activation: str = "relu"
    residual: bool = False
    norm: str = "none"
    norm_position: str = "pre"
    init: str = "default"
    init_std: float = 0.1
    init_gain: float = 1.0
    bias: bool = True
    cell: str = "rnn"
    seq_len: int = 20
    forget_bias: float = 0.0
    heads: int = 4

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        if self.depth is None:
            object.__setattr__(self, "depth", DEFAULT_DEPTH[self.kind])
        check_integer("depth", self.depth, 1, MAX_DEPTH)
        check_integer("width", self.width, 1, MAX_WIDTH)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        if not isinstance(self.residual, bool):
            raise ValueError(f"residual must be True or False, got {self.residual!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be True or False, got {self.bias!r}")
        check_choice("norm", self.norm, NORMS)
        check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        check_choice("init", self.init, INITS)
        check_positive("init_std", self.init_std, 100.0)
        check_positive("init_gain", self.init_gain, 100.0)
        check_choice("cell", self.cell, CELLS)
        check_integer("seq_len", self.seq_len, 1, MAX_SEQ_LEN)
        if (
            isinstance(self.forget_bias, bool)
            or not isinstance(self.forget_bias, (int, float))
            or not math.isfinite(self.forget_bias)
            or abs(self.forget_bias) > 100
        ):
            raise ValueError(f"forget_bias must be a finite number in [-100, 100], got {self.forget_bias!r}")
        check_integer("heads", self.heads, 1, 64)
        if self.kind == "transformer" and self.width % self.heads:
            raise ValueError(f"width must be a multiple of heads ({self.heads}) for a transformer, got {self.width}")
        if self.kind == "rnn" and self.cell == "rnn":
            check_choice("activation (for a vanilla RNN cell)", self.activation, RNN_ACTIVATIONS)
        if self.init == "identity" and not (self.kind == "rnn" and self.cell == "rnn"):
            raise ValueError("init 'identity' (IRNN) applies only to kind='rnn' with cell='rnn'")
        if self.kind != "mlp" and self.norm == "batch":
            raise ValueError(f"norm must be one of ['none', 'layer'] for kind={self.kind!r}, got 'batch'")

    def replace(self, **changes: Any) -> NetConfig:
        """A copy with ``changes`` applied (and validated). Unknown names raise ``ValueError``."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown NetConfig field(s) {sorted(unknown)}; fields are {field_names()}")
        if "kind" in changes and "depth" not in changes and changes["kind"] != self.kind:
            changes["depth"] = None
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def field_names() -> list[str]:
    return [f.name for f in fields(NetConfig)]


STRUCTURAL_FIELDS = frozenset(field_names())

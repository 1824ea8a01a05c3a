"""``NetConfig``: the validated, immutable description of a net, and the constants its fields take.

Nothing here builds a module: :mod:`.build` turns a config into one, :mod:`.layers` holds the shared pieces
(norms, initialization, the role/block layout the probe reads).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..validation import (
    CELLS,
    INITS,
    KINDS,
    LIMITS,
    NORM_POSITIONS,
    NORMS,
    RNN_ACTIVATIONS,
    check_bool,
    check_choice,
    check_integer,
    check_limit,
    check_positive,
)
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

DEFAULT_DEPTH = {"mlp": 10, "rnn": 1, "transformer": 6}
MAX_DEPTH = int(LIMITS["depth"].high)
MAX_WIDTH = int(LIMITS["width"].high)
MAX_SEQ_LEN = int(LIMITS["seq_len"].high)


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
        def checked(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # the checked value (a numpy integer becomes an int)

        checked("kind", check_choice("kind", self.kind, KINDS))
        checked("depth", check_limit("depth", DEFAULT_DEPTH[self.kind] if self.depth is None else self.depth))
        checked("width", check_limit("width", self.width))
        checked("activation", check_choice("activation", self.activation, tuple(ACTIVATIONS)))
        checked("residual", check_bool("residual", self.residual))
        checked("bias", check_bool("bias", self.bias))
        checked("norm", check_choice("norm", self.norm, NORMS))
        checked("norm_position", check_choice("norm_position", self.norm_position, NORM_POSITIONS))
        checked("init", check_choice("init", self.init, INITS))
        checked("init_std", check_limit("init_std", self.init_std))
        checked("init_gain", check_limit("init_gain", self.init_gain))
        checked("cell", check_choice("cell", self.cell, CELLS))
        checked("seq_len", check_limit("seq_len", self.seq_len))
        checked("forget_bias", check_limit("forget_bias", self.forget_bias))
        checked("heads", check_limit("heads", self.heads))
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

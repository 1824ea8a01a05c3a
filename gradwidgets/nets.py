"""``NetConfig``: the validated description of a net, and ``build_model`` which turns it into a plain
``torch.nn.Module``.

Every model built here carries two small attributes the gradient probe reads (any other module works
without them):

* ``layer_roles``: qualified module name -> ``"hidden" | "norm" | "embedding" | "head"``;
* ``layer_blocks``: qualified module name -> index of the depth level (block) it belongs to, ``-1`` outside
  the stack (input embedding, final norm, head).

The "first vs last layer" ratio that :func:`gradwidgets.diagnose` reports compares those blocks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from .activations import ACTIVATIONS

__all__ = [
    "KINDS",
    "NORMS",
    "INITS",
    "CELLS",
    "NORM_POSITIONS",
    "STRUCTURAL_FIELDS",
    "NetConfig",
    "build_model",
    "declare_layout",
    "init_weights",
    "make_norm",
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


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _integer(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _positive(name: str, value: Any, high: float = 1e6) -> None:
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
        _choice("kind", self.kind, KINDS)
        if self.depth is None:
            object.__setattr__(self, "depth", DEFAULT_DEPTH[self.kind])
        _integer("depth", self.depth, 1, MAX_DEPTH)
        _integer("width", self.width, 1, MAX_WIDTH)
        _choice("activation", self.activation, tuple(ACTIVATIONS))
        if not isinstance(self.residual, bool):
            raise ValueError(f"residual must be True or False, got {self.residual!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be True or False, got {self.bias!r}")
        _choice("norm", self.norm, NORMS)
        _choice("norm_position", self.norm_position, NORM_POSITIONS)
        _choice("init", self.init, INITS)
        _positive("init_std", self.init_std, 100.0)
        _positive("init_gain", self.init_gain, 100.0)
        _choice("cell", self.cell, CELLS)
        _integer("seq_len", self.seq_len, 1, MAX_SEQ_LEN)
        if (
            isinstance(self.forget_bias, bool)
            or not isinstance(self.forget_bias, (int, float))
            or not math.isfinite(self.forget_bias)
            or abs(self.forget_bias) > 100
        ):
            raise ValueError(f"forget_bias must be a finite number in [-100, 100], got {self.forget_bias!r}")
        _integer("heads", self.heads, 1, 64)
        if self.kind == "transformer" and self.width % self.heads:
            raise ValueError(f"width must be a multiple of heads ({self.heads}) for a transformer, got {self.width}")
        if self.kind == "rnn" and self.cell == "rnn":
            _choice("activation (for a vanilla RNN cell)", self.activation, RNN_ACTIVATIONS)
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


def build_model(config: NetConfig, in_features: int, out_features: int) -> nn.Module:
    """A freshly initialized ``nn.Module`` for ``config``.

    Inputs are ``[batch, in_features]`` for an MLP and ``[batch, seq_len, in_features]`` for the sequence
    kinds; the output is ``[batch, out_features]``. Seed torch's RNG beforehand for repeatable weights.
    """
    if not isinstance(config, NetConfig):
        raise ValueError(f"config must be a NetConfig, got {type(config).__name__}")
    _integer("in_features", in_features, 1, 1_000_000)
    _integer("out_features", out_features, 1, 1_000_000)
    if config.kind == "mlp":
        from .mlp import MLP

        model: nn.Module = MLP(config, in_features, out_features)
    elif config.kind == "rnn":
        from .recurrent import RecurrentNet

        model = RecurrentNet(config, in_features, out_features)
    else:
        from .transformer import TransformerNet

        model = TransformerNet(config, in_features, out_features)
    init_weights(model, config)
    return model


def _is_weight_matrix(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)


def init_weights(model: nn.Module, config: NetConfig) -> None:
    """Apply ``config.init`` (and ``init_gain``) to every weight matrix; norms keep their ones and zeros.

    Non-default schemes also zero the biases, as the papers that introduced them do. Recurrent models apply
    their own rules for recurrent matrices (identity/orthogonal) through ``init_recurrent``.
    """
    scheme, gain = config.init, config.init_gain
    with torch.no_grad():
        for module in model.modules():
            if _is_weight_matrix(module):
                _init_matrix(module.weight, scheme, gain, config)
                if scheme != "default" and module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
                _init_matrix(module.in_proj_weight, scheme, gain, config)
                if scheme != "default" and module.in_proj_bias is not None:
                    module.in_proj_bias.zero_()
        init_recurrent = getattr(model, "init_recurrent", None)
        if init_recurrent is not None:
            init_recurrent(scheme, gain)


def _init_matrix(weight: torch.Tensor, scheme: str, gain: float, config: NetConfig) -> None:
    if scheme in ("default", "identity"):
        pass
    elif scheme == "xavier":
        nn.init.xavier_normal_(weight)
    elif scheme == "kaiming":
        nn.init.kaiming_normal_(weight, nonlinearity="relu")
    elif scheme == "normal":
        nn.init.normal_(weight, 0.0, config.init_std)
    elif scheme == "orthogonal":
        nn.init.orthogonal_(weight)
    if gain != 1.0:
        weight.mul_(gain)


def make_norm(norm: str, features: int) -> nn.Module | None:
    """The normalization layer for ``norm`` over ``features`` (``None`` for ``"none"``)."""
    if norm == "batch":
        return nn.BatchNorm1d(features)
    if norm == "layer":
        return nn.LayerNorm(features)
    return None


def declare_layout(model: nn.Module, stack: str) -> tuple[dict[str, str], dict[str, int]]:
    """Roles and block indices for a model whose repeated blocks live in the ``ModuleList`` named ``stack``.

    Inside the stack: block ``i`` for ``{stack}.{i}.*``, role ``"norm"`` for norm layers, else ``"hidden"``.
    Outside it (block ``-1``): ``head`` is the head, norms are norms, the rest is input embedding.
    """
    roles: dict[str, str] = {}
    blocks: dict[str, int] = {}
    prefix = stack + "."
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        is_norm = isinstance(module, (nn.LayerNorm, nn.BatchNorm1d))
        if name.startswith(prefix):
            blocks[name] = int(name[len(prefix) :].split(".")[0])
            roles[name] = "norm" if is_norm else "hidden"
        else:
            blocks[name] = -1
            roles[name] = "norm" if is_norm else "head" if name == "head" else "embedding"
    return roles, blocks

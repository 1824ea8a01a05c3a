"""Activation registry: the function, a module factory, and the largest value its derivative takes.

The derivative's maximum is what the chain-rule argument is about: a stack of ``depth`` layers whose
activation has ``max f' < 1`` shrinks the backward signal by at most ``max_derivative ** depth`` (before the
weights are taken into account). Sigmoid's 0.25 is the textbook case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ACTIVATIONS", "Activation", "SwiGLU", "activation_function", "theoretical_bound"]


@dataclass(frozen=True)
class Activation:
    """One entry of the registry.

    ``gated`` activations (SwiGLU) need a projection twice as wide as their output, so layers that use them are
    built differently (see :class:`SwiGLU`).
    """

    name: str
    function: Callable[[torch.Tensor], torch.Tensor]
    max_derivative: float
    gated: bool = False
    label: str = ""

    def module(self) -> nn.Module:
        """A fresh ``nn.Module`` applying this activation (not used for gated ones)."""
        return _Elementwise(self.function, self.name)


class _Elementwise(nn.Module):
    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        super().__init__()
        self.function = function
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)

    def extra_repr(self) -> str:
        return self.name


class SwiGLU(nn.Linear):
    """``silu(x W_gate) * (x W_value)``: a gated linear unit (Shazeer 2020).

    One weight matrix holds both projections (``2 * out_features`` rows) so that the layer is a single entry in
    the gradient probe and takes the same initializations as a plain ``Linear`` + activation layer.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, 2 * out_features, bias=bias)
        self.gated_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = super().forward(x).chunk(2, dim=-1)
        return F.silu(gate) * value


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.01)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", _identity, 1.0, label="identity (linear)"),
        Activation("sigmoid", torch.sigmoid, 0.25, label="sigmoid"),
        Activation("tanh", torch.tanh, 1.0, label="tanh"),
        Activation("relu", F.relu, 1.0, label="ReLU"),
        Activation("leaky_relu", _leaky_relu, 1.0, label="leaky ReLU"),
        Activation("elu", F.elu, 1.0, label="ELU"),
        Activation("gelu", F.gelu, 1.1289, label="GELU"),
        Activation("silu", F.silu, 1.0998, label="SiLU (swish)"),
        # The gate is SiLU; the value path is linear, so no bounded elementwise maximum exists.
        Activation("swiglu", F.silu, 1.0998, gated=True, label="SwiGLU"),
    )
}


def activation_function(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise function for ``name`` (SwiGLU's gate for ``"swiglu"``), for plotting f and f'."""
    try:
        return ACTIVATIONS[name].function
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from None


def theoretical_bound(activation: str, depth: int) -> float:
    """``max f' ** (depth - 1)``: the activations' share of the shrink from the last to the first hidden layer, *if
    the weights kept the signal's scale*. Not a bound on the measured ratio: default weights shrink it further (ReLU:
    1 vs ~1e-6 measured), normalization can grow it (sigmoid + BatchNorm: 3.6e-12 vs ~8), GELU's max slope > 1."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS[activation].max_derivative ** max(depth - 1, 0)

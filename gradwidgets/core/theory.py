"""The numbers behind ``ActivationPlot`` (f and f' by autograd), and what slope and weights predict for a ratio.

Kept out of the views so that they stay torch-free: the apps call this and hand the view plain arrays.

Two "theory" numbers exist and only one of them predicts anything. ``theoretical_bound`` is ``max f'**(d-1)``: the
activations' share if the weights kept the signal's scale. It is neither a bound nor an estimate (GELU's max slope
is 1.13, so it reads 10 at depth 20 while the net measures ~1e-9). The chain rule multiplies, per layer, the mean
slope the units actually have times the factor by which ``W^T`` scales a vector; :func:`predict_ratio` measures both
on a net and a batch, and ``(slope x weight gain)**(d-1)`` lands within 5 % per layer of the measured ratio on a
plain sigmoid stack (depth 10, default init: 0.141 vs 0.148 per layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from ..nets.activations import ACTIVATIONS, SwiGLU, activation_function, theoretical_bound
from ..nets.mlp import MLPBlock

__all__ = ["ActivationCurve", "RatioPrediction", "activation_curve", "predict_ratio", "theoretical_bound"]

X_RANGE = 6.0
POINTS = 241


@dataclass(frozen=True)
class ActivationCurve:
    name: str
    label: str
    x: np.ndarray
    f: np.ndarray
    df: np.ndarray
    max_derivative: float


@lru_cache(maxsize=32)
def activation_curve(name: str) -> ActivationCurve:
    """f and f' (by autograd) on ``[-6, 6]``; SwiGLU shows its SiLU gate, as ``activation_function`` does."""
    function = activation_function(name)
    x = torch.linspace(-X_RANGE, X_RANGE, POINTS, dtype=torch.float64, requires_grad=True)
    y = function(x)
    (dy,) = torch.autograd.grad(y.sum(), x)
    entry = ACTIVATIONS[name]
    return ActivationCurve(
        name=name,
        label=entry.label or name,
        x=x.detach().numpy().copy(),
        f=y.detach().numpy().copy(),
        df=dy.numpy().copy(),
        max_derivative=entry.max_derivative,
    )


@dataclass(frozen=True)
class RatioPrediction:
    """The first/last hidden layer's gradient ratio that slope x weight gain predicts, one factor per layer step.

    ``slopes[i] * gains[i]`` is the factor of step ``i`` on the way from the last hidden layer to the first: the
    slope of hidden layer ``i + 1`` (root-mean-square of f'(z) over units and batch: the factor by which ``f' *``
    scales a vector's length; for sigmoid near 0 it equals the mean slope, 0.245) times ``|W|_F / sqrt(n_out)`` of
    hidden layer ``i + 2``, the factor by which ``W^T`` scales a random vector's length.
    """

    slopes: np.ndarray
    gains: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.slopes)

    @property
    def ratio(self) -> float:
        """The product of the per-step factors: the predicted first/last ratio of dL/dz."""
        return float(np.prod(self.slopes * self.gains))

    @property
    def factor(self) -> float:
        """The geometric mean factor per layer step (``ratio ** (1 / steps)``)."""
        return float(self.ratio ** (1 / self.steps)) if self.steps else 1.0

    @property
    def mean_slope(self) -> float:
        """The layers' slopes, averaged (sigmoid at default init: 0.245; ReLU: sqrt(1/2) = 0.71)."""
        return float(np.mean(self.slopes)) if self.steps else float("nan")

    @property
    def weight_gain(self) -> float:
        """The geometric mean of the gains (default init: ``sqrt(1/3)`` whatever the width)."""
        return float(math.exp(np.mean(np.log(self.gains)))) if self.steps else float("nan")


def predict_ratio(model: nn.Module, inputs: torch.Tensor) -> RatioPrediction:
    """``(slope x weight gain) ** (depth - 1)`` for a plain stack (the project's MLP: no norm, no skip, no gate).

    Reads the slope of every hidden layer on one forward pass of ``inputs`` (eval mode, no weights change) and the
    gain of every hidden weight matrix. It predicts the first/last ratio of dL/dh (within a factor of a few: it
    ignores correlations between the slopes and the backward signal). That is also the weight-gradient ratio when
    the layers' inputs keep their size, as sigmoid's 0.5 offset keeps them; ReLU's inputs shrink forward, so its
    weight-gradient ratio differs (notebook 2b).
    """
    stack = getattr(model, "blocks", None)
    if not isinstance(stack, nn.ModuleList) or not all(isinstance(b, MLPBlock) for b in stack):
        raise ValueError(f"model must be one of the project's MLPs (gw.build_model), got {type(model).__name__}")
    blocks: list[MLPBlock] = list(stack)  # type: ignore[arg-type]  # checked just above
    for index, block in enumerate(blocks):
        if block.norm is not None or block.residual:
            raise ValueError(f"blocks.{index}: the prediction holds for a plain stack; norm or residual found")
        if isinstance(block.layer, SwiGLU) or not isinstance(block.layer, nn.Linear):
            raise ValueError(f"blocks.{index}: the prediction needs an elementwise activation after nn.Linear")
    if len(blocks) < 2:
        return RatioPrediction(slopes=np.array([]), gains=np.array([]))
    slopes_seen: list[float] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        with torch.enable_grad():
            z = args[0].detach().double().requires_grad_(True)
            (slope,) = torch.autograd.grad(module.forward(z).sum(), z)  # .forward: no hooks
        slopes_seen.append(float(slope.pow(2).mean().sqrt()))

    hooks = [block.act.register_forward_hook(record) for block in blocks[:-1]]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(training)
    slopes = np.array(slopes_seen, dtype=np.float64)
    gains = np.array(
        [float(_linear(b).weight.detach().double().norm()) / math.sqrt(_linear(b).out_features) for b in blocks[1:]]
    )
    return RatioPrediction(slopes=slopes, gains=gains)


def _linear(block: MLPBlock) -> nn.Linear:
    assert isinstance(block.layer, nn.Linear)
    return block.layer

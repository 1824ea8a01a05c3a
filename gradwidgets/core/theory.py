"""The numbers behind ``ActivationPlot`` (f and f' by autograd), computed with torch.

Kept out of the views so that they stay torch-free: the apps call this and hand the view plain arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..nets.activations import ACTIVATIONS, activation_function, theoretical_bound

__all__ = ["ActivationCurve", "activation_curve", "theoretical_bound"]

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

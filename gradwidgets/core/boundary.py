"""The decision boundary of a 2-D classifier: its class-1 probability on a coarse grid over the training points.

TensorFlow Playground's signature picture: a vanishing net leaves the spiral one flat colour, a fixed one carves
it. Computed here, on the trainer's side (torch, no widgets), under ``torch.no_grad`` and in eval mode (BatchNorm
uses its running statistics, as the test loss does); the view (:mod:`gradwidgets.widgets.boundary`) only draws
the numbers. A 40 x 40 grid is one forward pass of 1600 points, about two training steps of a batch of 128 (10 ms
for the default 12-layer net, 1.8 s for a 60-layer, 512-wide one); so the frame builder asks for one at most every
:data:`BOUNDARY_EVERY` steps *and* only once the trainer has had ``1 / BOUNDARY_BUDGET`` times the last grid's cost
to itself: the boundary takes at most ~4 % of the trainer's time whatever the net (``tests/test_boundary.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..validation import check_integer
from .data import Dataset

__all__ = [
    "BOUNDARY_BUDGET",
    "BOUNDARY_EVERY",
    "GRID_SIZE",
    "MAX_POINTS",
    "BoundaryGrid",
    "boundary_applies",
    "evaluate_boundary",
]

GRID_SIZE = 40
"""Cells per side: coarse enough to be cheap, fine enough to show a spiral arm."""
BOUNDARY_EVERY = 10
"""At most one grid per this many training steps while playing (a paused frame always gets a fresh one)."""
BOUNDARY_BUDGET = 0.04
"""The share of the trainer thread's time the grids may take while playing."""
MAX_POINTS = 300
"""Training points drawn over the grid (every k-th): enough to see the classes, few enough to send once."""
MARGIN = 0.1
"""The grid reaches this fraction of the points' span beyond them on each side."""


@dataclass(frozen=True)
class BoundaryGrid:
    """``probability[i, j]`` is the model's p(class 1) at ``(xs[j], ys[i])``; the points are training points."""

    xs: np.ndarray
    ys: np.ndarray
    probability: np.ndarray
    points_x: np.ndarray
    points_y: np.ndarray
    labels: np.ndarray
    step: int

    def predicted_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The grid's class (p > 0.5) in the cell nearest each point: what the picture says about it."""
        column = np.abs(np.asarray(x, np.float64)[:, None] - self.xs[None, :]).argmin(axis=1)
        row = np.abs(np.asarray(y, np.float64)[:, None] - self.ys[None, :]).argmin(axis=1)
        predicted: np.ndarray = (self.probability[row, column] > 0.5).astype(np.int64)
        return predicted


def boundary_applies(data: Dataset) -> bool:
    """A picture exists for a two-class task on two input features (spiral, moons, circles, xor, gaussian)."""
    return (
        not data.is_sequence
        and data.task == "classification"
        and data.in_features == 2
        and data.out_features == 2
        and data.x_train.ndim == 2
    )


@torch.no_grad()
def evaluate_boundary(model: nn.Module, data: Dataset, step: int = 0, size: int = GRID_SIZE) -> BoundaryGrid:
    """``model``'s p(class 1) on a ``size`` x ``size`` grid spanning ``data``'s training points.

    Weights, gradients and BatchNorm statistics are left as they were (no_grad, eval mode restored after).
    ``ValueError`` when the data has no 2-D picture (:func:`boundary_applies`).
    """
    if not boundary_applies(data):
        raise ValueError(
            f"dataset {data.name!r} has no decision boundary to draw: it needs 2 input features and 2 classes, "
            f"got {data.in_features} features, {data.out_features} outputs"
        )
    size = check_integer("size", size, 2, 400)
    x = data.x_train
    low, high = x.min(dim=0).values, x.max(dim=0).values
    pad = (high - low) * MARGIN
    low, high = low - pad, high + pad
    xs = torch.linspace(float(low[0]), float(high[0]), size)
    ys = torch.linspace(float(low[1]), float(high[1]), size)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1).to(x.dtype)
    was_training = model.training
    try:
        model.eval()
        probability = F.softmax(model(points).double(), dim=1)[:, 1].reshape(size, size)
    finally:
        model.train(was_training)
    every = max(1, -(-len(x) // MAX_POINTS))
    shown = x[::every]
    return BoundaryGrid(
        xs=xs.double().numpy(),
        ys=ys.double().numpy(),
        probability=probability.numpy(),
        points_x=shown[:, 0].double().numpy(),
        points_y=shown[:, 1].double().numpy(),
        labels=data.y_train[::every].numpy().astype(np.int64),
        step=int(step),
    )

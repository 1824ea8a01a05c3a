"""What the optimizer adds to a verdict, and a reliable moment to read: ``optimizer.step()``.

The gradient alone does not say how far a step moves a layer: SGD moves it by ``lr * g``, Adam by about ``lr``
per entry - unless the gradient is below Adam's ``eps``, when the step shrinks to ``lr * g / eps`` (the layer
is *eps-limited*). :func:`optimizer_facts` reads the learning rate and ``eps`` from the param groups;
:func:`predicted_update_ratio` turns them into the update-to-data ratio each layer's next step will have
(``|step| / |w|``, healthy near 1e-3).

:class:`StepReads` calls a function right before each ``optimizer.step()`` (a step pre-hook): the gradients are
then complete for this step wherever the loop puts ``zero_grad()`` (at the start or at the end of its body).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["OptimizerFacts", "StepReads", "optimizer_facts", "predicted_update_ratio"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizerFacts:
    """``name`` (the class), ``lr`` (the largest of its groups'), ``eps`` (Adam-family only, else None)."""

    name: str
    lr: float
    eps: float | None
    adaptive: bool


def optimizer_facts(optimizer: Any) -> OptimizerFacts:
    """The optimizer's learning rate and eps; raises ``ValueError`` naming the field for anything without
    ``param_groups``."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise ValueError(
            f"optimizer must be a torch.optim.Optimizer (with param_groups), got {type(optimizer).__name__}"
        )
    rates = [float(g["lr"]) for g in groups if isinstance(g.get("lr"), (int, float)) or hasattr(g.get("lr"), "item")]
    lr = max(rates) if rates else math.nan
    adaptive = all("eps" in g for g in groups)  # Adam-family, RMSprop, Adagrad: steps divide by sqrt(v) + eps
    eps = max(float(g["eps"]) for g in groups) if adaptive else None
    return OptimizerFacts(type(optimizer).__name__, lr, eps, adaptive)


def predicted_update_ratio(
    facts: OptimizerFacts, grad_norm: np.ndarray, weight_norm: np.ndarray, param_count: np.ndarray
) -> np.ndarray:
    """``|step| / |w|`` per layer for the next step: ``lr * |g| / |w|`` for SGD-like optimizers; for Adam-family
    ones each entry moves about ``lr * g / (|g| + eps)``, i.e. ``lr * sqrt(n) * rms / (rms + eps) / |w|``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(weight_norm > 0, weight_norm, np.nan)
        if facts.adaptive and facts.eps is not None:
            rms = grad_norm / np.sqrt(np.maximum(param_count, 1))
            step = facts.lr * np.sqrt(np.maximum(param_count, 1)) * rms / (rms + facts.eps)
        else:
            step = facts.lr * grad_norm
        ratio: np.ndarray = step / weights
        return ratio


class StepReads:
    """Calls ``read()`` right before each ``optimizer.step()`` (``register_step_pre_hook``), at most one at a time;
    an exception in ``read`` is logged and kept in :attr:`error`, never raised into the training loop.
    :meth:`remove` takes the hook off."""

    def __init__(self, optimizer: Any, read: Callable[[], Any]) -> None:
        optimizer_facts(optimizer)  # validates
        if not hasattr(optimizer, "register_step_pre_hook"):
            raise ValueError(f"optimizer must support register_step_pre_hook, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.steps = 0
        self.error: BaseException | None = None
        self._read = read
        self._lock = threading.Lock()
        self._handle = optimizer.register_step_pre_hook(self._before_step)

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        with self._lock:
            self.steps += 1
            try:
                self._read()
            except Exception as exc:  # noqa: BLE001 - the user's training must go on
                self.error = exc
                logger.error("reading the gradients at optimizer.step() failed", exc_info=exc)

    def remove(self) -> None:
        self._handle.remove()

"""A fixed-size ring buffer of per-step, per-layer statistics: memory stays flat however long a run lasts."""

from __future__ import annotations

import numpy as np

from ..validation import check_choice, check_limit
from .stats import GradientStats

__all__ = ["History"]

LAYER_FIELDS = ("grad_norm", "grad_mean_abs", "grad_max_abs", "update_ratio")


class History:
    """The last ``capacity`` steps of a run, plus test metrics at the steps where they were measured.

    Arrays come out oldest first. ``len(history)`` is how many steps are held; ``total`` how many were ever
    appended.
    """

    def __init__(self, capacity: int, names: tuple[str, ...], seq_len: int | None = None) -> None:
        self.capacity = capacity = check_limit("history_size", capacity)
        self.names = tuple(names)
        n = len(self.names)
        self._steps = np.zeros(capacity, np.int64)
        self._loss = np.full(capacity, np.nan)
        self._layers = {name: np.full((capacity, n), np.nan) for name in LAYER_FIELDS}
        self._time = np.full((capacity, seq_len), np.nan) if seq_len else None
        self._test_steps = np.zeros(capacity, np.int64)
        self._test = {"test_loss": np.full(capacity, np.nan), "test_accuracy": np.full(capacity, np.nan)}
        self._head = 0
        self._count = 0
        self._test_head = 0
        self._test_count = 0
        self.total = 0

    def __len__(self) -> int:
        return self._count

    def append(self, stats: GradientStats) -> None:
        i = self._head
        self._steps[i] = stats.step
        self._loss[i] = stats.loss
        for name, rows in self._layers.items():
            rows[i] = getattr(stats, name)
        if self._time is not None and stats.time_grad_norm is not None:
            self._time[i] = stats.time_grad_norm
        self._head = (i + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)
        self.total += 1

    def append_test(self, step: int, loss: float, accuracy: float) -> None:
        i = self._test_head
        self._test_steps[i] = step
        self._test["test_loss"][i] = loss
        self._test["test_accuracy"][i] = accuracy
        self._test_head = (i + 1) % self.capacity
        self._test_count = min(self._test_count + 1, self.capacity)

    def _ordered(self, array: np.ndarray, head: int, count: int) -> np.ndarray:
        if count < self.capacity:
            ordered: np.ndarray = array[:count].copy()
        else:
            ordered = np.concatenate([array[head:], array[:head]])
        return ordered

    @property
    def steps(self) -> np.ndarray:
        return self._ordered(self._steps, self._head, self._count)

    @property
    def loss(self) -> np.ndarray:
        return self._ordered(self._loss, self._head, self._count)

    def layer(self, field: str) -> np.ndarray:
        """``[steps, layers]`` array of ``field`` (one of ``grad_norm, grad_mean_abs, grad_max_abs, update_ratio``)."""
        field = check_choice("field", field, LAYER_FIELDS)
        return self._ordered(self._layers[field], self._head, self._count)

    @property
    def grad_norm(self) -> np.ndarray:
        return self.layer("grad_norm")

    @property
    def update_ratio(self) -> np.ndarray:
        return self.layer("update_ratio")

    @property
    def time_grad_norm(self) -> np.ndarray | None:
        if self._time is None:
            return None
        return self._ordered(self._time, self._head, self._count)

    @property
    def test_steps(self) -> np.ndarray:
        return self._ordered(self._test_steps, self._test_head, self._test_count)

    @property
    def test_loss(self) -> np.ndarray:
        return self._ordered(self._test["test_loss"], self._test_head, self._test_count)

    @property
    def test_accuracy(self) -> np.ndarray:
        return self._ordered(self._test["test_accuracy"], self._test_head, self._test_count)

    def at(self, index: int) -> dict[str, np.ndarray | float | int]:
        """The record ``index`` steps from the oldest one held (negative counts from the newest): for replay."""
        if not -self._count <= index < self._count:
            raise IndexError(f"index {index} outside the {self._count} steps held")
        index %= self._count
        slot = (self._head - self._count + index) % self.capacity
        record: dict[str, np.ndarray | float | int] = {
            "step": int(self._steps[slot]),
            "loss": float(self._loss[slot]),
        }
        for name, rows in self._layers.items():
            record[name] = rows[slot].copy()
        if self._time is not None:
            record["time_grad_norm"] = self._time[slot].copy()
        return record

    @property
    def nbytes(self) -> int:
        arrays = [self._steps, self._loss, self._test_steps, *self._layers.values(), *self._test.values()]
        if self._time is not None:
            arrays.append(self._time)
        return int(sum(a.nbytes for a in arrays))

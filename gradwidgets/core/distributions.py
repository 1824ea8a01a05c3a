"""Distributions per layer, Karpathy's instruments ("Building makemore part 3: activations & gradients", 2022):
histograms of each layer's activations, of its state gradients dL/dh and of its weight updates, and the
update:data ratio of every weight over time.

Why histograms beside the bars: a norm says how big a layer's gradient is, a histogram says how it is spread -
a sigmoid layer piled up at 0 and 1 (saturated), a ReLU layer with a spike at exactly 0, gradients that shrink
layer after layer while keeping their shape. And the update:data ratio, ``log10(std(dW) / std(W))`` per weight
matrix, says how fast each layer actually learns: Karpathy's rule of thumb is about 1e-3 (-3 on the plot);
far below, the layer barely moves; far above, it is being rewritten at every step.

Measured only at the detail cadence (every ``every``-th optimizer step, and the first): forward hooks on the
hidden states and tensor hooks on their gradients are idle in between, and the weights are copied only right
before such a step. Bins: activations use a fixed number of linear bins over each layer's own range (as
``torch.histogram`` does in the lecture); gradients and updates use fixed log10 bins, because in a vanishing net
the early layers' gradients are orders of magnitude smaller and linear bins put them all in the centre bin.
``dW`` is the change the optimizer step actually made (for plain SGD, exactly ``-lr * grad``).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from ..validation import check_limit
from .activation_stats import activation_kind
from .optimizer_reads import optimizer_facts

__all__ = [
    "ACTIVATION_BINS",
    "GRADIENT_EDGES",
    "UPDATE_DATA_REFERENCE",
    "UPDATE_EDGES",
    "DistributionProbe",
    "DistributionReading",
    "Histograms",
    "UpdateDataSeries",
    "histogram_linear",
    "histogram_log10",
]

logger = logging.getLogger(__name__)

ACTIVATION_BINS = 41
"""Linear bins per layer, from that layer's smallest value to its largest."""
GRADIENT_EDGES = np.arange(-46.0, 6.0 + 1e-9, 0.5)
"""log10 |dL/dh| bin edges: down to float32's smallest subnormal (1.4e-45), half a decade wide."""
UPDATE_EDGES = np.arange(-16.0, 2.0 + 1e-9, 0.25)
"""log10 (|dW_ij| / std(W)) bin edges, a quarter decade wide."""
UPDATE_DATA_REFERENCE = -3.0
"""Karpathy's rule of thumb for log10(update:data): about 1e-3."""
SERIES_SIZE = 1000
T = TypeVar("T")


@dataclass(frozen=True)
class Histograms:
    """One histogram per row: ``counts[i]`` over ``edges[i]`` (``bins + 1`` edges; log10 histograms share one
    set of edges). ``zeros``: entries exactly 0 (a log10 histogram cannot place them; they are not in ``counts``;
    0 for linear ones). ``total``: all entries of the row. ``mean``/``std``: of the raw values (not of the log)."""

    names: tuple[str, ...]
    edges: np.ndarray
    counts: np.ndarray
    zeros: np.ndarray
    total: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    log10: bool

    def __len__(self) -> int:
        return len(self.names)

    def fractions(self) -> np.ndarray:
        """Each bin's share of its row's entries (rows of different widths compare)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            out: np.ndarray = self.counts / np.maximum(self.total, 1)[:, None]
        return out

    def centres(self) -> np.ndarray:
        out: np.ndarray = (self.edges[:, :-1] + self.edges[:, 1:]) / 2
        return out


@dataclass(frozen=True)
class DistributionReading:
    """The distributions at optimizer step ``step``: ``activations`` (hidden states, linear bins),
    ``gradients`` (log10 |dL/dh| of the same hidden states), ``updates`` (log10 |dW_ij| / std(W) of every weight
    matrix) and ``update_data`` (log10 std(dW) / std(W) per weight matrix, NaN where it did not move).
    A part is ``None`` when the model has nothing to measure there (no hidden state hooks, no weight matrix)."""

    step: int
    activations: Histograms | None
    gradients: Histograms | None
    updates: Histograms | None
    update_data: np.ndarray


@dataclass(frozen=True)
class UpdateDataSeries:
    """log10 update:data per weight matrix (columns, ``names``) at each measured step (rows, ``steps``)."""

    names: tuple[str, ...]
    steps: np.ndarray
    values: np.ndarray


def _finite(values: torch.Tensor) -> torch.Tensor:
    """``values`` flattened in float64, without NaN/inf (a finite sum proves there are none: no extra pass)."""
    flat = values.detach().reshape(-1).double()
    return flat if bool(torch.isfinite(flat.sum())) else flat[torch.isfinite(flat)]


def _moments(flat: torch.Tensor) -> tuple[float, float]:
    if flat.numel() < 2:
        return (float(flat.mean()) if flat.numel() else float("nan")), float("nan")
    std, mean = torch.std_mean(flat)
    return float(mean), float(std)


def histogram_linear(values: torch.Tensor, bins: int = ACTIVATION_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of the finite ``values`` in ``bins`` linear bins from their minimum to their maximum (as
    ``torch.histogram`` does by default; a constant ``c`` gets ``[c - 0.5, c + 0.5]``)."""
    flat = _finite(values)
    low, high = (float(v) for v in torch.aminmax(flat)) if flat.numel() else (0.0, 0.0)
    if not high > low:
        low, high = low - 0.5, high + 0.5
    counts = torch.histc(flat, bins=bins, min=low, max=high)
    return np.linspace(low, high, bins + 1), counts.cpu().numpy()


def histogram_log10(values: torch.Tensor, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """(counts over ``edges`` of log10 |v|, number of exact zeros); values beyond the edges go to the end bins,
    non-finite ones are left out."""
    magnitude = _finite(values).abs()
    zeros = int((magnitude == 0).sum())
    low, high = float(edges[0]), float(edges[-1])
    width = float(edges[1] - edges[0])
    logs = magnitude.log10().clamp(low + width / 2, high - width / 2)  # log10(0) = -inf: the first bin ...
    counts = torch.histc(logs, bins=len(edges) - 1, min=low, max=high).cpu().numpy()
    counts[0] -= zeros  # ... taken out again
    return counts, zeros


Row = tuple[np.ndarray, np.ndarray, int, int, float, float]
"""One histogram row: edges, counts, zeros, total, mean, std."""


def _histograms(names: tuple[str, ...], parts: list[Row], log10: bool) -> Histograms:
    """Rows of (edges, counts, zeros, total, mean, std) as one :class:`Histograms`."""
    column = list(zip(*parts, strict=True))
    return Histograms(
        names=names,
        edges=np.array(column[0], dtype=np.float64),
        counts=np.array(column[1], dtype=np.float64),
        zeros=np.array(column[2], dtype=np.float64),
        total=np.array(column[3], dtype=np.float64),
        mean=np.array(column[4], dtype=np.float64),
        std=np.array(column[5], dtype=np.float64),
        log10=log10,
    )


def _linear_histograms(tensors: list[torch.Tensor], names: tuple[str, ...]) -> Histograms:
    parts: list[Row] = []
    for t in tensors:
        edges, counts = histogram_linear(t)
        parts.append((edges, counts, 0, t.numel(), *_moments(_finite(t))))
    return _histograms(names, parts, log10=False)


def _log_histograms(tensors: list[torch.Tensor], edges: np.ndarray, names: tuple[str, ...]) -> Histograms:
    parts: list[Row] = []
    for t in tensors:
        counts, zeros = histogram_log10(t, edges)
        parts.append((edges, counts, zeros, t.numel(), *_moments(_finite(t))))
    return _histograms(names, parts, log10=True)


class _StateRow:
    """The latest measured hidden state of one layer and its gradient (copies, kept until the step ends)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.act: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None


def _hidden_states(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Where the hidden states are: the project's nets name them; any other model, its activation modules."""
    states = getattr(model, "hidden_state_modules", None)
    if callable(states):
        return [(name, module) for name, module, _ in states()]
    return [(n, m) for n, m in model.named_modules() if activation_kind(m) not in (None, "identity")]


def _weight_name(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


class DistributionProbe:
    """Per-layer histograms and update:data, read around ``optimizer.step()`` every ``every`` steps.

    ``model``: any ``nn.Module`` (the project's nets: one row per hidden layer; others: one per activation
    module; recurrent cells keep their states inside and have only the weight part). ``optimizer``: a
    ``torch.optim.Optimizer`` whose ``step()`` the loop calls; its step hooks copy the weights before a measured
    step and compare after. ``every``: measure at the first step and every ``every``-th. ``history_size``:
    update:data points kept. ``first_step``: the steps the run made before (readings count on from there).
    ``on_reading(reading)`` is called on the training thread after each measured
    step (an exception there is logged and kept in :attr:`error`, never raised into the loop).

    Nothing here raises into the training loop: an error in a hook is logged once and kept in :attr:`error`.
    Call :meth:`remove` (or use ``with``) to take the hooks off.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Any,
        every: int = 20,
        history_size: int = SERIES_SIZE,
        on_reading: Callable[[DistributionReading], None] | None = None,
        first_step: int = 0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        optimizer_facts(optimizer)  # validates: names the field and what it must be
        if not hasattr(optimizer, "register_step_post_hook"):
            raise ValueError(f"optimizer must support step hooks (torch.optim), got {type(optimizer).__name__}")
        self.every = check_limit("every", every, limit="detail_every")
        history_size = check_limit("history_size", history_size)
        self.model = model
        self.optimizer = optimizer
        self.on_reading = on_reading
        self.steps = check_limit("first_step", first_step, limit="train_steps") if first_step else 0
        """Optimizer steps seen (counted from ``first_step``, the steps the run made before the probe)."""
        self._measured = False
        self.error: BaseException | None = None
        self.latest: DistributionReading | None = None
        self._lock = threading.Lock()
        self._series_steps: deque[int] = deque(maxlen=history_size)
        self._series: deque[np.ndarray] = deque(maxlen=history_size)
        self._rows = [_StateRow(name) for name, _ in _hidden_states(model)]
        self._calls: dict[str, int] = {}
        self._weights = [
            (_weight_name(name), p) for name, p in model.named_parameters() if p.dim() >= 2 and p.requires_grad
        ]
        self._before: list[torch.Tensor] | None = None
        self._handles: list[Any] = []
        for row, (_, module) in zip(self._rows, _hidden_states(model), strict=True):
            self._handles.append(module.register_forward_hook(self._state_hook(row)))
        self._handles.append(model.register_forward_pre_hook(self._forward_started))
        self._handles.append(optimizer.register_step_pre_hook(self._before_step))
        self._handles.append(optimizer.register_step_post_hook(self._after_step))

    @property
    def weight_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._weights)

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(row.name for row in self._rows)

    @property
    def due(self) -> bool:
        """The coming optimizer step is a measured one (the first, then every ``every``-th)."""
        return not self._measured or (self.steps + 1) % self.every == 0

    # ------------------------------------------------------------------ hooks (the training thread)

    def _guard(self, what: str, fn: Callable[[], T]) -> T | None:
        """``fn()``, or ``None`` when it raised: the error is logged once and kept in :attr:`error`."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the user's training must go on
            if self.error is None:
                logger.error("measuring the distributions (%s) failed", what, exc_info=exc)
            self.error = exc
            return None

    def _forward_started(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._calls = {}

    def _state_hook(self, row: _StateRow) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if not self.due or not torch.is_grad_enabled() or not isinstance(output, torch.Tensor):
                return
            self._guard("activations", lambda: self._measure_state(row, output))

        return hook

    def _measure_state(self, row: _StateRow, h: torch.Tensor) -> None:
        calls = self._calls[row.name] = self._calls.get(row.name, 0) + 1
        if calls > 1:  # a module called twice in one forward (weight sharing): the first call is its row
            return
        row.act = h.detach().clone()  # a copy: a later in-place op must not change what we measure
        row.grad = None
        if h.requires_grad:

            def grad_hook(grad: torch.Tensor) -> None:
                row.grad = grad.detach().clone()

            h.register_hook(grad_hook)

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.due:
            self._guard("weights", self._copy_weights)

    def _copy_weights(self) -> None:
        self._before = [p.detach().clone() for _, p in self._weights]

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        measured = self.due
        self.steps += 1
        self._calls = {}  # a loop that calls the layers itself never runs the model's pre-hook
        if measured:
            self._measured = True
            self._guard("reading", self._finish)
            for row in self._rows:
                row.act = row.grad = None
        self._before = None

    def _finish(self) -> None:
        """Each part on its own: one that fails is ``None`` (NaN ratios), the others still show."""
        before = self._before
        measured = None
        if before is not None and self._weights:
            measured = self._guard("updates", lambda: self._measure_updates(before))
        updates, ratios = measured if measured is not None else (None, np.full(len(self._weights), np.nan))
        acts = [(row.name, row.act) for row in self._rows if row.act is not None]
        grads = [(row.name, row.grad) for row in self._rows if row.grad is not None]
        activations = gradients = None
        if acts:
            activations = self._guard(
                "activations", lambda: _linear_histograms([t for _, t in acts], tuple(n for n, _ in acts))
            )
        if grads:
            gradients = self._guard(
                "gradients",
                lambda: _log_histograms([t for _, t in grads], GRADIENT_EDGES, tuple(n for n, _ in grads)),
            )
        reading = DistributionReading(
            step=self.steps, activations=activations, gradients=gradients, updates=updates, update_data=ratios
        )
        with self._lock:
            self.latest = reading
            self._series_steps.append(self.steps)
            self._series.append(ratios)
        if self.on_reading is not None:
            self.on_reading(reading)

    def _measure_updates(self, before: list[torch.Tensor]) -> tuple[Histograms, np.ndarray]:
        """log10 |dW| / std(W) per entry and log10 std(dW) / std(W) per weight matrix (W before the step)."""
        parts: list[Row] = []
        ratios = []
        with torch.no_grad():
            for (_, p), old in zip(self._weights, before, strict=True):
                delta = p.detach().double() - old.double()
                _, data_std = _moments(old.double().reshape(-1))
                _, step_std = _moments(delta.reshape(-1))
                scale = data_std if data_std > 0 else float("nan")
                counts, zeros = histogram_log10(delta / scale, UPDATE_EDGES)
                parts.append((UPDATE_EDGES, counts, zeros, delta.numel(), float(delta.mean()), step_std))
                ratio = step_std / scale
                ratios.append(math.log10(ratio) if ratio > 0 else float("nan"))
        return _histograms(self.weight_names, parts, log10=True), np.array(ratios, dtype=np.float64)

    # ------------------------------------------------------------------ reading (any thread)

    def series(self) -> UpdateDataSeries:
        """log10 update:data per weight matrix at every measured step kept (a copy)."""
        with self._lock:
            steps = np.array(self._series_steps, dtype=np.int64)
            values = np.array(self._series) if self._series else np.zeros((0, len(self._weights)))
        return UpdateDataSeries(self.weight_names, steps, values.reshape(len(steps), len(self._weights)))

    def remove(self) -> None:
        """Take every hook off the model and the optimizer."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> DistributionProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

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
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).float()


def histogram_linear(values: torch.Tensor, bins: int = ACTIVATION_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of the finite ``values`` in ``bins`` linear bins from their minimum to their maximum (as
    ``torch.histogram`` does by default; a constant ``c`` gets ``[c - 0.5, c + 0.5]``)."""
    flat = values.detach().reshape(-1).double()
    finite = flat[torch.isfinite(flat)]
    low = float(finite.min()) if finite.numel() else 0.0
    high = float(finite.max()) if finite.numel() else 0.0
    if not high > low:
        low, high = low - 0.5, high + 0.5
    counts = torch.histc(finite, bins=bins, min=low, max=high)
    return np.linspace(low, high, bins + 1), counts.double().cpu().numpy()


def histogram_log10(values: torch.Tensor, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """(counts over ``edges`` of log10 |v|, number of exact zeros); values beyond the edges go to the end bins,
    non-finite ones are left out."""
    flat = _flat(values).abs()
    zeros = int((flat == 0).sum())
    positive = flat[(flat > 0) & torch.isfinite(flat)]
    low, high = float(edges[0]), float(edges[-1])
    width = float(edges[1] - edges[0])
    logs = positive.double().log10().clamp(low + width / 2, high - width / 2)
    counts = torch.histc(logs, bins=len(edges) - 1, min=low, max=high)
    return counts.double().cpu().numpy(), zeros


def _moments(t: torch.Tensor) -> tuple[float, float]:
    flat = t.detach().reshape(-1).double()
    if flat.numel() < 2:
        return float(flat.mean()) if flat.numel() else float("nan"), float("nan")
    return float(flat.mean()), float(flat.std())


class _StateRow:
    """The latest measured histograms of one hidden state (overwritten at every measured forward pass)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.act: tuple[np.ndarray, np.ndarray, int, float, float] | None = None
        self.grad: tuple[np.ndarray, int, int, float, float] | None = None


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

    def _guard(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the user's training must go on
            if self.error is None:
                logger.error("measuring the distributions (%s) failed", what, exc_info=exc)
            self.error = exc

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
        with torch.no_grad():
            edges, counts = histogram_linear(h)
            row.act = (edges, counts, int(h.numel()), *_moments(h))
        row.grad = None
        if h.requires_grad:

            def grad_hook(grad: torch.Tensor) -> None:
                self._guard("gradients", lambda: self._measure_grad(row, grad))

            h.register_hook(grad_hook)

    def _measure_grad(self, row: _StateRow, grad: torch.Tensor) -> None:
        with torch.no_grad():
            counts, zeros = histogram_log10(grad, GRADIENT_EDGES)
            row.grad = (counts, zeros, int(grad.numel()), *_moments(grad))

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
            self._guard("updates", self._finish)
            for row in self._rows:
                row.act = row.grad = None
        self._before = None

    def _finish(self) -> None:
        before = self._before
        updates, ratios = None, np.full(len(self._weights), np.nan)
        if before is not None and self._weights:
            updates, ratios = self._measure_updates(before)
        reading = DistributionReading(
            step=self.steps,
            activations=self._state_histograms("act"),
            gradients=self._state_histograms("grad"),
            updates=updates,
            update_data=ratios,
        )
        with self._lock:
            self.latest = reading
            self._series_steps.append(self.steps)
            self._series.append(ratios)
        if self.on_reading is not None:
            self.on_reading(reading)

    def _measure_updates(self, before: list[torch.Tensor]) -> tuple[Histograms, np.ndarray]:
        edges = np.broadcast_to(UPDATE_EDGES, (len(before), len(UPDATE_EDGES)))
        counts, zeros, total, mean, std, ratios = [], [], [], [], [], []
        with torch.no_grad():
            for (_, p), old in zip(self._weights, before, strict=True):
                delta = p.detach().double() - old.double()
                scale = float(old.double().std()) if old.numel() > 1 else float("nan")
                step_std = float(delta.std()) if delta.numel() > 1 else float("nan")
                relative = delta / scale if scale > 0 else delta * float("nan")
                c, z = histogram_log10(relative, UPDATE_EDGES)
                counts.append(c)
                zeros.append(z)
                total.append(delta.numel())
                mean.append(float(delta.mean()))
                std.append(step_std)
                ratio = step_std / scale if scale > 0 else float("nan")
                ratios.append(np.log10(ratio) if ratio > 0 else float("nan"))
        histograms = Histograms(
            names=self.weight_names,
            edges=np.array(edges),
            counts=np.array(counts),
            zeros=np.array(zeros, dtype=np.float64),
            total=np.array(total, dtype=np.float64),
            mean=np.array(mean),
            std=np.array(std),
            log10=True,
        )
        return histograms, np.array(ratios, dtype=np.float64)

    def _state_histograms(self, part: str) -> Histograms | None:
        rows = [row for row in self._rows if getattr(row, part) is not None]
        if not rows:
            return None
        if part == "act":
            acts = [row.act for row in rows if row.act is not None]
            return Histograms(
                names=tuple(row.name for row in rows),
                edges=np.array([a[0] for a in acts]),
                counts=np.array([a[1] for a in acts]),
                zeros=np.zeros(len(acts)),
                total=np.array([a[2] for a in acts], dtype=np.float64),
                mean=np.array([a[3] for a in acts]),
                std=np.array([a[4] for a in acts]),
                log10=False,
            )
        grads = [row.grad for row in rows if row.grad is not None]
        return Histograms(
            names=tuple(row.name for row in rows),
            edges=np.array(np.broadcast_to(GRADIENT_EDGES, (len(grads), len(GRADIENT_EDGES)))),
            counts=np.array([g[0] for g in grads]),
            zeros=np.array([g[1] for g in grads], dtype=np.float64),
            total=np.array([g[2] for g in grads], dtype=np.float64),
            mean=np.array([g[3] for g in grads]),
            std=np.array([g[4] for g in grads]),
            log10=True,
        )

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

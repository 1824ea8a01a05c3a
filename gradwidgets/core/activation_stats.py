"""Forward statistics per layer (what the activations do), beside the backward ones (what the gradients do).

Why a second probe: a gradient ratio says *that* the early layers get little signal, not *why*. The forward
pass often says why: the batch spread of the hidden states collapsing layer after layer (the head then sees a
constant), units saturated in sigmoid's or tanh's flat tails, ReLU units that are off for every input (dead),
or hidden states that double in variance at every residual block. And the gradient with respect to the hidden
states, dL/dh, is the quantity the chain rule actually multiplies; a parameter gradient is dL/dh times the
layer's input, so the two can disagree (a bias or a large input can keep a weight gradient up while dL/dh
vanishes).

Forward hooks record small reductions (no activation tensor is kept) on every forward pass; hooks on the hidden
state tensors record ``|dL/dh|`` during ``backward()``. Works on the project's own nets (one row per hidden
layer, from ``model.hidden_state_modules()``) and on any model (one row per call of an activation module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ActivationReading", "ActivationStats", "activation_kind"]

SATURATING = ("sigmoid", "tanh")
RECTIFIED = ("relu",)
_TORCH_KINDS = {
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.ELU: "elu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Identity: "identity",
}
PreHook = Callable[[nn.Module, tuple[Any, ...]], None]
"""A forward pre-hook as ``register_forward_pre_hook`` takes it."""
Hook = Callable[[nn.Module, tuple[Any, ...], torch.Tensor], None]
"""A forward hook as ``register_forward_hook`` takes it."""


def activation_kind(module: nn.Module) -> str | None:
    """``"sigmoid"``, ``"relu"``, ... for an activation module (torch's or the project's), else ``None``."""
    name = getattr(module, "name", None)
    if type(module).__name__ == "_Elementwise" and isinstance(name, str):
        return name
    for cls, kind in _TORCH_KINDS.items():
        if type(module) is cls:
            return kind
    return None


@dataclass(frozen=True)
class ActivationReading:
    """One forward (and optionally backward) pass, a row per hidden layer, input side first.

    ``mean``: mean of the hidden state over batch and units. ``std``: the *batch spread*, the standard deviation
    of each unit across the examples of the batch, averaged over units (0 means every example looks the same to
    the layers above). ``rms``: root mean square of the hidden state (its size). ``saturated``: fraction of the
    activation's inputs with ``|z| > saturation_z`` (sigmoid/tanh only, else NaN). ``dead``: fraction of units
    that output exactly 0 for every example of the batch (ReLU only, else NaN). ``slope``: mean f'(z) of the
    activation over the batch (NaN without an activation module). ``state_grad_norm``: ``|dL/dh|`` over the
    batch (NaN until a backward pass has run through that state). ``in_stack``: rows of the repeated stack the
    gradient probe's ratio compares (the project's MLP: its hidden blocks, not the input layer; any model: all).
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    rms: np.ndarray
    saturated: np.ndarray
    dead: np.ndarray
    slope: np.ndarray
    state_grad_norm: np.ndarray
    saturation_z: float
    in_stack: np.ndarray


    def __len__(self) -> int:
        return len(self.names)

    def state_grad_ratio(self) -> float:
        """``|dL/dh|`` of the first row of the stack divided by the last one's (NaN if either is missing or 0):
        the state-gradient twin of the probe's first/last ratio, over the same layers."""
        g = self.state_grad_norm[self.in_stack]
        if len(g) < 2 or not np.isfinite(g[[0, -1]]).all() or g[-1] == 0:
            return float("nan")
        return float(g[0] / g[-1])


class _Row:
    """Running reductions for one hidden layer (overwritten at every forward pass)."""

    def __init__(self, name: str, kind: str | None) -> None:
        self.name, self.kind = name, kind or ""
        self.clear()

    def clear(self) -> None:
        nan = float("nan")
        self.mean = self.std = self.rms = self.saturated = self.dead = self.slope = self.grad = nan


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """(batch, ..., features) -> (examples, features) in float64, so reductions do not lose tiny spreads."""
    t = t.detach().double()
    return t.reshape(-1, t.shape[-1]) if t.dim() >= 2 else t.reshape(-1, 1)


class ActivationStats:
    """Hooks that measure each hidden layer's forward statistics and ``|dL/dh|``.

    ``model``: one of the project's nets (rows are its hidden layers; the MLP's ``input`` layer first) or any
    ``nn.Module`` (rows are the calls of its activation modules, in call order; a module called twice gives two
    rows, ``name`` and ``name#2``). ``saturation_z``: ``|z|`` above which a sigmoid/tanh input counts as
    saturated (at 2, sigmoid's slope is 0.105, 42% of its peak; tanh's 0.071). ``state_grads=False`` skips the
    backward hooks. Use as a context manager, or call :meth:`remove` when done.
    """

    def __init__(self, model: nn.Module, saturation_z: float = 2.0, state_grads: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(saturation_z, bool) or not isinstance(saturation_z, (int, float)) or not saturation_z > 0:
            raise ValueError(f"saturation_z must be a positive number, got {saturation_z!r}")
        self.model = model
        self.saturation_z = float(saturation_z)
        self.state_grads = bool(state_grads)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._rows: list[_Row] = []
        self._stack: set[str] = set()
        self._by_call: dict[str, int] = {}
        states = getattr(model, "hidden_state_modules", None)
        self._own = callable(states)
        if callable(states):
            blocks = getattr(model, "layer_blocks", None) or {}
            for name, state_module, act_module in states():
                if not blocks or any(k.startswith(name + ".") and b >= 0 for k, b in blocks.items()):
                    self._stack.add(name)
                row = _Row(name, activation_kind(act_module) if act_module is not None else None)
                self._rows.append(row)
                if act_module is not None:
                    self._handles.append(act_module.register_forward_hook(self._activation_hook(row)))
                self._handles.append(state_module.register_forward_hook(self._state_hook(row)))
        else:
            found = [(n, m) for n, m in model.named_modules() if activation_kind(m) not in (None, "identity")]
            if not found:
                raise ValueError("model has no activation module to watch (nn.ReLU, nn.Sigmoid, nn.Tanh, ...)")
            for name, module in found:
                self._handles.append(module.register_forward_pre_hook(self._new_call(name)))
                self._handles.append(module.register_forward_hook(self._any_hook(name, activation_kind(module))))
        self.forwards = 0
        self._handles.append(model.register_forward_pre_hook(self._start))

    # -- hooks ------------------------------------------------------------------------------------------------

    def _start(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.forwards += 1
        if not self._own:
            self._rows = []
            self._by_call = {}
        for row in self._rows:
            row.clear()

    def _new_call(self, name: str) -> PreHook:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            self._by_call[name] = self._by_call.get(name, 0) + 1

        return hook

    def _any_hook(self, name: str, kind: str | None) -> Hook:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            calls = self._by_call.get(name, 1)
            row = _Row(name if calls == 1 else f"{name}#{calls}", kind)
            self._rows.append(row)
            if args and isinstance(args[0], torch.Tensor):
                self._measure_activation(row, module, args[0], output)
            self._measure_state(row, output)

        return hook

    def _activation_hook(self, row: _Row) -> Hook:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            if args and isinstance(args[0], torch.Tensor):
                self._measure_activation(row, module, args[0], output)

        return hook

    def _state_hook(self, row: _Row) -> Hook:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            self._measure_state(row, output)

        return hook

    # -- measurements -----------------------------------------------------------------------------------------

    def _measure_activation(self, row: _Row, module: nn.Module, z: torch.Tensor, a: torch.Tensor) -> None:
        with torch.no_grad():
            zs, out = _as_rows(z), _as_rows(a)
            if row.kind in SATURATING:
                row.saturated = float((zs.abs() > self.saturation_z).double().mean())
            if row.kind in RECTIFIED:
                row.dead = float((out == 0).all(dim=0).double().mean())
        with torch.enable_grad():
            probe = z.detach().clone().requires_grad_(True)
            (slope,) = torch.autograd.grad(module.forward(probe).sum(), probe)  # .forward: no hooks
        row.slope = float(slope.double().mean())

    def _measure_state(self, row: _Row, h: torch.Tensor) -> None:
        if not isinstance(h, torch.Tensor):
            return
        with torch.no_grad():
            rows = _as_rows(h)
            row.mean = float(rows.mean())
            row.std = float(rows.std(dim=0, unbiased=False).mean()) if len(rows) > 1 else float("nan")
            row.rms = float(rows.pow(2).mean().sqrt())
        if self.state_grads and h.requires_grad:

            def grad_hook(grad: torch.Tensor) -> None:
                row.grad = float(grad.detach().double().norm())

            h.register_hook(grad_hook)

    # -- reading ----------------------------------------------------------------------------------------------

    def read(self) -> ActivationReading:
        """The statistics of the latest forward pass (and of its backward pass, if it has run)."""
        if self.forwards == 0:
            raise RuntimeError("no forward pass seen yet: run the model, then read()")
        rows = self._rows

        def column(field: str) -> np.ndarray:
            return np.array([getattr(r, field) for r in rows], dtype=np.float64)

        return ActivationReading(
            names=tuple(r.name for r in rows),
            kinds=tuple(r.kind for r in rows),
            mean=column("mean"),
            std=column("std"),
            rms=column("rms"),
            saturated=column("saturated"),
            dead=column("dead"),
            slope=column("slope"),
            state_grad_norm=column("grad"),
            saturation_z=self.saturation_z,
            in_stack=np.array([not self._own or r.name in self._stack for r in rows], dtype=bool),
        )

    def remove(self) -> None:
        """Take every hook off the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> ActivationStats:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

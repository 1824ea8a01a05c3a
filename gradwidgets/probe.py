"""Per-layer gradient statistics for any ``nn.Module``, read straight from ``p.grad`` after ``backward()``.

Why not backward hooks: ``register_full_backward_hook`` breaks on in-place ops (pytorch#61519) and measures
the gradient w.r.t. a module's *outputs*, not its parameters. Reading ``.grad`` is exact, works for every
module (``nn.LSTM``, ``nn.MultiheadAttention`` and conv layers own their weights directly) and costs a few
batched ``torch._foreach_norm`` calls plus one transfer to numpy per read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["GradientProbe", "GradientStats", "layer_layout"]

_NUMERIC = re.compile(r"^\d+$")


@dataclass(frozen=True)
class GradientStats:
    """One reading of the probe: a row per module that directly owns parameters, input side first.

    Arrays are float64 numpy arrays of length ``len(names)``. ``update_ratio`` is ``|w_now - w_prev| / |w_now|``
    where ``w_prev`` are the weights at the previous read (one optimizer step when read once per step; NaN at
    the first read). ``drift`` is ``|w_now - w_0| / |w_0|`` against the weights when the probe was made (or
    last ``rebase()``d): how far each layer has moved since training began.
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    roles: tuple[str, ...]
    blocks: np.ndarray
    grad_norm: np.ndarray
    grad_mean_abs: np.ndarray
    grad_max_abs: np.ndarray
    weight_norm: np.ndarray
    update_ratio: np.ndarray
    drift: np.ndarray
    frozen: np.ndarray
    has_grad: np.ndarray
    param_count: np.ndarray
    step: int
    loss: float = float("nan")
    time_grad_norm: np.ndarray | None = None
    time_state: str = ""

    def __len__(self) -> int:
        return len(self.names)

    @property
    def trainable(self) -> np.ndarray:
        return ~self.frozen

    def block_indices(self) -> np.ndarray:
        """Sorted indices of the depth levels (blocks) in the stack."""
        return np.unique(self.blocks[self.blocks >= 0])

    def block_grad_norm(self, include_norms: bool = False) -> np.ndarray:
        """L2 gradient norm of each block (over its non-norm layers), in :meth:`block_indices` order."""
        keep = np.ones(len(self), bool) if include_norms else np.array([r != "norm" for r in self.roles])
        out = []
        for block in self.block_indices():
            members = (self.blocks == block) & keep
            if not members.any():
                members = self.blocks == block
            out.append(float(np.sqrt(np.sum(self.grad_norm[members] ** 2))))
        return np.asarray(out, dtype=np.float64)

    def block_frozen(self) -> np.ndarray:
        """True for blocks whose every layer is frozen."""
        return np.array([bool(self.frozen[self.blocks == b].all()) for b in self.block_indices()])

    def time_ratio(self) -> float | None:
        """Gradient reaching time step 0 divided by the last step's (recurrent nets only)."""
        if self.time_grad_norm is None or len(self.time_grad_norm) < 2:
            return None
        last = float(self.time_grad_norm[-1])
        return float(self.time_grad_norm[0]) / last if last > 0 else float("nan")


def layer_layout(model: nn.Module) -> tuple[list[str], list[nn.Module], list[str], list[int]]:
    """Names, modules, roles and block indices of every module that directly owns parameters.

    Models built by :func:`gradwidgets.build_model` declare roles and blocks; for any other model, norm layers
    (class name containing ``Norm``) get role ``"norm"``, ``nn.Embedding`` ``"embedding"``, everything else
    ``"hidden"``, and a block is the name up to its first numeric part (``layers.3.linear1`` -> ``layers.3``),
    so the layers of one repeated block share a depth level.
    """
    declared_roles = getattr(model, "layer_roles", None) or {}
    declared_blocks = getattr(model, "layer_blocks", None) or {}
    names, modules, roles, blocks = [], [], [], []
    block_ids: dict[str, int] = {}
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        names.append(name)
        modules.append(module)
        if name in declared_roles:
            roles.append(declared_roles[name])
            blocks.append(int(declared_blocks.get(name, -1)))
            continue
        cls = type(module).__name__
        roles.append("norm" if "Norm" in cls else "embedding" if isinstance(module, nn.Embedding) else "hidden")
        parts = name.split(".") if name else [""]
        cut = next((i for i, p in enumerate(parts) if _NUMERIC.match(p)), len(parts) - 1)
        key = ".".join(parts[: cut + 1])
        blocks.append(block_ids.setdefault(key, len(block_ids)))
    return names, modules, roles, blocks


class GradientProbe:
    """Watches a model's parameter gradients.

    Call :meth:`read` after ``loss.backward()`` and before ``zero_grad()`` (before or after
    ``optimizer.step()``: the update ratio measures the change since the previous read either way).

    ``track_weights=False`` skips the weight snapshots behind ``update_ratio`` and ``drift`` (they cost two
    copies of the parameters); those fields are then NaN.
    """

    def __init__(self, model: nn.Module, track_weights: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.track_weights = bool(track_weights)
        names, modules, roles, blocks = layer_layout(model)
        if not names:
            raise ValueError("model has no parameters to watch")
        self.names = tuple(names)
        self.kinds = tuple(type(m).__name__ for m in modules)
        self.roles = tuple(roles)
        self.blocks = np.asarray(blocks, dtype=np.int64)
        self._params: list[torch.nn.Parameter] = []
        owner: list[int] = []
        for index, module in enumerate(modules):
            for p in module.parameters(recurse=False):
                self._params.append(p)
                owner.append(index)
        self._owner = torch.tensor(owner, dtype=torch.long)
        self._owner_np = np.asarray(owner)
        self.param_count = np.bincount(
            self._owner_np, weights=[p.numel() for p in self._params], minlength=len(names)
        ).astype(np.float64)
        self.reads = 0
        self._previous: list[torch.Tensor] = []
        self._initial: list[torch.Tensor] = []
        self._initial_norms = np.full(len(names), np.nan)
        self._have_previous = False
        if self.track_weights:
            self.rebase()

    def rebase(self) -> None:
        """Take the current weights as the starting point for ``drift`` (and the next ``update_ratio``)."""
        with torch.no_grad():
            self._initial = [p.detach().clone() for p in self._params]
            self._previous = [p.detach().clone() for p in self._params]
            squares = torch.stack(torch._foreach_norm(self._initial, 2)).double() ** 2
        layer = torch.zeros(len(self.names), dtype=torch.float64).index_add_(0, self._owner, squares)
        norms = np.sqrt(layer.numpy())
        self._initial_norms = np.where(norms > 0, norms, np.nan)
        self._have_previous = False

    def frozen_mask(self) -> np.ndarray:
        frozen_params = np.array([not p.requires_grad for p in self._params])
        counts = np.bincount(self._owner_np, minlength=len(self.names))
        frozen_counts = np.bincount(self._owner_np, weights=frozen_params, minlength=len(self.names))
        return frozen_counts == counts

    @torch.no_grad()
    def read(self, loss: float | torch.Tensor | None = None, step: int | None = None) -> GradientStats:
        """Measure every layer now. ``loss`` and ``step`` (optional) are stored on the stats; ``step``
        defaults to the number of reads so far."""
        params = self._params
        n_layers = len(self.names)
        with_grad = [i for i, p in enumerate(params) if p.grad is not None]
        # rows per parameter: |g|^2, sum|g|, max|g|, has grad, |w|^2, |w - w_prev|^2, |w - w_0|^2
        per_param = torch.zeros(7, len(params), dtype=torch.float64)
        if with_grad:
            grads = [params[i].grad for i in with_grad]
            index = torch.tensor(with_grad, dtype=torch.long)
            per_param[0, index] = torch.stack(torch._foreach_norm(grads, 2)).double() ** 2
            per_param[1, index] = torch.stack(torch._foreach_norm(grads, 1)).double()
            per_param[2, index] = torch.stack(torch._foreach_norm(grads, float("inf"))).double()
            per_param[3, index] = 1.0
        weights = [p.detach() for p in params]
        per_param[4] = torch.stack(torch._foreach_norm(weights, 2)).double() ** 2
        if self.track_weights:
            step_delta = torch._foreach_sub(weights, self._previous)
            start_delta = torch._foreach_sub(weights, self._initial)
            per_param[5] = torch.stack(torch._foreach_norm(step_delta, 2)).double() ** 2
            per_param[6] = torch.stack(torch._foreach_norm(start_delta, 2)).double() ** 2
            torch._foreach_copy_(self._previous, weights)
        per_layer = torch.zeros(8, n_layers, dtype=torch.float64)
        per_layer[:7].index_add_(1, self._owner, per_param)
        per_layer[2].zero_().scatter_reduce_(0, self._owner, per_param[2], reduce="amax")
        if isinstance(loss, torch.Tensor):
            per_layer[7, 0] = loss.detach().double().reshape(())
        table = per_layer.numpy()
        if isinstance(loss, torch.Tensor):
            loss_value = float(table[7, 0])
        else:
            loss_value = float("nan") if loss is None else float(loss)

        weight_norm = np.sqrt(table[4])
        if self.track_weights:
            nonzero = np.where(weight_norm > 0, weight_norm, np.nan)
            if self._have_previous:
                update_ratio = np.sqrt(table[5]) / nonzero
            else:
                update_ratio = np.full(n_layers, np.nan)
            drift = np.sqrt(table[6]) / self._initial_norms
            self._have_previous = True
        else:
            update_ratio = np.full(n_layers, np.nan)
            drift = np.full(n_layers, np.nan)
        self.reads += 1
        time_grad_norm, time_state = self._time_gradients()
        return GradientStats(
            names=self.names,
            kinds=self.kinds,
            roles=self.roles,
            blocks=self.blocks,
            grad_norm=np.sqrt(table[0]),
            grad_mean_abs=table[1] / np.maximum(self.param_count, 1),
            grad_max_abs=table[2].copy(),
            weight_norm=weight_norm,
            update_ratio=update_ratio,
            drift=drift,
            frozen=self.frozen_mask(),
            has_grad=table[3] > 0,
            param_count=self.param_count,
            step=self.reads if step is None else int(step),
            loss=loss_value,
            time_grad_norm=time_grad_norm,
            time_state=time_state,
        )

    def _time_gradients(self) -> tuple[np.ndarray | None, str]:
        reader = getattr(self.model, "state_grad_norms", None)
        if reader is None:
            return None, ""
        values = reader()
        if values is None:
            return None, ""
        return np.asarray(values, dtype=np.float64), getattr(self.model, "state_name", "state")

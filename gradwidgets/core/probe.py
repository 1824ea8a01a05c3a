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

    Arrays are float64 numpy arrays of length ``len(names)``. ``grad_norm`` is measured at every read;
    ``grad_mean_abs``, ``grad_max_abs``, ``weight_norm``, ``update_ratio`` and ``drift`` at step ``detail_step``
    (see ``GradientProbe(detail_every=...)``). ``update_ratio`` is ``|w_now - w_prev| / |w_now|`` with ``w_prev``
    the weights one read earlier (one optimizer step when read once per step; NaN at the first read).
    ``drift`` is ``|w_now - w_0| / |w_0|`` against the weights when the probe was made (or last
    ``rebase()``d): how far each layer has moved since training began.
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
    detail_step: int = 0

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

    Every read measures each layer's gradient L2 norm: one ``torch._foreach_norm`` pass over the gradients and
    one transfer to numpy. The rest (mean and max |g|, weight norms, update ratio, drift) costs several more
    passes over gradients and weights, so it is measured every ``detail_every`` reads (20 by default, and on the first);
    between those reads the stats carry the latest values, and ``GradientStats.detail_step`` says which step
    they belong to. The update ratio stays exact for that step: the weights are copied on the read just before.
    ``detail_every=1`` measures everything every time. ``track_weights=False`` skips the weight copies (the
    motion fields are then NaN).
    """

    def __init__(self, model: nn.Module, track_weights: bool = True, detail_every: int = 20) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(detail_every, bool) or not isinstance(detail_every, int) or not 1 <= detail_every <= 100_000:
            raise ValueError(f"detail_every must be an integer in [1, 100000], got {detail_every!r}")
        self.model = model
        self.track_weights = bool(track_weights)
        self.detail_every = detail_every
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
        self._zero = torch.zeros(1)
        self._time_reader = getattr(model, "state_grad_norms", None)
        n_layers = len(names)
        self.param_count = np.bincount(
            self._owner_np, weights=[p.numel() for p in self._params], minlength=n_layers
        ).astype(np.float64)
        self.reads = 0
        self._previous: list[torch.Tensor] = []
        self._initial: list[torch.Tensor] = []
        self._initial_norms = np.full(n_layers, np.nan)
        self._snapshot_read = -1
        nan = np.full(n_layers, np.nan)
        self._detail = {
            "grad_mean_abs": nan,
            "grad_max_abs": nan,
            "weight_norm": nan,
            "update_ratio": nan,
            "drift": nan,
        }
        self._detail_step = 0
        if self.track_weights:
            self.rebase()

    def rebase(self) -> None:
        """Take the current weights as the starting point for ``drift``."""
        with torch.no_grad():
            self._initial = [p.detach().clone() for p in self._params]
            self._previous = [p.detach().clone() for p in self._params]
            squares = torch.stack(torch._foreach_norm(self._initial, 2)).double() ** 2
        norms = np.sqrt(self._per_layer(squares))
        self._initial_norms = np.where(norms > 0, norms, np.nan)
        self._snapshot_read = -1

    def _per_layer(self, per_param: torch.Tensor, reduce: str = "sum") -> np.ndarray:
        out = torch.zeros(len(self.names), dtype=torch.float64)
        if reduce == "sum":
            out.index_add_(0, self._owner, per_param.double())
        else:
            out.scatter_reduce_(0, self._owner, per_param.double(), reduce="amax")
        return out.numpy()

    def frozen_mask(self) -> np.ndarray:
        """Layers whose every parameter has ``requires_grad=False`` (recomputed only when a flag changes)."""
        flags = tuple(p.requires_grad for p in self._params)
        if flags != getattr(self, "_frozen_flags", None):
            frozen_params = np.logical_not(flags)
            counts = np.bincount(self._owner_np, minlength=len(self.names))
            frozen_counts = np.bincount(self._owner_np, weights=frozen_params, minlength=len(self.names))
            self._frozen = frozen_counts == counts
            self._frozen_flags = flags
        return self._frozen

    @torch.no_grad()
    def read(
        self, loss: float | torch.Tensor | None = None, step: int | None = None, scaler: object = None
    ) -> GradientStats:
        """Measure every layer now. ``loss`` and ``step`` (optional) are stored on the stats; ``step``
        defaults to the number of reads so far. ``scaler`` (an enabled ``GradScaler`` whose gradients are not
        unscaled yet) divides the gradient fields by its loss scale."""
        enabled = scaler is not None and scaler.is_enabled()  # type: ignore[attr-defined]
        scale = float(scaler.get_scale()) if enabled else 1.0  # type: ignore[attr-defined]
        self.reads += 1
        step = self.reads if step is None else int(step)
        params = self._params
        grads = [p.grad for p in params]
        if any(g is None for g in grads):
            has_grad_param = np.array([g is not None for g in grads])
            has_grad = np.bincount(self._owner_np, weights=has_grad_param, minlength=len(self.names)) > 0
            grads = [g if g is not None else self._zero for g in grads]
        else:
            has_grad = np.ones(len(self.names), dtype=bool)
        squares = torch.stack(torch._foreach_norm(grads, 2)).double() ** 2
        loss_value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float("nan" if loss is None else loss)
        grad_norm = np.sqrt(self._per_layer(squares)) / scale

        due = self.reads == 1 or self.reads % self.detail_every == 0
        if due:
            self._measure_detail(grads, step)
            for key in ("grad_mean_abs", "grad_max_abs"):
                self._detail[key] = self._detail[key] / scale
        elif self.track_weights and (self.reads + 1) % self.detail_every == 0:
            torch._foreach_copy_(self._previous, [p.detach() for p in params])
            self._snapshot_read = self.reads
        time_grad_norm, time_state = self._time_gradients()
        detail = self._detail
        return GradientStats(
            names=self.names,
            kinds=self.kinds,
            roles=self.roles,
            blocks=self.blocks,
            grad_norm=grad_norm,
            grad_mean_abs=detail["grad_mean_abs"],
            grad_max_abs=detail["grad_max_abs"],
            weight_norm=detail["weight_norm"],
            update_ratio=detail["update_ratio"],
            drift=detail["drift"],
            frozen=self.frozen_mask(),
            has_grad=has_grad,
            param_count=self.param_count,
            step=step,
            loss=loss_value,
            time_grad_norm=time_grad_norm,
            time_state=time_state,
            detail_step=self._detail_step,
        )

    def _measure_detail(self, grads: list[torch.Tensor], step: int) -> None:
        absolute = torch._foreach_abs(grads)
        l1 = torch.stack([a.sum() for a in absolute])
        peak = torch.stack(torch._foreach_max(absolute))
        weights = [p.detach() for p in self._params]
        weight_norm = np.sqrt(self._per_layer(torch.stack(torch._foreach_norm(weights, 2)).double() ** 2))
        nonzero = np.where(weight_norm > 0, weight_norm, np.nan)
        n_layers = len(self.names)
        update_ratio = drift = np.full(n_layers, np.nan)
        if self.track_weights:
            if self._snapshot_read == self.reads - 1:
                moved = torch.stack(torch._foreach_norm(torch._foreach_sub(weights, self._previous), 2))
                update_ratio = np.sqrt(self._per_layer(moved.double() ** 2)) / nonzero
            from_start = torch.stack(torch._foreach_norm(torch._foreach_sub(weights, self._initial), 2))
            drift = np.sqrt(self._per_layer(from_start.double() ** 2)) / self._initial_norms
            torch._foreach_copy_(self._previous, weights)
            self._snapshot_read = self.reads
        self._detail = {
            "grad_mean_abs": self._per_layer(l1) / np.maximum(self.param_count, 1),
            "grad_max_abs": self._per_layer(peak, reduce="amax"),
            "weight_norm": weight_norm,
            "update_ratio": update_ratio,
            "drift": drift,
        }
        self._detail_step = step

    def _time_gradients(self) -> tuple[np.ndarray | None, str]:
        reader = self._time_reader
        if reader is None:
            return None, ""
        values = reader()
        if values is None:
            return None, ""
        return np.asarray(values, dtype=np.float64), getattr(self.model, "state_name", "state")

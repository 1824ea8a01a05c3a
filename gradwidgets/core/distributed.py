"""torch.distributed, DDP, FSDP2 and ``torch.compile``: which rank writes, what the wrappers hide, sharded norms.

* **DDP** averages gradients across ranks during ``backward()``: after it, every rank holds the global gradient,
  so rank 0 reads its own ``p.grad`` and the numbers equal a single process on the whole global batch. The other
  ranks do nothing at all (no collective, no read).
* **FSDP2** (``torch.distributed.fsdp.fully_shard``) leaves each rank a shard of every gradient (a ``DTensor``).
  :class:`ShardedReader` sums squares per layer over the local shards and all-reduces that one vector, so the
  norms equal the unsharded model's; every rank must call it (it is a collective).
* **Wrappers** add name prefixes: DDP ``module.``, FSDP1 ``_fsdp_wrapped_module.``, ``torch.compile``
  ``_orig_mod.``, activation checkpointing ``_checkpoint_wrapped_module.``. :func:`unwrap` returns the module
  underneath and :func:`clean_name` strips them, so a run's layer names are the model's own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from .probe import GradientStats, layer_layout

__all__ = [
    "WRAPPER_SEGMENTS",
    "ShardedReader",
    "clean_name",
    "is_compiled",
    "is_sharded",
    "make_stats",
    "rank",
    "unwrap",
    "world_size",
]

WRAPPER_SEGMENTS = frozenset({"_fsdp_wrapped_module", "_orig_mod", "_checkpoint_wrapped_module"})
"""Name parts only wrappers add: dropped wherever they appear (``module`` only as the leading DDP prefix)."""


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's rank in the default process group (0 when torch.distributed is not initialized)."""
    return torch.distributed.get_rank() if _initialized() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if _initialized() else 1


def unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers.

    Reading gradients off the inner module adds no hook to the compiled graph: the probe only reads ``p.grad``.
    """
    parallel = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while True:
        if isinstance(model, parallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def is_compiled(model: nn.Module) -> bool:
    """True when ``torch.compile`` wraps the model at any level of its DDP/DataParallel/compile wrappers."""
    parallel = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            return True
        if not isinstance(model, parallel):
            return False
        model = model.module


def clean_name(name: str) -> str:
    """``module._orig_mod.blocks.0._fsdp_wrapped_module.attn`` -> ``blocks.0.attn``."""
    parts = name.split(".") if name else []
    while parts and parts[0] == "module":
        parts = parts[1:]
    return ".".join(p for p in parts if p not in WRAPPER_SEGMENTS)


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch or no distributed build
        return None
    return DTensor


def is_sharded(model: nn.Module) -> bool:
    """True when any parameter is a ``DTensor`` (FSDP2 ``fully_shard`` or tensor parallelism)."""
    dtensor = _dtensor_type()
    return dtensor is not None and any(isinstance(p, dtensor) for p in model.parameters())


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def make_stats(values: dict[str, Any], n_layers: int) -> GradientStats:
    """A ``GradientStats`` from the fields given; any other required field is NaN (or False for masks), so a
    reader that does not measure a field keeps working when the stats gain one."""
    filled = dict(values)
    for field in dataclasses.fields(GradientStats):
        no_default = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if field.name not in filled and no_default:
            filled[field.name] = np.zeros(n_layers, bool) if field.name in ("frozen", "has_grad") else np.full(
                n_layers, np.nan
            )
    return GradientStats(**filled)


class ShardedReader:
    """Per-layer gradient statistics of a sharded (FSDP2) model, equal to the unsharded model's.

    Each read: squared norms of the local shards, summed per layer, and one ``all_reduce`` of that vector
    (plus absolute sums, weight norms and one ``MAX`` reduce at the detail cadence), then one transfer to the
    CPU. Every rank must call :meth:`read` at the same steps. The weight-motion fields (update ratio, drift) are
    not measured on sharded models (NaN).
    """

    def __init__(self, model: nn.Module, detail_every: int = 20, group: Any = None) -> None:
        if isinstance(detail_every, bool) or not isinstance(detail_every, int) or not 1 <= detail_every <= 100_000:
            raise ValueError(f"detail_every must be an integer in [1, 100000], got {detail_every!r}")
        names, modules, roles, blocks = layer_layout(model)
        if not names:
            raise ValueError("model has no parameters to watch")
        self.model = model
        self.group = group
        self.detail_every = detail_every
        self.names = tuple(names)
        self.kinds = tuple(type(m).__name__ for m in modules)
        self.roles = tuple(roles)
        self.blocks = np.asarray(blocks, dtype=np.int64)
        seen: set[int] = set()
        self._params: list[nn.Parameter] = []
        owner = []
        for index, module in enumerate(modules):
            for p in module.parameters(recurse=False):
                if id(p) in seen:
                    continue  # a tied parameter counts once, for the first module that owns it
                seen.add(id(p))
                self._params.append(p)
                owner.append(index)
        self._owner_np = np.asarray(owner)
        self.param_count = np.bincount(
            self._owner_np, weights=[p.numel() for p in self._params], minlength=len(names)
        ).astype(np.float64)
        device = self._params[0].device
        self._owner = torch.tensor(owner, dtype=torch.long, device=device)
        self._zero = torch.zeros(1, device=device)
        self.reads = 0
        self._detail: dict[str, np.ndarray] = {}
        self._detail_step = 0

    def _per_layer(self, per_param: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros(len(self.names), dtype=torch.float64, device=self._owner.device)
        return out.index_add_(0, self._owner, torch.stack(per_param).double().reshape(-1))

    @torch.no_grad()
    def read(self, loss: float | None = None, step: int | None = None, scale: float = 1.0) -> GradientStats:
        """All ranks, same steps. ``scale`` divides the gradient fields (a GradScaler's loss scale)."""
        self.reads += 1
        step = self.reads if step is None else int(step)
        grads = [_local(p.grad) if p.grad is not None else self._zero for p in self._params]
        present = [torch.ones((), device=self._zero.device) * (p.grad is not None) for p in self._params]
        rows = [
            self._per_layer([n**2 for n in torch._foreach_norm(grads, 2)]),
            self._per_layer(present),
        ]
        due = self.reads == 1 or self.reads % self.detail_every == 0
        if due:
            rows.append(self._per_layer([g.abs().sum() for g in grads]))
            weights = [_local(p.detach()) for p in self._params]
            rows.append(self._per_layer([n**2 for n in torch._foreach_norm(weights, 2)]))
        summed = torch.stack(rows)
        peak = None
        if due:
            per_param_max = [g.abs().max().double() if g.numel() else self._zero[0].double() for g in grads]
            peak = torch.zeros(len(self.names), dtype=torch.float64, device=self._owner.device)
            peak.scatter_reduce_(0, self._owner, torch.stack(per_param_max), reduce="amax")
        if _initialized():
            torch.distributed.all_reduce(summed, group=self.group)
            if peak is not None:
                torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX, group=self.group)
        both = torch.cat([summed.reshape(-1), peak if peak is not None else summed.new_zeros(0)]).cpu().numpy()
        n = len(self.names)
        table = both[: summed.numel()].reshape(len(rows), n)
        grad_norm = np.sqrt(table[0]) / scale
        if due:
            self._detail = {
                "grad_mean_abs": table[2] / np.maximum(self.param_count, 1) / scale,
                "grad_max_abs": both[summed.numel() :] / scale,
                "weight_norm": np.sqrt(table[3]),
            }
            self._detail_step = step
        frozen_counts = np.bincount(
            self._owner_np, weights=[not p.requires_grad for p in self._params], minlength=n
        )
        values: dict[str, Any] = {
            "names": self.names,
            "kinds": self.kinds,
            "roles": self.roles,
            "blocks": self.blocks,
            "param_count": self.param_count,
            "grad_norm": grad_norm,
            **self._detail,
            "frozen": frozen_counts == np.bincount(self._owner_np, minlength=n),
            "has_grad": table[1] > 0,
            "step": step,
            "loss": float("nan") if loss is None else float(loss),
            "detail_step": self._detail_step,
        }
        return make_stats(values, n)

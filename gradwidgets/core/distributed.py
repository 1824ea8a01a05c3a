"""torch.distributed, DDP, FSDP2 and ``torch.compile``: which rank writes, what the wrappers hide, sharded norms.

* **DDP** averages gradients across ranks during ``backward()``: after it, every rank holds the global gradient,
  so rank 0 reads its own ``p.grad`` and the numbers equal a single process on the whole global batch. The other
  ranks do nothing at all (no collective, no read).
* **FSDP2** (``torch.distributed.fsdp.fully_shard``) leaves each rank a shard of every gradient (a ``DTensor``).
  :class:`ShardedReader` sums squares per layer over the local shards and all-reduces that one vector, so the
  norms equal the unsharded model's; every rank must call it (it is a collective). Its rows are the probe's
  (:class:`~gradwidgets.core.layout.RowMap`): data-flow order, a tied parameter counted once with its aliases,
  a row per layer and direction of a stacked ``nn.LSTM``. A piece held by several ranks (HSDP's replicas, a
  parameter left unsharded) counts once.
* **Wrappers** add name prefixes: DDP ``module.``, FSDP1 ``_fsdp_wrapped_module.``, ``torch.compile``
  ``_orig_mod.``, activation checkpointing ``_checkpoint_wrapped_module.``. :func:`unwrap` returns the module
  underneath and :func:`clean_name` strips them, so a run's layer names are the model's own.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..validation import check_limit
from .layout import FlowOrder, ReadsRows, RowMap, flow_from_names, flow_to_names
from .reductions import GradWrites, loss_scale, loss_value, reduce_norms, skipped_step
from .stats import GradientStats, make_stats

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
        elif isinstance(inner := getattr(model, "_orig_mod", None), nn.Module):
            model = inner
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
    """This rank's piece of a ``DTensor`` (the tensor itself otherwise)."""
    local = getattr(tensor, "_local_tensor", None)
    if isinstance(local, torch.Tensor):
        return local
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _replicas(tensor: torch.Tensor, group_size: int) -> float:
    """How many ranks of the reducing group hold this same local piece: the mesh dimensions a ``DTensor`` is
    replicated over (HSDP's replicate dimension), times the ranks outside its mesh; a plain tensor (a parameter
    no ``fully_shard`` covers) is taken as held whole by every rank."""
    mesh = getattr(tensor, "device_mesh", None)
    placements = getattr(tensor, "placements", None)
    if mesh is None or placements is None:
        return float(group_size)
    copies = 1
    for dim, placement in enumerate(placements):
        if placement.is_replicate():
            copies *= mesh.size(dim)
    return float(copies * max(group_size / mesh.size(), 1.0))


def _vector(values: list[torch.Tensor], index: list[int], n: int, like: torch.Tensor) -> torch.Tensor:
    """0-d results for the parameters ``index`` as a float64 vector of length ``n`` (zero elsewhere)."""
    if not values:
        return like.new_zeros(n)
    if len({v.dtype for v in values}) > 1:
        values = [v.double() for v in values]
    stacked = torch.stack(values).double()
    if len(index) == n:
        return stacked
    out = like.new_zeros(n)
    out[torch.as_tensor(index, dtype=torch.long, device=like.device)] = stacked
    return out


class ShardedReader(ReadsRows):
    """Per-layer gradient statistics of a sharded (FSDP2) model, equal to the single-process probe's on the
    unsharded model: the same rows (:class:`~gradwidgets.core.layout.RowMap`, re-ordered by the first forward
    pass as the probe's are, in rank 0's order on every rank), aliases, norms, masks and AMP fields.

    Each read: per-parameter squared norms of the local shards, summed per layer, and one ``all_reduce`` of that
    table (with the written-this-step and had-a-gradient counts; absolute sums and weight norms plus one ``MAX``
    reduce at the detail cadence), then one transfer to the CPU. Every rank must call :meth:`read` at the same
    steps.

    Not measured on sharded models: the weight-motion fields (update ratio, drift: NaN) and the recurrent nets'
    per-time-step gradients. Not watched: parameters replaced after ``fully_shard`` (FSDP2 would not manage them
    either); the rows keep the parameters the model had when the reader was made.
    """

    def __init__(self, model: nn.Module, detail_every: int = 20, group: Any = None, record_flow: bool = True) -> None:
        detail_every = check_limit("detail_every", detail_every)
        self.model = model
        self.group = group
        self.detail_every = detail_every
        self.reads = 0
        self._group_size = torch.distributed.get_world_size(group) if _initialized() else 1
        row_map = RowMap.of(model)
        if not row_map.rows:
            raise ValueError("model has no parameters to watch")
        self._layout(row_map)
        self._flow = FlowOrder(model, record_flow)
        self._flow_waiting: dict[int, int] | None = None

    def _layout(self, row_map: RowMap, carried: dict[int, tuple[Any, ...]] | None = None) -> None:
        self._map = row_map
        self.param_count = row_map.param_count()
        self._writes = GradWrites(self._params, carried)
        device = self._params[0].device
        self._owner = torch.as_tensor(row_map.owner, dtype=torch.long, device=device)
        self._replicas = torch.tensor(
            [_replicas(p, self._group_size) for p in self._params], dtype=torch.float64, device=device
        )
        self._detail: dict[str, np.ndarray] = {}
        self._detail_step = 0

    def _check_layout(self) -> None:
        """Re-order the rows by the first forward pass, once, at the first read after it (on every rank)."""
        flow = self._flow.take() or self._flow_waiting
        if flow is None:
            return
        self._flow_waiting = None
        if _initialized() and self._group_size > 1:
            # Every rank takes rank 0's order: a rank whose batch skipped a branch must not sum other rows.
            names = [flow_to_names(self.model, flow)]
            source = torch.distributed.get_global_rank(self.group, 0) if self.group is not None else 0
            torch.distributed.broadcast_object_list(names, src=source, group=self.group)
            flow = flow_from_names(self.model, names[0])
        row_map = RowMap.of(self.model, flow)
        if {id(p) for p in row_map.params} != {id(p) for p in self._params}:
            # The modules hold other tensors than the sharded parameters read so far (unsharded for the moment,
            # e.g. after ``set_reshard_after_backward(False)``): keep the rows, try again at the next read.
            self._flow_waiting = flow
            return
        self._layout(row_map, carried=self._writes.carry(self._params))

    def _per_row(self, per_param: torch.Tensor) -> torch.Tensor:
        """A ``(k, n_params)`` table summed per row: ``(k, n_rows)``."""
        out = per_param.new_zeros(per_param.shape[0], len(self.names))
        return out.index_add_(1, self._owner, per_param)

    @torch.no_grad()
    def read(
        self, loss: float | torch.Tensor | None = None, step: int | None = None, scaler: Any = None
    ) -> GradientStats:
        """All ranks, same steps. ``scaler``: the ``torch.amp.GradScaler`` of the loop (the gradients are divided
        by its scale unless ``unscale_`` already did, as in :meth:`GradientProbe.read`)."""
        scale = loss_scale(scaler)
        self.reads += 1
        step = self.reads if step is None else int(step)
        self._check_layout()
        params = self._params
        n_params, n = len(params), len(self.names)
        raws = [p.grad for p in params]
        grads = [None if g is None else _local(g) for g in raws]
        present = [i for i, g in enumerate(grads) if g is not None]
        present_grads: list[torch.Tensor] = [grads[i] for i in present]  # type: ignore[misc]
        like = self._replicas
        l2 = _vector(reduce_norms(present_grads, 2), present, n_params, like)
        # The written-this-step check follows the DTensor gradients themselves: ``zero_grad(set_to_none=False)``
        # bumps their version once, FSDP2's accumulation (into the local piece) does not. The local pieces are no
        # guide: views of one reduce-scatter buffer, they share a version counter that every accumulation bumps.
        sure, if_nonzero = self._writes.observe(raws)
        device = like.device
        written = torch.from_numpy(sure).to(device) | (torch.from_numpy(if_nonzero).to(device) & (l2 != 0))
        before = torch.from_numpy(self._writes.ever).to(device)
        table = [l2**2 / self._replicas, written.double(), before.double()]
        due = self.reads == 1 or self.reads % self.detail_every == 0
        peak = None
        if due:
            table.append(_vector(reduce_norms(present_grads, 1), present, n_params, like) / self._replicas)
            weights = reduce_norms([_local(p.detach()) for p in params], 2)
            table.append(_vector(weights, list(range(n_params)), n_params, like) ** 2 / self._replicas)
            nonempty = [i for i, g in zip(present, present_grads, strict=True) if g.numel() > 0]
            maxima = reduce_norms([grads[i] for i in nonempty], math.inf)  # type: ignore[misc]
            peak = like.new_zeros(n).scatter_reduce_(0, self._owner, _vector(maxima, nonempty, n_params, like), "amax")
        summed = self._per_row(torch.stack(table))
        if _initialized() and self._group_size > 1:
            torch.distributed.all_reduce(summed, group=self.group)
            if peak is not None:
                torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX, group=self.group)
        mine = torch.stack([written, written & (l2 > 0)]).double()  # this rank's, for the next read's check
        parts = [summed.reshape(-1), mine.reshape(-1), peak if peak is not None else like.new_zeros(0)]
        numbers = torch.cat(parts).cpu().numpy()  # the one transfer
        rows = numbers[: summed.numel()].reshape(len(table), n)
        local = numbers[summed.numel() : summed.numel() + mine.numel()].reshape(2, n_params) > 0
        self._writes.commit(local[0], local[1])
        grad_norm = np.sqrt(rows[0]) / scale
        has_grad = rows[1] > 0
        if due:
            self._detail = {
                "grad_mean_abs": rows[3] / np.maximum(self.param_count, 1) / scale,
                "grad_max_abs": numbers[summed.numel() + mine.numel() :] / scale,
                "weight_norm": np.sqrt(rows[4]),
            }
            self._detail_step = step
        frozen_counts = self._map.per_row([float(not p.requires_grad) for p in params])
        values: dict[str, Any] = {
            "names": self.names,
            "kinds": self.kinds,
            "roles": self.roles,
            "blocks": self.blocks,
            "aliases": self.aliases,
            "param_count": self.param_count,
            "grad_norm": grad_norm,
            **self._detail,
            "frozen": frozen_counts == self._map.per_row(np.ones(n_params)),
            "has_grad": has_grad,
            "had_grad": rows[2] > 0,
            "step": step,
            "loss": loss_value(loss),
            "detail_step": self._detail_step,
            "grad_scale": scale,
            "skipped": skipped_step(scaler, scale, grad_norm, has_grad, loss),
        }
        return make_stats(values, n)

    def close(self) -> None:
        """Remove the forward hooks still waiting for the first forward pass."""
        self._flow.close()

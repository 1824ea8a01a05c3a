"""What both gradient readers (:class:`~gradwidgets.core.probe.GradientProbe` and the sharded
:class:`~gradwidgets.core.distributed.ShardedReader`) compute the same way: the batched norms, the
written-this-step masks (:class:`GradWrites`) and the AMP helpers (the loss scale the gradients carry, whether
``GradScaler`` skips the step, the loss as a number).

Numerics: norms accumulate in float32 whatever the parameter dtype (an fp16 gradient of norm 1e5 is not inf);
empty tensors read 0. Reductions run on the tensors' device; :func:`to_numpy` moves the 0-d results in one
transfer per device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["GradWrites", "loss_scale", "loss_value", "reduce_norms", "skipped_step", "to_numpy"]

LOW_PRECISION = (torch.float16, torch.bfloat16)


def loss_scale(scaler: Any) -> float:
    """The factor the gradients currently carry: ``scaler.get_scale()`` unless ``unscale_``/``step`` already
    divided it out for this iteration (the scaler's per-optimizer stage says so)."""
    if scaler is None:
        return 1.0
    if not (hasattr(scaler, "get_scale") and hasattr(scaler, "is_enabled")):
        raise ValueError(f"scaler must be a torch.amp.GradScaler (or None), got {type(scaler).__name__}")
    if not scaler.is_enabled():
        return 1.0
    states = getattr(scaler, "_per_optimizer_states", {}) or {}
    if any(getattr(state.get("stage"), "name", "") in ("UNSCALED", "STEPPED") for state in states.values()):
        return 1.0
    return float(scaler.get_scale())


def reduce_norms(tensors: list[torch.Tensor], ord: float) -> list[torch.Tensor]:
    """``ord``-norm of every tensor as 0-d float32 tensors on its device: one ``_foreach_norm`` per
    (device, dtype) group, low-precision inputs accumulated in float32. Empty tensors give 0."""
    if tensors:
        dtype, device = tensors[0].dtype, tensors[0].device
        if dtype in (torch.float32, torch.float64) and all(t.dtype == dtype and t.device == device for t in tensors):
            if ord != math.inf or all(t.numel() for t in tensors):
                norms = list(torch._foreach_norm(tensors, ord))  # the common case: one dtype, one device
                return _rescue_underflow(tensors, norms) if ord == 2 and dtype == torch.float32 else norms
    out: list[torch.Tensor | None] = [None] * len(tensors)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        if t.numel() == 0:
            out[i] = torch.zeros((), dtype=torch.float32, device=t.device)
        else:
            groups.setdefault((t.device, t.dtype), []).append(i)
    for (_, dtype), index in groups.items():
        members = [tensors[i] for i in index]
        if dtype in LOW_PRECISION and ord != math.inf:
            norms = list(torch._foreach_norm(members, ord, dtype=torch.float32))
        else:
            norms = list(torch._foreach_norm(members, ord))
        if ord == 2 and dtype != torch.float64:
            norms = _rescue_underflow(members, norms)
        for i, value in zip(index, norms, strict=True):
            out[i] = value if value.dtype == torch.float64 else value.float()  # float64 keeps its range (1e-300)
    return out  # type: ignore[return-value]


TINY_NORM = 1e-15
"""A float32 L2 norm below this may have lost its squares to underflow (entries < ~1e-19 square to 0)."""


def _rescue_underflow(tensors: list[torch.Tensor], norms: list[torch.Tensor]) -> list[torch.Tensor]:
    """Recompute, scaled by max|t| and finished in float64, the few norms that read below :data:`TINY_NORM`: a norm
    is 0 only when every entry is 0 (a 24-block transformer's first block, entries ~1e-29, read 0 in float32).
    One comparison over the fused pass's results; nothing more when no norm is that small."""
    if not norms:
        return norms
    suspect = (torch.stack(norms) < TINY_NORM).nonzero().flatten().tolist()
    for i in suspect:
        t = tensors[i]
        if t.numel() == 0:
            continue
        peak = t.detach().abs().max().float()
        if not bool(peak > 0) or not bool(torch.isfinite(peak)):
            continue
        wide = torch.float32 if t.device.type == "mps" else torch.float64  # MPS has no float64
        norms[i] = torch.linalg.vector_norm(t.float() / peak).to(wide) * peak.to(wide)
    return norms


def _stack(values: list[torch.Tensor]) -> np.ndarray:
    if len({v.dtype for v in values}) > 1:  # float64 wins; float32 otherwise (MPS has no float64)
        values = [v.double() for v in values]
    return torch.stack(values).cpu().numpy().astype(np.float64)


def to_numpy(values: list[torch.Tensor]) -> np.ndarray:
    """One transfer per device of a list of 0-d tensors, in order, as float64."""
    if not values:
        return np.zeros(0)
    devices = {v.device for v in values}
    if len(devices) == 1:
        return _stack(values)
    out = np.empty(len(values))
    for device in devices:
        index = [i for i, v in enumerate(values) if v.device == device]
        out[index] = _stack([values[i] for i in index])
    return out


class GradWrites:
    """Per parameter: did backward write its gradient since the previous read? And had it received a non-zero one
    at an earlier read?

    A new gradient tensor, or one bumped twice (zeroed, then accumulated into), was written; an untouched one keeps
    its verdict (a second read of the same step); a gradient only zeroed (one bump, all zero, as
    ``zero_grad(set_to_none=False)`` leaves a branch the forward pass skipped) or ``None`` was not.

    In two halves, so a reader whose norms stay on the device until a collective can finish there:
    :meth:`observe` (ids and version counters: which gradients were written for sure, which only if not all zero)
    and :meth:`commit` (the outcome, stored for the next read).
    """

    __slots__ = ("ever", "ids", "known", "pending", "versions", "written")

    def __init__(self, params: Sequence[nn.Parameter], carried: dict[int, tuple[Any, ...]] | None = None) -> None:
        n = len(params)
        self.known = np.zeros(n, bool)
        self.ids = np.zeros(n, np.uint64)
        self.versions = np.zeros(n, np.int64)
        self.written = np.zeros(n, bool)
        self.ever = np.zeros(n, bool)
        self.pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if carried:
            for i, p in enumerate(params):
                state = carried.get(id(p))
                if state is not None:
                    self.known[i], self.ids[i], self.versions[i], self.written[i], self.ever[i] = state

    def carry(self, params: Sequence[nn.Parameter]) -> dict[int, tuple[Any, ...]]:
        """The state per ``id(param)``, for the tracker of a rebuilt layout."""
        return {
            id(p): (self.known[i], self.ids[i], self.versions[i], self.written[i], self.ever[i])
            for i, p in enumerate(params)
        }

    def observe(self, grads: Sequence[torch.Tensor | None]) -> tuple[np.ndarray, np.ndarray]:
        """``(sure, if_nonzero)``: written whatever the values; written if the gradient is not all zero."""
        n = len(grads)
        present = np.fromiter((g is not None for g in grads), bool, n)
        ids = np.fromiter((id(g) for g in grads), np.uint64, n)
        versions = np.fromiter((-1 if g is None else g._version for g in grads), np.int64, n)
        same = self.known & present & (ids == self.ids)
        bumps = versions - self.versions
        sure = (present & ~same) | (same & (bumps == 0) & self.written) | (same & (bumps != 0) & (bumps != 1))
        self.pending = (present, ids, versions)
        return sure, same & (bumps == 1)

    def commit(self, written: np.ndarray, positive: np.ndarray) -> np.ndarray:
        """Store this read's ``written`` mask (``positive``: the gradient norm is > 0); returns which parameters
        had received a non-zero gradient before this read."""
        assert self.pending is not None
        before: np.ndarray = self.ever.copy()
        self.ever |= written & positive
        self.known, self.ids, self.versions = self.pending
        self.written = written
        self.pending = None
        return before


def loss_value(loss: float | torch.Tensor | None) -> float:
    """The loss as a float (NaN for None)."""
    if isinstance(loss, torch.Tensor):
        return float(loss.detach())
    return float("nan" if loss is None else loss)


def skipped_step(scaler: Any, scale: float, grad_norm: np.ndarray, has_grad: np.ndarray, loss: Any) -> bool:
    """True when ``GradScaler`` will skip this optimizer step: the gradients read (still scaled, or just
    unscaled with a finite loss) hold inf/NaN."""
    if scaler is None:
        return False
    nonfinite = not np.isfinite(grad_norm[has_grad]).all()
    if scale != 1.0:
        return nonfinite
    return bool(scaler.is_enabled() and nonfinite and _finite(loss))


def _finite(loss: Any) -> bool:
    if loss is None:
        return True
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    return math.isfinite(value)

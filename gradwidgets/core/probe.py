"""Per-layer gradient statistics for any ``nn.Module``, read straight from ``p.grad`` after ``backward()``.

Why not backward hooks: ``register_full_backward_hook`` breaks on in-place ops (pytorch#61519) and measures
the gradient w.r.t. a module's *outputs*, not its parameters. Reading ``.grad`` is exact, works for every
module (``nn.LSTM``, ``nn.MultiheadAttention`` and conv layers own their weights directly) and costs one
batched ``torch._foreach_norm`` per device and dtype plus one small transfer to numpy per read.

Numerics: norms accumulate in float32 whatever the parameter dtype (an fp16 gradient of norm 1e5 is not inf),
sparse gradients are read from their coalesced values, zero-size parameters read 0. Reductions run on the
gradients' device; only the per-parameter results (a vector of a few hundred floats) move to the CPU. GPU runs
are untested here (no GPU in CI).
"""

from __future__ import annotations

import logging
import math
import operator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..validation import check_limit
from .layout import FlowOrder, ReadsRows, RowMap, parameter_identity, registrations
from .reductions import LOW_PRECISION, GradWrites, loss_scale, loss_value, reduce_norms, skipped_step, to_numpy
from .stats import GradientStats

__all__ = ["GradientProbe", "GradientStats"]  # GradientStats lives in .stats; importable from here as before

logger = logging.getLogger(__name__)


def _distance(a: torch.Tensor, b: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """``|a - b|`` in float32+ (fp16 differences overflow). ``in_place`` overwrites ``b`` (a snapshot about to
    be dropped) instead of allocating; otherwise the temporary is the size of one parameter."""
    distance: torch.Tensor
    if a.dtype in LOW_PRECISION:
        distance = torch.dist(a.float(), b.float())
    elif in_place:
        distance = torch.linalg.vector_norm(b.sub_(a))
    else:
        distance = torch.dist(a, b)
    return distance


class GradientProbe(ReadsRows):
    """Watches a model's parameter gradients.

    Call :meth:`read` after ``loss.backward()`` and before ``zero_grad()`` (before or after
    ``optimizer.step()``: the update ratio measures the change since the previous read either way). With AMP,
    pass the ``GradScaler``: ``read(loss, scaler=scaler)`` between ``scaler.scale(loss).backward()`` and
    ``scaler.step(optimizer)``; the norms are divided by the loss scale.

    Every read measures each layer's gradient L2 norm: one ``torch._foreach_norm`` pass over the gradients and
    one transfer to numpy. The rest (mean and max |g|, weight norms, update ratio, drift) costs a few more
    passes, so it is measured every ``detail_every`` reads (20 by default, and on the first); between those
    reads the stats carry the latest values, and ``GradientStats.detail_step`` says which step they belong to.

    Memory: ``track_weights=True`` keeps one copy of the weights (the starting point, for ``drift``), plus a
    second one only during the one step before each detail read (for the exact update ratio of that step;
    every step when ``detail_every=1``). ``track_weights=False`` keeps none (the motion fields are then NaN).

    Rows follow the first forward pass after the probe was made (registration order until then). The order is
    recorded with forward hooks, so a ``torch.compile`` model, or ``record_flow=False``, keeps registration order.
    Parameters added, replaced or removed later are noticed at the next read (an identity check of the parameter list),
    which then rebuilds the rows.
    """

    def __init__(
        self, model: nn.Module, track_weights: bool = True, detail_every: int = 20, record_flow: bool = True
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        detail_every = check_limit("detail_every", detail_every)
        self.model = model
        self.track_weights = bool(track_weights)
        self.detail_every = detail_every
        self.reads = 0
        self._time_reader = getattr(model, "state_grad_norms", None)
        self._initial: dict[int, torch.Tensor] = {}
        self._initial_norm: dict[int, float] = {}
        self._previous: dict[int, torch.Tensor] = {}
        self._snapshot_read = -1
        self._layout(RowMap.of(model))
        if not self._map.rows:
            raise ValueError("model has no parameters to watch")
        self._flow = FlowOrder(model, record_flow)
        writes = self._writes
        for i, p in enumerate(self._params):  # gradients present before the probe was made count as this step's
            if p.grad is not None:
                writes.known[i], writes.ids[i], writes.versions[i] = True, id(p.grad), p.grad._version
                writes.written[i] = True
        if self.track_weights:
            self.rebase()

    # ------------------------------------------------------------------------------------------------ layout
    def _layout(self, row_map: RowMap, carried: dict[int, tuple[Any, ...]] | None = None) -> None:
        self._map = row_map
        rows = row_map.rows
        self._writes = GradWrites(self._params, carried)
        self._maybe_sparse = [i for i, row in enumerate(self._map.owner) if getattr(rows[row].module, "sparse", False)]
        self._registrations = registrations()
        self._identity = parameter_identity(self.model)
        self._frozen_flags: tuple[bool, ...] | None = None
        self._sizes = [p.numel() for p in self._params]
        self.param_count = row_map.per_row(np.asarray(self._sizes, dtype=np.float64))
        nan = np.full(len(rows), np.nan)
        self._detail = {k: nan for k in ("grad_mean_abs", "grad_max_abs", "weight_norm", "update_ratio", "drift")}
        self._detail_step = 0

    def _check_layout(self) -> None:
        """Rebuild the rows when the first forward pass has been recorded, or when the model's parameters are
        no longer the ones the rows hold (added, replaced, removed: ``resize_token_embeddings``, a new head)."""
        if self._flow.take() is not None:
            self._relayout(reason=None)
            return
        # The identity walk runs when any module anywhere registered a parameter or module since the last one
        # (setattr, register_parameter, add_module), and at detail reads as a safety net for direct edits of
        # ``_parameters``/``_modules`` and deletions.
        count = registrations()
        if count != self._registrations or self.reads % self.detail_every == 0:
            self._registrations = count
            current = parameter_identity(self.model)
            if len(current) != len(self._identity) or not all(map(operator.is_, current, self._identity)):
                self._relayout(reason="the model's parameters changed since the last read")
                return
            # Resized in place (``p.data = ...``; HF ``resize_token_embeddings`` builds a new module, which moves
            # the counter, then copies its data into the old one).
            sizes = [p.numel() for p in self._params]
            if sizes != self._sizes:
                self._sizes = sizes
                self.param_count = self._map.per_row(np.asarray(sizes, dtype=np.float64))

    def _relayout(self, reason: str | None) -> None:
        row_map = RowMap.of(self.model, self._flow.order)
        if not row_map.rows:
            raise ValueError("model has no parameters to watch (they were all removed)")
        old_names = self.names
        self._layout(row_map, carried=self._writes.carry(self._params))
        if reason is not None:
            logger.info("GradientProbe: %s; now %d rows (was %d)", reason, len(self.names), len(old_names))
        live = {id(p) for p in self._params}
        for store in (self._initial, self._initial_norm, self._previous):
            for key in [k for k in store if k not in live]:
                del store[key]
        if self.track_weights:
            self._snapshot_initial(only_missing=True)

    # ----------------------------------------------------------------------------------------------- weights
    def rebase(self) -> None:
        """Take the current weights as the starting point for ``drift``."""
        self._initial.clear()
        self._initial_norm.clear()
        self._snapshot_initial(only_missing=False)
        self._previous.clear()
        self._snapshot_read = -1

    @torch.no_grad()
    def _snapshot_initial(self, only_missing: bool) -> None:
        fresh = [p for p in self._params if not (only_missing and id(p) in self._initial)]
        for p in fresh:
            self._initial[id(p)] = p.detach().clone()
        norms = to_numpy(reduce_norms([p.detach() for p in fresh], 2))
        for p, norm in zip(fresh, norms, strict=True):
            self._initial_norm[id(p)] = float(norm) ** 2

    def frozen_mask(self) -> np.ndarray:
        """Layers whose every parameter has ``requires_grad=False`` (recomputed only when a flag changes)."""
        flags = tuple(p.requires_grad for p in self._params)
        if flags != self._frozen_flags:
            counts = np.bincount(self._map.owner, minlength=len(self.names))
            frozen_counts = self._map.per_row(np.logical_not(flags).astype(np.float64))
            self._frozen: np.ndarray = frozen_counts == counts
            self._frozen_flags = flags
        return self._frozen

    # -------------------------------------------------------------------------------------------------- read
    @torch.no_grad()
    def read(
        self, loss: float | torch.Tensor | None = None, step: int | None = None, scaler: Any = None
    ) -> GradientStats:
        """Measure every layer now. ``loss`` and ``step`` (optional) are stored on the stats; ``step``
        defaults to the number of reads so far. ``scaler``: the ``torch.amp.GradScaler`` whose scaled loss
        was backpropagated; gradients are divided by its scale (unless ``unscale_`` already did)."""
        scale = loss_scale(scaler)
        self.reads += 1
        step = self.reads if step is None else int(step)
        self._check_layout()
        params = self._params
        raws = [p.grad for p in params]
        grads = list(raws)
        for i in self._maybe_sparse:  # nn.Embedding/EmbeddingBag(sparse=True): read the coalesced values
            g = grads[i]
            if g is not None and g.is_sparse:
                grads[i] = g.coalesce().values()
        present = [i for i, g in enumerate(grads) if g is not None]
        present_grads = [g for g in grads if g is not None]
        values = reduce_norms(present_grads, 2)
        due = self.reads == 1 or self.reads % self.detail_every == 0
        if due:
            values += self._detail_values(present_grads)
        numbers = to_numpy(values)
        l2 = np.zeros(len(params))
        l2[present] = numbers[: len(present)]
        if due:
            self._finish_detail(numbers[len(present) :], present, step, scale)
            self._detail["dead_fraction"] = self._dead_fraction(present_grads, present)
        if self.track_weights and (self.reads + 1) % self.detail_every == 0:
            self._previous = {id(p): p.detach().clone() for p in params}
            self._snapshot_read = self.reads

        sure, if_nonzero = self._writes.observe(raws)
        written = sure | (if_nonzero & (l2 != 0))
        before = self._writes.commit(written, l2 > 0)
        has_grad = self._map.per_row(written.astype(np.float64)) > 0
        accumulated = self._map.per_row((if_nonzero & (l2 != 0)).astype(np.float64)) > 0
        had_grad = self._map.per_row(before.astype(np.float64)) > 0
        grad_norm = np.sqrt(self._map.per_row(l2**2)) / scale
        skipped = skipped_step(scaler, scale, grad_norm, has_grad, loss)
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
            loss=loss_value(loss),
            time_grad_norm=time_grad_norm,
            time_state=time_state,
            detail_step=self._detail_step,
            had_grad=had_grad,
            aliases=self.aliases,
            grad_scale=scale,
            skipped=bool(skipped),
            dead_fraction=detail.get("dead_fraction"),
            accumulated=accumulated,
        )

    def _dead_fraction(self, present_grads: list[torch.Tensor], present: list[int]) -> np.ndarray:
        """Per row, the fraction of output units (weight-gradient rows) whose gradient is exactly 0 (the smallest over
        its matrix-shaped parameters: an LSTM direction whose recurrent weights saw only a zero state still learns)."""
        pairs = [(i, g) for i, g in zip(present, present_grads, strict=True) if g.dim() >= 2 and g.numel() > 0]
        out = np.full(len(self.names), np.nan)
        if not pairs:
            return out
        fractions = to_numpy([_zero_rows(g) for _, g in pairs])
        rows = self._map.owner[[i for i, _ in pairs]]
        with np.errstate(invalid="ignore"):
            np.fmin.at(out, rows, fractions)
        return out

    def _detail_values(self, present_grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The detail reductions as 0-d tensors (transferred with the grad norms in one go): L1 and max |g|
        per present gradient, then per parameter its weight norm, and (when tracked) the distance to the
        previous snapshot and to the starting weights, each with at most one parameter-sized temporary."""
        nonempty = [g for g in present_grads if g.numel() > 0]
        weights = [p.detach() for p in self._params]
        values = reduce_norms(present_grads, 1) + reduce_norms(nonempty, math.inf) + reduce_norms(weights, 2)
        if self.track_weights:
            has_previous = self._snapshot_read == self.reads - 1 and bool(self._previous)
            for w, p in zip(weights, self._params, strict=True):
                prev = self._previous.get(id(p)) if has_previous else None
                start = self._initial.get(id(p))
                nan = torch.full((), math.nan, device=w.device)
                values.append(_distance(w, prev, in_place=True) if prev is not None and prev.shape == w.shape else nan)
                values.append(_distance(w, start) if start is not None and start.shape == w.shape else nan)
            self._previous = {}
        return values

    def _finish_detail(self, numbers: np.ndarray, present: list[int], step: int, scale: float) -> None:
        n_params = len(self._params)
        n_present = len(present)
        l1 = np.zeros(n_params)
        l1[present] = numbers[:n_present]
        nonempty = [i for i in present if self._params[i].grad is not None and _grad_numel(self._params[i]) > 0]
        peak = np.zeros(n_params)
        peak[nonempty] = numbers[n_present : n_present + len(nonempty)]
        offset = n_present + len(nonempty)
        weight_sq = numbers[offset : offset + n_params] ** 2
        offset += n_params
        weight_norm = np.sqrt(self._map.per_row(weight_sq))
        nonzero = np.where(weight_norm > 0, weight_norm, np.nan)
        n_rows = len(self.names)
        update_ratio = drift = np.full(n_rows, np.nan)
        if self.track_weights:
            moved = numbers[offset : offset + 2 * n_params : 2]
            from_start = numbers[offset + 1 : offset + 2 * n_params : 2]
            update_ratio = np.sqrt(self._map.per_row(moved**2)) / nonzero
            start_sq = np.array([self._initial_norm.get(id(p), np.nan) for p in self._params])
            start_norm = np.sqrt(self._map.per_row(start_sq))
            drift = np.sqrt(self._map.per_row(from_start**2)) / np.where(start_norm > 0, start_norm, np.nan)
        peak_rows = np.zeros(n_rows)
        with np.errstate(invalid="ignore"):
            np.maximum.at(peak_rows, self._map.owner, peak)
        self._detail = {
            "grad_mean_abs": self._map.per_row(l1) / np.maximum(self.param_count, 1) / scale,
            "grad_max_abs": peak_rows / scale,
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

    def close(self) -> None:
        """Remove the forward hooks still waiting for the first forward pass (they also go by themselves)."""
        self._flow.close()


def _zero_rows(g: torch.Tensor) -> torch.Tensor:
    """Fraction of ``g``'s rows (dim 0) that are all zero. A row norm is the cheapest full pass on CPU (about 2x one
    ``_foreach_norm``; ``aminmax``/``count_nonzero`` cost 15x); a row of entries below ~1e-19 counts as zero, which
    only a vanishing gradient produces, and that verdict comes first."""
    fraction: torch.Tensor = (torch.linalg.vector_norm(g.flatten(1), dim=1) == 0).float().mean()
    return fraction


def _grad_numel(p: nn.Parameter) -> int:
    g = p.grad
    if g is None:
        return 0
    return int(g._nnz()) if g.is_sparse else g.numel()

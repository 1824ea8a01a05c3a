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

import dataclasses
import logging
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .layout import FlowOrder, ReadsRows, RowMap, build_rows, parameter_identity, registrations

__all__ = [
    "GradWrites",
    "GradientProbe",
    "GradientStats",
    "layer_layout",
    "loss_scale",
    "loss_value",
    "make_stats",
    "reduce_norms",
    "skipped_step",
]

logger = logging.getLogger(__name__)

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class GradientStats:
    """One reading of the probe: a row per module that directly owns parameters, in data-flow order.

    Arrays are float64 numpy arrays of length ``len(names)``. ``grad_norm`` is measured at every read;
    ``grad_mean_abs``, ``grad_max_abs``, ``weight_norm``, ``update_ratio`` and ``drift`` at step ``detail_step``
    (see ``GradientProbe(detail_every=...)``). ``update_ratio`` is ``|w_now - w_prev| / |w_now|`` with ``w_prev``
    the weights one read earlier (one optimizer step when read once per step; NaN at the first read).
    ``drift`` is ``|w_now - w_0| / |w_0|`` against the weights when the probe was made (or last
    ``rebase()``d): how far each layer has moved since training began.

    ``has_grad`` says which rows received a gradient since the previous read (``None`` grads, or grads only
    zeroed by ``zero_grad(set_to_none=False)``, did not); ``had_grad`` which rows had received one at an earlier
    read. ``aliases`` names, per row, the other modules that share its parameters (``"lm_head"`` on a tied
    embedding row). ``grad_scale`` is the AMP loss scale the gradients were divided by (1 without a scaler);
    ``skipped`` is True when those scaled gradients held inf/NaN, a step ``GradScaler`` skips.

    ``dead_fraction`` (at ``detail_step``): per row, the fraction of its output units (rows of its weight
    gradient: output features, conv channels) whose gradient is exactly zero - units no example of the batch
    passed a signal through (NaN for rows without a matrix-shaped weight). ``accumulated`` says which rows' gradient
    was added onto the previous read's (same tensor, one in-place write, no ``zero_grad()`` in between): a read
    between the micro-batches of gradient accumulation.
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
    had_grad: np.ndarray | None = None
    aliases: tuple[str, ...] = ()
    grad_scale: float = 1.0
    skipped: bool = False
    dead_fraction: np.ndarray | None = None
    accumulated: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def trainable(self) -> np.ndarray:
        return ~self.frozen

    def block_indices(self) -> np.ndarray:
        """Sorted indices of the depth levels (blocks) in the stack."""
        return np.unique(self.blocks[self.blocks >= 0])

    def block_names(self) -> tuple[str, ...]:
        """A name per block in :meth:`block_indices` order: the members' common dotted prefix (``blocks.3``),
        or the single member's name."""
        out = []
        for block in self.block_indices():
            rows = [(n, r) for n, b, r in zip(self.names, self.blocks, self.roles, strict=True) if b == block]
            core = [n for n, r in rows if r != "norm"]
            members = [n for n, _ in rows]
            out.append(_common_prefix(core or members))
        return tuple(out)

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


def _common_prefix(names: Sequence[str]) -> str:
    """The block's name: its members' common dotted prefix, cut after its last numeric part (``blocks.3.layer``
    alone -> ``blocks.3``, ``1.layers.0.self_attn`` + ``1.layers.0.linear1`` -> ``1.layers.0``); ``rnn.l0`` and
    ``rnn.l0_reverse`` -> ``rnn.l0``."""
    names = list(dict.fromkeys(n.removesuffix("_reverse") for n in names))
    common: list[str] = []
    for pieces in zip(*(n.split(".") for n in names), strict=False):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    numeric = [i for i, part in enumerate(common) if part.isdigit()]
    if numeric:
        common = common[: numeric[-1] + 1]
    return ".".join(common) or names[0]


def make_stats(values: dict[str, Any], n_layers: int) -> GradientStats:
    """A ``GradientStats`` from the fields given; any other required field is NaN (or False for the masks), so a
    reader that does not measure a field (a sharded model's weight motion, an older run file's new field) keeps
    working when the stats gain one."""
    filled = dict(values)
    for field in dataclasses.fields(GradientStats):
        no_default = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if field.name not in filled and no_default:
            filled[field.name] = (
                np.zeros(n_layers, bool) if field.name in ("frozen", "has_grad") else np.full(n_layers, np.nan)
            )
    return GradientStats(**filled)


def layer_layout(model: nn.Module) -> tuple[list[str], list[nn.Module], list[str], list[int]]:
    """Names, modules, roles and block indices of the probe's rows, in registration order (see
    :mod:`gradwidgets.core.layout`; :class:`GradientProbe` re-orders them by the first forward pass).

    Models built by :func:`gradwidgets.build_model` declare roles and blocks; for any other model, norm layers
    (class name containing ``Norm``) get role ``"norm"``, embeddings ``"embedding"``, the repeated blocks of the
    body a block index each, and the stem and head block ``-1``.
    """
    rows = build_rows(model)
    return [r.name for r in rows], [r.module for r in rows], [r.role for r in rows], [r.block for r in rows]


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
        if dtype in _LOW_PRECISION and ord != math.inf:
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


def _to_numpy(values: list[torch.Tensor]) -> np.ndarray:
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


def _distance(a: torch.Tensor, b: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """``|a - b|`` in float32+ (fp16 differences overflow). ``in_place`` overwrites ``b`` (a snapshot about to
    be dropped) instead of allocating; otherwise the temporary is the size of one parameter."""
    if a.dtype in _LOW_PRECISION:
        return torch.dist(a.float(), b.float())
    if in_place:
        return torch.linalg.vector_norm(b.sub_(a))
    return torch.dist(a, b)


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
        before = self.ever.copy()
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
        if isinstance(detail_every, bool) or not isinstance(detail_every, int) or not 1 <= detail_every <= 100_000:
            raise ValueError(f"detail_every must be an integer in [1, 100000], got {detail_every!r}")
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
        self._owner_np = row_map.owner
        self._writes = GradWrites(self._params, carried)
        self._maybe_sparse = [i for i, row in enumerate(self._owner_np) if getattr(rows[row].module, "sparse", False)]
        self._registrations = registrations()
        self._identity = parameter_identity(self.model)
        self._frozen_flags: tuple[bool, ...] | None = None
        self._sizes = [p.numel() for p in self._params]
        self.param_count = row_map.per_row(self._sizes).astype(np.float64)
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
                self.param_count = self._per_layer(np.asarray(sizes, dtype=np.float64))

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
        norms = _to_numpy(reduce_norms([p.detach() for p in fresh], 2))
        for p, norm in zip(fresh, norms, strict=True):
            self._initial_norm[id(p)] = float(norm) ** 2

    def _per_layer(self, per_param: np.ndarray) -> np.ndarray:
        return np.bincount(self._owner_np, weights=per_param, minlength=len(self.names))  # RowMap.per_row, inlined

    def frozen_mask(self) -> np.ndarray:
        """Layers whose every parameter has ``requires_grad=False`` (recomputed only when a flag changes)."""
        flags = tuple(p.requires_grad for p in self._params)
        if flags != self._frozen_flags:
            counts = np.bincount(self._owner_np, minlength=len(self.names))
            frozen_counts = self._per_layer(np.logical_not(flags).astype(np.float64))
            self._frozen = frozen_counts == counts
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
        present_grads = grads if len(present) == len(grads) else [grads[i] for i in present]
        values = reduce_norms(present_grads, 2)
        due = self.reads == 1 or self.reads % self.detail_every == 0
        if due:
            values += self._detail_values(present_grads)
        numbers = _to_numpy(values)
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
        has_grad = self._per_layer(written.astype(np.float64)) > 0
        accumulated = self._per_layer((if_nonzero & (l2 != 0)).astype(np.float64)) > 0
        had_grad = self._per_layer(before.astype(np.float64)) > 0
        grad_norm = np.sqrt(self._per_layer(l2**2)) / scale
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
        fractions = _to_numpy([_zero_rows(g) for _, g in pairs])
        rows = self._owner_np[[i for i, _ in pairs]]
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
        weight_norm = np.sqrt(self._per_layer(weight_sq))
        nonzero = np.where(weight_norm > 0, weight_norm, np.nan)
        n_rows = len(self.names)
        update_ratio = drift = np.full(n_rows, np.nan)
        if self.track_weights:
            moved = numbers[offset : offset + 2 * n_params : 2]
            from_start = numbers[offset + 1 : offset + 2 * n_params : 2]
            update_ratio = np.sqrt(self._per_layer(moved**2)) / nonzero
            start_sq = np.array([self._initial_norm.get(id(p), np.nan) for p in self._params])
            start_norm = np.sqrt(self._per_layer(start_sq))
            drift = np.sqrt(self._per_layer(from_start**2)) / np.where(start_norm > 0, start_norm, np.nan)
        peak_rows = np.zeros(n_rows)
        with np.errstate(invalid="ignore"):
            np.maximum.at(peak_rows, self._owner_np, peak)
        self._detail = {
            "grad_mean_abs": self._per_layer(l1) / np.maximum(self.param_count, 1) / scale,
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
    return (torch.linalg.vector_norm(g.flatten(1), dim=1) == 0).float().mean()


def _grad_numel(p: nn.Parameter) -> int:
    g = p.grad
    if g is None:
        return 0
    return int(g._nnz()) if g.is_sparse else g.numel()


def _finite(loss: Any) -> bool:
    if loss is None:
        return True
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    return math.isfinite(value)

"""Per-block instability signals of a transformer, measured before the loss spikes (issue 23).

Wortsman et al. 2023 reproduce the two instabilities that stop large runs in small models: attention-logit growth
(the largest q.k/sqrt(d) climbs, attention entropy collapses; fixed by qk-layernorm) and output-logit divergence
(the head's log-partition log Z drifts; fixed by z-loss). ``InstabilitySignals`` measures, per attention block,
the largest attention logit and the mean attention entropy, the log Z of the model's output logits and, given the
optimizer, per block the update-to-data ratio |dW|/|W|, the gradient RMS against Adam's eps and the cosine between
the gradient and the optimizer's momentum (negative: successive gradients point against each other, the run
oscillates at the edge of stability, Cohen et al. 2021/2022), with the learning rate; given the learning-rate
scheduler, also the largest learning rate it will set over the next ``horizon`` steps (a warm-up that will keep
raising the learning rate past the edge is what spikes the loss: Gilmer et al. 2021).

Cheap by construction: forward hooks read q and k where the attention module already computes them (Hugging Face
GPT-2's ``c_attn`` output; the ``q_proj``/``k_proj`` outputs of Llama-style attention, after ``q_norm``/``k_norm``
where those exist, with the rotary embedding the layer was given) or recompute them from the inputs of an
``nn.MultiheadAttention`` (which never exposes them); only the first ``sample`` sequences, only every ``every``-th
training forward pass. Nothing is patched. A hook that fails logs once and measures nothing; it never raises into
the training loop.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .blocks import block_key
from .diagnosis import Diagnosis

__all__ = [
    "InstabilityReading",
    "InstabilitySignals",
    "InstabilityWarning",
    "attention_kind",
    "check_scheduler",
    "edge_cosine",
    "has_attention",
    "reading_before",
    "scheduled_lr_peak",
    "scheduler_optimizer",
    "unstable_verdict",
    "warn_unstable",
]

log = logging.getLogger(__name__)

_NUMERIC = re.compile(r"^\d+$")
MAX_BLOCKS = 10_000
"""A run file's reading names at most this many blocks (anything longer is damage or forgery)."""
HORIZON = 100
"""How many optimizer steps ahead the learning-rate outlook (``InstabilityReading.lr_ahead``) looks."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class InstabilityReading:
    """One measurement: arrays index ``blocks``; NaN where a quantity was not measured (no optimizer, an
    attention kind without q and k, no step yet)."""

    step: int  # the training forward pass it was measured on (0-based)
    blocks: tuple[str, ...]  # qualified names of the blocks holding an attention module, in registration order
    max_logit: np.ndarray  # the largest attention logit q.k*scale over heads and allowed (unmasked) positions
    entropy: np.ndarray  # mean attention entropy in nats over heads and query positions
    log_z: float  # mean log-partition logsumexp(logits) of the model's output over sampled positions
    log_z_max: float  # its largest value
    update_ratio: np.ndarray  # |W_after - W_before| / |W_before| over the block's parameters, one optimizer step
    grad_rms: np.ndarray  # root mean square of the block's gradients at that step
    eps: float  # the optimizer's eps (Adam's floor on the step's denominator), NaN if it has none
    # cos(the block's gradient, the optimizer's momentum before the step: Adam's exp_avg, SGD's momentum_buffer);
    # NaN without momentum. Negative: the gradient turned against the direction of the last steps (oscillation).
    momentum_cos: np.ndarray = field(default_factory=lambda: np.empty(0))
    lr: float = math.nan  # the learning rate of the optimizer's first group at that step
    lr_ahead: float = math.nan  # the largest learning rate the scheduler will set over the next steps (NaN: none)

    PER_BLOCK = ("max_logit", "entropy", "update_ratio", "grad_rms", "momentum_cos")
    SCALARS = ("log_z", "log_z_max", "eps", "lr", "lr_ahead")

    def __post_init__(self) -> None:
        if len(self.momentum_cos) != len(self.blocks):  # a reading made without it (an older run file, a test)
            object.__setattr__(self, "momentum_cos", np.full(len(self.blocks), np.nan))

    def to_dict(self) -> dict[str, Any]:
        """The reading as stored in a run file (JSON: lists and numbers, NaN as NaN)."""
        out: dict[str, Any] = {"step": int(self.step), "blocks": list(self.blocks)}
        out.update({name: np.asarray(getattr(self, name), dtype=float).tolist() for name in self.PER_BLOCK})
        out.update({name: float(getattr(self, name)) for name in self.SCALARS})
        return out

    @classmethod
    def from_dict(cls, data: Any) -> InstabilityReading:
        """The inverse of :meth:`to_dict`, checked (a run file may be damaged or forged): ``step`` an integer,
        ``blocks`` at most ``MAX_BLOCKS`` strings, each per-block list one number per block, the scalars numbers.
        A missing per-block list or scalar reads NaN (a newer writer may leave one out). Raises ``ValueError``
        naming the field."""
        if not isinstance(data, dict):
            raise ValueError(f"an instability reading must be a mapping, got {type(data).__name__}")
        step, blocks = data.get("step"), data.get("blocks")
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"instability reading field 'step' must be an integer, got {step!r:.80}")
        if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS or not all(
            isinstance(b, str) and len(b) <= 1000 for b in blocks
        ):
            raise ValueError(f"instability reading field 'blocks' must be a list of at most {MAX_BLOCKS} names")
        values: dict[str, Any] = {}
        for name in cls.PER_BLOCK:
            value = data.get(name, [math.nan] * len(blocks))
            if not isinstance(value, list) or len(value) != len(blocks) or not all(_is_number(v) for v in value):
                raise ValueError(f"instability reading field {name!r} must be a list of {len(blocks)} numbers")
            values[name] = np.asarray(value, dtype=float)
        for name in cls.SCALARS:
            value = data.get(name, math.nan)
            if not _is_number(value):
                raise ValueError(f"instability reading field {name!r} must be a number, got {value!r:.80}")
            values[name] = float(value)
        return cls(step=step, blocks=tuple(blocks), **values)


@dataclass(frozen=True)
class InstabilityWarning:
    """A verdict from ``warn_unstable``: which block, which signal, the fix, and the numbers it compared."""

    kind: str  # "unstable"
    block: str
    signal: str  # "max_logit", "log_z" or "edge" (oscillating while the schedule raises the learning rate)
    step: int
    value: float
    baseline: float
    fix: str
    message: str


def attention_kind(module: nn.Module) -> str | None:
    """``"mha"`` (``nn.MultiheadAttention``), ``"gpt2"`` (Hugging Face GPT-2's fused ``c_attn``), ``"qk_proj"``
    (Llama-style ``q_proj``/``k_proj`` with a ``head_dim``) or None for anything else."""
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if hasattr(module, "c_attn") and hasattr(module, "split_size") and not getattr(module, "is_cross_attention", 0):
        return "gpt2"
    projections = (getattr(module, "q_proj", None), getattr(module, "k_proj", None))
    if all(isinstance(p, nn.Module) for p in projections) and isinstance(getattr(module, "head_dim", None), int):
        return "qk_proj"
    return None


def _block_name(name: str, names: Sequence[str] | None = None) -> str:
    """The attention's block (``transformer.h.3.attn`` -> ``transformer.h.3``), the same block the bars group it
    in (:func:`~gradwidgets.core.blocks.block_key` over the model's parameter-owning ``names``); the module's own
    name where nothing is numbered."""
    return block_key(name, names) if name else "attention"


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _causal(length_q: int, length_k: int, device: torch.device) -> torch.Tensor:
    """Additive mask: -inf where query i may not see key j (j > i + length_k - length_q)."""
    allowed = torch.ones(length_q, length_k, dtype=torch.bool, device=device).tril(length_k - length_q)
    return torch.zeros(length_q, length_k, device=device).masked_fill(~allowed, float("-inf"))


def _additive(mask: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A boolean mask (True = may not attend) as -inf/0; a float mask as it is."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, device=device).masked_fill(mask, float("-inf"))
    return mask.float()


def attention_statistics(
    q: torch.Tensor, k: torch.Tensor, scale: float, mask: torch.Tensor | None
) -> tuple[float, float]:
    """(largest logit over allowed positions, mean entropy in nats) of softmax(q k^T * scale + mask), q and k
    shaped (batch, heads, length, head_dim), mask additive and broadcastable to (batch, heads, Lq, Lk)."""
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if mask is not None:
        logits = logits + mask
    finite = torch.isfinite(logits)
    largest = logits.masked_fill(~finite, float("-inf")).amax()
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    entropy = -(p * logp.masked_fill(~finite, 0.0)).sum(-1)
    rows = finite.any(-1)
    mean_entropy = entropy[rows].mean() if bool(rows.any()) else torch.tensor(float("nan"))
    return float(largest), float(mean_entropy)


class _Block:
    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.params = [p for p in module.parameters() if p.requires_grad]


def _entry_modules(model: nn.Module, attention: Sequence[nn.Module]) -> list[nn.Module]:
    """Where a forward pass may start: the model, and down from it each single child that holds every attention
    module (a Lightning module's ``training_step`` calls ``self.gpt(...)``, never the module's own forward). The
    outermost one called measures the pass; its output gives log Z."""
    entries, current = [model], model
    while attention:
        holders = [c for c in current.children() if all(any(a is m for m in c.modules()) for a in attention)]
        if len(holders) != 1 or isinstance(holders[0], (nn.ModuleList, nn.ModuleDict)):
            break
        current = holders[0]
        if any(current is a for a in attention):
            break
        entries.append(current)
    return entries


def has_attention(model: nn.Module) -> bool:
    """True when some module of ``model`` is an attention that :func:`attention_kind` recognises (the logger and
    the monitor then measure instability signals by default)."""
    return any(attention_kind(m) is not None for m in model.modules())


def _momentum_cos(optimizer: Any, params: Sequence[torch.Tensor], grads: torch.Tensor | None) -> float:
    """cos(gradient, momentum) over ``params`` with the optimizer's momentum before its step (Adam's ``exp_avg``,
    SGD's ``momentum_buffer``): NaN before the first step or for an optimizer without momentum."""
    if grads is None:
        return math.nan
    momenta = []
    for p in params:
        state = optimizer.state.get(p, {})
        momentum = state.get("exp_avg", state.get("momentum_buffer"))
        if not isinstance(momentum, torch.Tensor) or momentum.shape != p.shape:
            return math.nan
        momenta.append(momentum.detach().reshape(-1).float())
    momentum = torch.cat(momenta)
    norms = float(grads.norm()) * float(momentum.norm())
    return float(torch.dot(grads, momentum)) / norms if norms > 0 else math.nan


class _OptimizerStandIn:
    """What a learning-rate scheduler reads and writes of its optimizer: copies of the groups' settings (no
    parameters, no state), so a copy of the scheduler can be stepped ahead without touching the real run."""

    def __init__(self, groups: Sequence[dict[str, Any]]) -> None:
        self.param_groups = [{k: copy.copy(v) for k, v in g.items() if k != "params"} for g in groups]
        self.defaults: dict[str, Any] = {}
        self.state: dict[Any, Any] = {}
        self._opt_called = True

    def step(self) -> None:
        """Never called; schedulers check that it exists."""


def check_scheduler(scheduler: Any) -> Any:
    """``scheduler`` as given (None: no scheduler), refused at the boundary when it cannot be a learning-rate
    scheduler (no callable ``step``): ``TypeError`` naming ``scheduler``."""
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise TypeError(
            f"scheduler: expected a torch.optim.lr_scheduler stepped once per optimizer step (or None), "
            f"got {type(scheduler).__name__}"
        )
    return scheduler


def scheduler_optimizer(scheduler: Any) -> torch.optim.Optimizer | None:
    """The optimizer whose learning rate ``scheduler`` sets, unwrapped to the one whose step hooks run (accelerate's
    ``AcceleratedOptimizer``, which the Hugging Face Trainer binds its scheduler to, wraps the real one and runs no
    hooks of its own; Lightning's ``LightningOptimizer`` likewise). None when there is no such optimizer."""
    optimizer = getattr(scheduler, "optimizer", None)
    for _ in range(4):  # wrappers of wrappers, but never a cycle
        if isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "_optimizer_step_pre_hooks"):
            return optimizer
        inner = getattr(optimizer, "optimizer", None)
        optimizer = inner if inner is not None else getattr(optimizer, "_optimizer", None)
    return None


def scheduled_lr_peak(scheduler: Any, steps: int, share: Sequence[Any] = ()) -> float:
    """The largest learning rate (first group) ``scheduler`` will set over its next ``steps`` steps: a copy of it,
    bound to a stand-in for its optimizer, stepped ahead; the real scheduler, optimizer and parameters are not
    touched. The copy refers to the objects in ``share`` (e.g. the model, should a schedule be a bound method of
    it) instead of copying them. NaN for a scheduler that cannot be stepped without a metric
    (``ReduceLROnPlateau``) or copied."""
    optimizer = getattr(scheduler, "optimizer", None)
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not groups or type(scheduler).__name__ == "ReduceLROnPlateau":
        return math.nan
    stand_in = _OptimizerStandIn(groups)
    memo: dict[int, Any] = {id(obj): obj for obj in share}
    memo[id(optimizer)] = stand_in
    try:
        ahead = copy.deepcopy(scheduler, memo)
        peak = float(stand_in.param_groups[0]["lr"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(steps):
                ahead.step()
                peak = max(peak, float(stand_in.param_groups[0]["lr"]))
    except Exception:  # noqa: BLE001 - a scheduler we cannot copy gives no outlook; the run goes on
        log.debug("cannot step a copy of %s", type(scheduler).__name__, exc_info=True)
        return math.nan
    return peak if math.isfinite(peak) else math.nan


class InstabilitySignals:
    """Forward hooks measuring per-block instability signals on every ``every``-th training forward pass, on its
    first ``sample`` sequences. Give ``optimizer`` for the update-to-data ratio, the gradient RMS and the
    gradient-momentum cosine (read in the optimizer's step hooks) and the learning rate; give ``scheduler`` (a
    ``torch.optim.lr_scheduler`` stepped once per optimizer step, e.g. any Hugging Face schedule) for the largest
    learning rate it will set over the next ``horizon`` steps; without ``optimizer``, the scheduler's (unwrapped by
    :func:`scheduler_optimizer`) gives the step-hook quantities. ``read()`` returns the latest
    ``InstabilityReading``; ``history`` keeps the last ``keep``. ``remove()`` takes every hook out.

    ``schedule`` replaces the every-``every`` cadence: called at each training forward pass, it returns the step
    number to record that pass under, or None to skip it (the logger and the monitor measure the forward passes of
    the steps they will read, numbered as they number steps)."""

    def __init__(
        self,
        model: nn.Module,
        sample: int = 4,
        every: int = 10,
        optimizer: torch.optim.Optimizer | None = None,
        keep: int = 10_000,
        schedule: Callable[[], int | None] | None = None,
        scheduler: Any = None,
        horizon: int = HORIZON,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        for name, value in (("sample", sample), ("every", every), ("keep", keep), ("horizon", horizon)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        check_scheduler(scheduler)
        self.model, self.sample, self.every, self.horizon = model, sample, every, horizon
        self.optimizer = optimizer if optimizer is not None else scheduler_optimizer(scheduler)
        self.scheduler = scheduler
        self._shared = [model, *model.modules(), *model.parameters()] if scheduler is not None else []
        self.schedule = schedule
        self.history: deque[InstabilityReading] = deque(maxlen=keep)
        self._handles: list[Any] = []
        self._failed: set[str] = set()
        self._forwards = 0
        self._active = False
        self._pending: dict[str, Any] | None = None
        self._before: list[torch.Tensor] | None = None
        attention = [(name, m, attention_kind(m)) for name, m in model.named_modules()]
        attention = [(name, m, kind) for name, m, kind in attention if kind is not None]
        modules = dict(model.named_modules())
        owners = [name for name, m in modules.items() if m._parameters]
        self._blocks: list[_Block] = []
        self._index: dict[str, int] = {}
        for name, module, kind in attention:
            block = _block_name(name, owners)
            if block not in self._index:
                self._index[block] = len(self._blocks)
                self._blocks.append(_Block(block, modules.get(block, module)))
            self._attach(self._index[block], module, str(kind))
        self._outer: nn.Module | None = None
        for entry in _entry_modules(model, [m for _, m, _ in attention]):
            self._handles.append(entry.register_forward_pre_hook(self._guard("model", self._begin)))
            self._handles.append(entry.register_forward_hook(self._guard("output", self._end)))
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(self._guard("optimizer", self._before_step)))
            self._handles.append(self.optimizer.register_step_post_hook(self._guard("optimizer", self._after_step)))

    @property
    def blocks(self) -> tuple[str, ...]:
        return tuple(b.name for b in self._blocks)

    def read(self) -> InstabilityReading | None:
        return self.history[-1] if self.history else None

    @property
    def awaits_step(self) -> bool:
        """True while a reading measured on a forward pass waits for the optimizer step that completes it (the
        update ratio, the momentum cosine, the learning rate): a recorder holds its record until then."""
        return self.optimizer is not None and self._pending is not None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending = self._before = None

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _guard(self, what: str, hook: Callable[..., Any]) -> Callable[..., Any]:
        """``hook`` that logs its first failure (per ``what``) and never raises into the training loop (returning
        None then: the hook changes nothing)."""

        def guarded(*args: Any) -> Any:
            try:
                return hook(*args)
            except Exception:  # noqa: BLE001 - the user's loop must never die because of a measurement
                if what not in self._failed:
                    self._failed.add(what)
                    log.warning("instability signals: the %s hook failed; it measures nothing", what, exc_info=True)
                return None

        return guarded

    def _record(self, index: int, largest: float, entropy: float) -> None:
        if self._pending is not None:
            self._pending["max_logit"][index] = largest
            self._pending["entropy"][index] = entropy

    def _begin(self, module: nn.Module, args: Any) -> None:
        if self._outer is not None and self._outer is not module:
            return  # called inside the forward pass already begun (the model inside a wrapper's forward)
        self._outer = module  # (again after a forward pass that raised: that one never ended)
        self._active = False
        if not module.training:
            return
        self._forwards += 1
        if self.schedule is not None:
            step = self.schedule()
            if step is None:
                return
        elif (self._forwards - 1) % self.every:
            return
        else:
            step = self._forwards - 1
        n = len(self._blocks)
        self._active = True
        self._pending = {
            "step": int(step),
            "max_logit": np.full(n, np.nan),
            "entropy": np.full(n, np.nan),
            "log_z": math.nan,
            "log_z_max": math.nan,
        }

    def _end(self, module: nn.Module, args: Any, output: Any) -> None:
        if module is not self._outer:
            return
        self._outer = None
        if not self._active or self._pending is None:
            return
        self._active = False
        logits = output
        if not isinstance(logits, torch.Tensor):
            logits = getattr(output, "logits", None)
            if logits is None and isinstance(output, (tuple, list)) and output:
                logits = output[0]
        if isinstance(logits, torch.Tensor) and logits.is_floating_point() and logits.dim() >= 2:
            with torch.no_grad():
                log_z = torch.logsumexp(logits[: self.sample].detach().float(), dim=-1)
            self._pending["log_z"], self._pending["log_z_max"] = float(log_z.mean()), float(log_z.max())
        if self.optimizer is None:
            self._finish(np.full(len(self._blocks), np.nan), np.full(len(self._blocks), np.nan), math.nan)

    def _finish(
        self,
        update_ratio: np.ndarray,
        grad_rms: np.ndarray,
        eps: float,
        momentum_cos: np.ndarray | None = None,
        lr: float = math.nan,
    ) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        lr_ahead = math.nan
        if self.scheduler is not None:
            lr_ahead = scheduled_lr_peak(self.scheduler, self.horizon, self._shared)
            if not math.isfinite(lr_ahead) and "scheduler" not in self._failed:
                self._failed.add("scheduler")
                log.warning("instability signals: cannot look ahead in %s; no learning-rate outlook",
                            type(self.scheduler).__name__)
        self.history.append(
            InstabilityReading(
                step=pending["step"],
                blocks=self.blocks,
                max_logit=pending["max_logit"],
                entropy=pending["entropy"],
                log_z=pending["log_z"],
                log_z_max=pending["log_z_max"],
                update_ratio=update_ratio,
                grad_rms=grad_rms,
                eps=eps,
                momentum_cos=momentum_cos if momentum_cos is not None else np.full(len(self._blocks), np.nan),
                lr=lr,
                lr_ahead=lr_ahead,
            )
        )

    def _before_step(
        self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Measure before the update; given a closure (Lightning's automatic optimization: the forward pass and
        backward() run inside ``step()``, after this hook), measure when the closure has run instead."""
        self._before = None
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)  # args[0] is the optimizer itself
        if not callable(closure):
            self._measure_before(optimizer)
            return None
        measure = self._guard("optimizer", self._measure_before)

        def closure_then_measure(*closure_args: Any, **closure_kwargs: Any) -> Any:
            loss = closure(*closure_args, **closure_kwargs)
            measure(optimizer)
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_then_measure}
        return (args[0], closure_then_measure, *args[2:]), kwargs

    def _measure_before(self, optimizer: torch.optim.Optimizer) -> None:
        self._before = None
        if self._pending is None:
            return
        with torch.no_grad():
            self._before = [torch.cat([p.detach().reshape(-1).float() for p in b.params]) if b.params
                            else torch.zeros(0) for b in self._blocks]
            rms, cos = [], []
            for b in self._blocks:
                with_grad = [p for p in b.params if p.grad is not None]
                flat = [g.detach().reshape(-1).float() for g in (p.grad for p in with_grad) if g is not None]
                grads = torch.cat(flat) if flat else None
                rms.append(float(grads.square().mean().sqrt()) if grads is not None else math.nan)
                cos.append(_momentum_cos(optimizer, with_grad, grads))
        self._grad_rms = np.array(rms, dtype=float)
        self._momentum_cos = np.array(cos, dtype=float)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        before, self._before = self._before, None
        if before is None or self._pending is None:
            return
        ratios = []
        with torch.no_grad():
            for b, old in zip(self._blocks, before, strict=True):
                if not b.params:
                    ratios.append(math.nan)
                    continue
                new = torch.cat([p.detach().reshape(-1).float() for p in b.params])
                ratios.append(float((new - old).norm() / old.norm().clamp_min(1e-30)))
        group = optimizer.param_groups[0] if optimizer.param_groups else {}
        eps, lr = group.get("eps", math.nan), group.get("lr", math.nan)
        self._finish(
            np.array(ratios, dtype=float),
            self._grad_rms,
            float(eps) if isinstance(eps, float) else math.nan,
            momentum_cos=self._momentum_cos,
            lr=float(lr) if _is_number(lr) else math.nan,
        )

    # -- the three attention kinds --------------------------------------------------------------------------------

    def _attach(self, index: int, module: Any, kind: str) -> None:
        if kind == "mha":
            self._handles.append(
                module.register_forward_pre_hook(self._guard("attention", self._mha(index)), with_kwargs=True)
            )
        elif kind == "gpt2":
            hook = self._guard("attention", self._gpt2(index, module))
            self._handles.append(module.c_attn.register_forward_hook(hook))
        else:
            self._attach_qk(index, module)

    def _mha(self, index: int) -> Callable[..., None]:
        names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
                 "is_causal")

        def hook(module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if not self._active:
                return
            given = dict(zip(names, args, strict=False)) | kwargs
            query, key = given["query"], given["key"]
            if query.dim() == 2:
                query, key = query.unsqueeze(0), key.unsqueeze(0)
            elif not module.batch_first:
                query, key = query.transpose(0, 1), key.transpose(0, 1)
            query, key = query[: self.sample].detach(), key[: self.sample].detach()
            e, heads = module.embed_dim, module.num_heads
            if module._qkv_same_embed_dim:
                w_q, w_k = module.in_proj_weight[:e], module.in_proj_weight[e : 2 * e]
            else:
                w_q, w_k = module.q_proj_weight, module.k_proj_weight
            bias = module.in_proj_bias
            with torch.no_grad():
                q = F.linear(query, w_q, None if bias is None else bias[:e])
                k = F.linear(key, w_k, None if bias is None else bias[e : 2 * e])
                batch, lq, ls = q.shape[0], q.shape[1], k.shape[1]
                q = q.view(batch, lq, heads, -1).transpose(1, 2)
                k = k.view(batch, ls, heads, -1).transpose(1, 2)
                mask = self._mha_mask(given, batch, heads, lq, ls, q.device)
                self._record(index, *attention_statistics(q, k, 1.0 / math.sqrt(q.shape[-1]), mask))

        return hook

    def _mha_mask(
        self, given: dict[str, Any], batch: int, heads: int, lq: int, ls: int, device: torch.device
    ) -> torch.Tensor | None:
        mask: torch.Tensor | None = None
        attn_mask = given.get("attn_mask")
        if isinstance(attn_mask, torch.Tensor):
            m = attn_mask
            if m.dim() == 3:  # (batch * heads, Lq, Ls)
                m = m.view(-1, heads, lq, ls)[: self.sample]
            mask = _additive(m, device)
        elif given.get("is_causal"):
            mask = _causal(lq, ls, device)
        padding = given.get("key_padding_mask")
        if isinstance(padding, torch.Tensor):
            p = _additive(padding[: self.sample], device).view(batch, 1, 1, ls)
            mask = p if mask is None else mask + p
        return mask

    def _gpt2(self, index: int, attention: Any) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if not self._active:
                return
            qkv = output[: self.sample].detach()
            q, k = qkv.split(attention.split_size, dim=-1)[:2]
            head_dim = attention.head_dim
            batch, length = q.shape[0], q.shape[1]
            q = q.reshape(batch, length, -1, head_dim).transpose(1, 2)
            k = k.reshape(batch, length, -1, head_dim).transpose(1, 2)
            scale = 1.0 / math.sqrt(head_dim) if getattr(attention, "scale_attn_weights", True) else 1.0
            if getattr(attention, "scale_attn_by_inverse_layer_idx", False):
                scale /= float(attention.layer_idx + 1)
            self._record(index, *attention_statistics(q, k, scale, _causal(length, length, q.device)))

        return hook

    def _attach_qk(self, index: int, attention: Any) -> None:
        """Llama-style: the outputs of ``q_norm``/``k_norm`` (where present) or ``q_proj``/``k_proj``, rotated by
        the ``position_embeddings`` (cos, sin) the layer was called with, measured when the layer returns."""
        captured: dict[str, Any] = {}
        q_source = attention.q_proj if getattr(attention, "q_norm", None) is None else attention.q_norm
        k_source = attention.k_proj if getattr(attention, "k_norm", None) is None else attention.k_norm

        def begin(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured.clear()
            if self._active:
                captured["rope"] = kwargs.get("position_embeddings")

        def keep(which: str) -> Callable[..., None]:
            def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
                if self._active:
                    captured[which] = output[: self.sample].detach()

            return hook

        def end(module: nn.Module, args: Any, output: Any) -> None:
            q, k = captured.pop("q", None), captured.pop("k", None)
            if not self._active or q is None or k is None:
                return
            head_dim = int(attention.head_dim)
            batch, length = q.shape[0], q.shape[1]
            q = q.reshape(batch, length, -1, head_dim).transpose(1, 2)
            k = k.reshape(batch, k.shape[1], -1, head_dim).transpose(1, 2)
            rope = captured.get("rope")
            if isinstance(rope, (tuple, list)) and len(rope) == 2:
                cos, sin = (t[: self.sample].unsqueeze(1) for t in rope)
                q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            if k.shape[1] != q.shape[1]:  # grouped-query attention: each key head serves consecutive query heads
                k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            scale = getattr(attention, "scaling", None)
            scale = float(scale) if isinstance(scale, (int, float)) else 1.0 / math.sqrt(head_dim)
            mask = _causal(length, k.shape[2], q.device) if getattr(attention, "is_causal", True) else None
            self._record(index, *attention_statistics(q, k, scale, mask))

        self._handles.append(attention.register_forward_pre_hook(self._guard("attention", begin), with_kwargs=True))
        self._handles.append(q_source.register_forward_hook(self._guard("attention", keep("q"))))
        self._handles.append(k_source.register_forward_hook(self._guard("attention", keep("k"))))
        self._handles.append(attention.register_forward_hook(self._guard("attention", end)))


# Thresholds of ``warn_unstable``, chosen on benchmarks/instability/run.py (6-block GPT, seed 0, signals every 5
# steps) and checked on seed 1: the two runs without qk-layernorm at lr 1e-1 and 5e-2 passed a largest attention
# logit of 300 while growing >= 2x in 20 steps (from 4.5 to 309; from 95 to 328), 70 steps before the first one's
# loss spiked; no stable run (qk-layernorm twins, z-loss twin, healthy) reached more than 99 on seed 0 (healthy lr
# 1e-2); on held-out seed 1 the qk-layernorm lr 3e-1 z-loss twin reached 194 (a smaller margin, no false alarm).
# log Z: the rule reads the mean log Z over the sampled positions, not the largest: the head x10 + bias run
# (head_lr.py, in run.py's stable set) keeps learning while its largest log Z wanders up to 32 (seed 0) / 41 (seed
# 1) in 300 steps, one position's outlier moving 5 in 20 steps (the rule on the largest fired there at steps 230 /
# 150), while its mean stays <= 15 / 20; every other stable run keeps its mean <= 10; the diverged lr-1 runs reach
# 27-185. In those runs log Z rises with the loss, not before it (benchmarks/instability/precursor.py: no signal
# measured moves >= 20 steps before their spike in a way the stable qk-layernorm lr 3e-1 run does not): the log Z
# warning names the cause and the fix, after the spike.
LOGIT_LIMIT = 300.0
LOGIT_GROWTH = 2.0
LOG_Z_LIMIT = 30.0
LOG_Z_RISE = 5.0
LOOKBACK = 20
# The edge rule, chosen on run.py's seed 0 (qk-layernorm GPTs warmed up to lr 3e-1 and 1): the gradient-momentum
# cosine (mean over blocks, readings of the last 20 steps) falls from -0.1 .. -0.2 (healthy, qk-layernorm 1e-1 and
# 5e-2, drift runs) to <= -0.3 once the learning rate passes ~0.17 (the edge of stability); the lr-1 runs spiked once
# it had grown a further 2.1-2.4x (lr 0.36-0.41), the lr 3e-1 runs, stopped at 1.45-1.89x, did not. Held out: seed 1
# and six other warm-ups on both seeds (lr 1 over 200 and 500 steps, 0.5 and 0.3 over 300, 0.2 over 50, 0.3 over
# 20): 11 of 12 spikes of this GPT warned, 12-184 steps ahead, no false alarm. Not on a 2-block GPT at batch 8 (the
# cosine is noise there): its 3 spikes were warned late or not at all (README, "Instability signals").
EDGE_COS = -0.3
EDGE_RISE = 2.0

FIXES = {
    "max_logit": "add qk-layernorm (normalise queries and keys per head), or lower the learning rate / warm up longer",
    "log_z": "add a z-loss (1e-4 * logsumexp(logits)**2), or lower the learning rate / warm up longer",
    "edge": "lower the peak learning rate (end the warm-up near the current one), or warm up longer",
}


def reading_before(history: Sequence[InstabilityReading], steps: int) -> InstabilityReading | None:
    """The latest reading at least ``steps`` training steps before the last one: what the rules compare the last
    one with."""
    target = history[-1].step - steps
    for reading in reversed(history):
        if reading.step <= target:
            return reading
    return None


def edge_cosine(history: Sequence[InstabilityReading], lookback: int = LOOKBACK) -> tuple[float, np.ndarray]:
    """The edge rule's measure of oscillation: the gradient-momentum cosine averaged over the readings after
    :func:`reading_before` ``lookback`` steps (those naming the last reading's blocks) - (over the blocks too, per
    block). NaN while there is no such reading or no cosine was measured."""
    if not history:
        return math.nan, np.empty(0)
    latest, before = history[-1], reading_before(history, lookback)
    unmeasured = (math.nan, np.full(len(latest.blocks), np.nan))
    if before is None:
        return unmeasured
    recent = [r for r in history if r.step > before.step and r.blocks == latest.blocks]
    cos = np.array([r.momentum_cos for r in recent], dtype=float)
    if not cos.size or np.isnan(cos).all():
        return unmeasured
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a block never measured: its mean is NaN
        return float(np.nanmean(cos)), np.nanmean(cos, axis=0)


def warn_unstable(
    history: Sequence[InstabilityReading],
    logit_limit: float = LOGIT_LIMIT,
    logit_growth: float = LOGIT_GROWTH,
    log_z_limit: float = LOG_Z_LIMIT,
    log_z_rise: float = LOG_Z_RISE,
    lookback: int = LOOKBACK,
    edge_cos: float = EDGE_COS,
    edge_rise: float = EDGE_RISE,
) -> InstabilityWarning | None:
    """``unstable`` when a signal grows the way it does before divergence: a block's largest attention logit above
    ``logit_limit`` and at least ``logit_growth`` times what it was ``lookback`` steps earlier (attention-logit
    growth, fix: qk-layernorm), or the output's mean log Z above ``log_z_limit`` in magnitude having moved by
    ``log_z_rise`` in ``lookback`` steps (output-logit divergence, fix: z-loss), or the run at the edge of
    stability while its schedule keeps raising the learning rate: the gradient-momentum cosine, averaged over the
    blocks and the readings of the last ``lookback`` steps, at most ``edge_cos``, and the scheduler due to set at
    least ``edge_rise`` times the current learning rate within its horizon (fix: a lower peak or a longer warm-up).
    None while none holds, or while the history is shorter than ``lookback`` steps."""
    if not history:
        return None
    latest, before = history[-1], reading_before(history, lookback)
    if before is None or before.blocks != latest.blocks:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        growth = latest.max_logit / np.maximum(before.max_logit, 1e-12)
        grown = (latest.max_logit >= logit_limit) & (growth >= logit_growth)
    if grown.any():
        i = int(np.nanargmax(np.where(grown, latest.max_logit, -np.inf)))
        block = latest.blocks[i]
        return InstabilityWarning(
            kind="unstable", block=block, signal="max_logit", step=latest.step,
            value=float(latest.max_logit[i]), baseline=float(before.max_logit[i]), fix=FIXES["max_logit"],
            message=f"unstable: {block}'s largest attention logit grew from {before.max_logit[i]:.3g} to "
            f"{latest.max_logit[i]:.3g} in {latest.step - before.step} steps (warn above {logit_limit:g} "
            f"and x{logit_growth:g}); {FIXES['max_logit']}",
        )
    z_now, z_then = latest.log_z, before.log_z
    if abs(z_now) >= log_z_limit and abs(z_now - z_then) >= log_z_rise:
        return InstabilityWarning(
            kind="unstable", block="output", signal="log_z", step=latest.step, value=float(z_now),
            baseline=float(z_then), fix=FIXES["log_z"],
            message=f"unstable: the output's mean log Z moved from {z_then:.3g} to {z_now:.3g} in "
            f"{latest.step - before.step} steps (warn beyond +-{log_z_limit:g} after a move of {log_z_rise:g}); "
            f"{FIXES['log_z']}",
        )
    return _edge_warning(history, lookback, edge_cos, edge_rise)


def _edge_warning(
    history: Sequence[InstabilityReading], lookback: int, edge_cos: float, edge_rise: float
) -> InstabilityWarning | None:
    latest = history[-1]
    if not (latest.lr > 0 and latest.lr_ahead >= edge_rise * latest.lr):
        return None
    mean, per_block = edge_cosine(history, lookback)
    if not mean <= edge_cos:
        return None
    i = int(np.nanargmin(per_block))
    block = latest.blocks[i]
    return InstabilityWarning(
        kind="unstable", block=block, signal="edge", step=latest.step, value=mean, baseline=float(latest.lr),
        fix=FIXES["edge"],
        message=f"unstable: successive gradients point against each other (gradient-momentum cosine {mean:.2f} "
        f"over the blocks, {per_block[i]:.2f} in {block}) at learning rate {latest.lr:.3g}, and the schedule "
        f"will raise it to {latest.lr_ahead:.3g} (warn at cosine <= {edge_cos:g} and a rise x{edge_rise:g}): pushed "
        f"further past the edge of stability the loss spikes; end the warm-up near {latest.lr:.2g} (a lower peak "
        f"learning rate), or warm up longer",
    )


KEEPS_VERDICT = ("nonfinite", "no_gradient", "skipped", "amp_unscaled", "micro_batch")
"""Gradient verdicts an instability warning does not replace: the run has already diverged, or the read itself
is wrong (fix the read first)."""


def unstable_verdict(diagnosis: Diagnosis, warning: InstabilityWarning | None) -> Diagnosis:
    """The verdict to show and record: ``diagnosis``, or, when ``warning`` holds and the gradients have not already
    diverged (nor was the read wrong, :data:`KEEPS_VERDICT`), an ``unstable`` verdict naming the block, the signal
    and the fix; it keeps the gradient verdict's ratio and compared blocks."""
    if warning is None or diagnosis.kind in KEEPS_VERDICT:
        return diagnosis
    message = warning.message.removeprefix("unstable: ")
    if diagnosis.kind != "healthy":
        message += f" (the gradients read {diagnosis.kind}: {diagnosis.message})"
    return replace(diagnosis, kind="unstable", message=message, fix=warning.fix, layers=(warning.block,))

"""What a configuration costs, from arithmetic alone: parameters, activations saved for backward, memory.

A class server gives every student a kernel; a shared link or a slider must not be able to ask it for a net that
takes gigabytes (``kind=transformer&depth=60&width=512&batch_size=1024&seq_len=200`` made a 2.4 GB kernel, and
validating it by building it took 13-50 s). :func:`estimate` answers in microseconds, without torch: the counts
follow the modules of :mod:`.mlp`, :mod:`.transformer` and :mod:`.recurrent` layer by layer (the parameter count
is exact; tests compare it with the built model), and the activation count is an upper bound of what autograd
saves (tests compare it with the bytes PyTorch's saved-tensor hooks see).

Presets, the dashboard's controls and the CLI share :data:`KERNEL_BUDGET_MB`, :data:`CLASS_LIMITS` and
:func:`check_budget`: a link and a control reach the same configurations (issue 21: two comm updates, ``{max: 200}``
then ``{value: 200}``, used to give a 200-layer net where links stopped at 60).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..validation import LIMITS, Limit
from .activations import ACTIVATIONS
from .config import STRUCTURAL_FIELDS, NetConfig

__all__ = [
    "BASE_KERNEL_MB",
    "CLASS_LIMITS",
    "KERNEL_BUDGET_MB",
    "Cost",
    "check_budget",
    "check_class_change",
    "estimate",
    "parameter_count",
]

KERNEL_BUDGET_MB = 600.0
"""Memory one dashboard kernel may use: Python, torch, the widgets and the page (:data:`BASE_KERNEL_MB`) plus
the net being trained. Every configuration a link or a control can reach stays within it."""
BASE_KERNEL_MB = 380.0
"""A dashboard kernel before its net: ~360 MB measured for the default page (issue 21), rounded up."""
BYTES = 4  # float32
MAX_IN_FEATURES = 64  # the widest dataset (digits: 8x8 pixels)
MAX_OUT_FEATURES = 16  # the most classes (digits: 10; recall's tokens)
PEAK_FACTOR = 1.0
"""Peak activation memory over the saved count. The counts below are generous enough to cover backward's
transient gradients too: measured peak RSS growth of three training steps was 0.5-0.9 of the estimate (transformer,
MLP, LSTM near the budget)."""
CLASS_LIMITS: dict[str, Limit] = {name: limit.for_class() for name, limit in LIMITS.items() if limit.on_class_server}
"""What a shared link (``dashboard.presets``) or a control of the page may set, tighter than the library's
:data:`~gradwidgets.validation.LIMITS` where those would let a classroom server be asked for a 200-layer, 4096-wide
net. Code in a notebook keeps the library's limits."""
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2}
"""Tensors an optimizer keeps per parameter (momentum buffer; Adam's two moments)."""


@dataclass(frozen=True)
class Cost:
    """The cost of one configuration at one batch size."""

    parameters: int
    activations: int
    """Floats saved for backward in one training step, whole batch (an upper bound)."""
    memory_mb: float
    """Estimated peak memory of a dashboard kernel training it (:data:`BASE_KERNEL_MB` included)."""

    def within(self, budget_mb: float = KERNEL_BUDGET_MB) -> bool:
        return self.memory_mb <= budget_mb


def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _norm(config: NetConfig, width: int) -> int:
    return 0 if config.norm == "none" else 2 * width


def parameter_count(config: NetConfig, in_features: int = MAX_IN_FEATURES,
                    out_features: int = MAX_OUT_FEATURES) -> int:
    """The number of parameters :func:`gradwidgets.nets.build_model` gives ``config`` (exact)."""
    w, depth, bias = config.width, int(config.depth or 1), config.bias
    gated = ACTIVATIONS[config.activation].gated
    pre_normed = config.norm != "none" and config.norm_position == "pre"
    head = _linear(w, out_features, bias)
    if config.kind == "mlp":
        stack = depth * (_linear(w, (2 if gated else 1) * w, bias) + _norm(config, w))
        return _linear(in_features, (2 if gated else 1) * w, bias) + stack + (2 * w if pre_normed else 0) + head
    if config.kind == "transformer":
        hidden = max(1, 8 * w // 3) if gated else 4 * w
        attention = 3 * w * w + (3 * w if bias else 0) + _linear(w, w, bias)
        mlp = _linear(w, (2 if gated else 1) * hidden, bias) + _linear(hidden, w, bias)
        block = attention + 2 * _norm(config, w) + mlp
        return _linear(in_features, w, bias) + config.seq_len * w + depth * block + (2 * w if pre_normed else 0) + head
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[config.cell]
    cells = sum(gates * w * ((in_features if layer == 0 else w) + w) + (2 * gates * w if bias else 0)
                for layer in range(depth))
    norms = depth * 2 * w if config.norm == "layer" else 0
    return cells + norms + head


def _activations_per_sample(config: NetConfig, in_features: int) -> int:
    """Floats autograd may save per sample for one forward pass (generous per-layer counts)."""
    w, depth = config.width, int(config.depth or 1)
    if config.kind == "mlp":
        # per layer: its input, the pre-activation, the activation's output, norm stats; a gated layer also
        # keeps both halves of its doubled projection, the gate's activation and the product
        per_layer = (18 if ACTIVATIONS[config.activation].gated else 5) * w
        return in_features + per_layer * (depth + 1)
    if config.kind == "transformer":
        seq, heads = config.seq_len, config.heads
        hidden = 8 * w // 3 + 1 if ACTIVATIONS[config.activation].gated else 4 * w
        # per token and block: norms, q/k/v, attention output, projections, residual sums (~12 w), the MLP's
        # hidden before and after its activation (4 hidden: a gate keeps both halves); per head: scores and
        # softmax (2 seq)
        per_block = seq * (12 * w + 4 * hidden + 2 * heads * seq)
        return seq * (in_features + 2 * w) + depth * per_block
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[config.cell]
    # per step and layer: the gate pre-activations and outputs, the state(s), the norm
    return config.seq_len * (in_features + depth * (2 * gates * w + 4 * w))


def estimate(config: NetConfig, batch_size: int, optimizer: str = "adam", in_features: int = MAX_IN_FEATURES,
             out_features: int = MAX_OUT_FEATURES) -> Cost:
    """The cost of training ``config`` at ``batch_size`` (defaults: the widest data, the hungriest optimizer)."""
    parameters = parameter_count(config, in_features, out_features)
    activations = batch_size * _activations_per_sample(config, in_features)
    # weight, gradient, the optimizer's state and one transient of its update (foreach ops allocate one)
    per_parameter = 3 + OPTIMIZER_STATES.get(optimizer, 2)
    model_bytes = parameters * per_parameter * BYTES + PEAK_FACTOR * activations * BYTES
    return Cost(parameters, activations, BASE_KERNEL_MB + model_bytes / 2**20)


def check_budget(config: NetConfig, batch_size: int, optimizer: str = "adam",
                 budget_mb: float = KERNEL_BUDGET_MB) -> None:
    """``ValueError`` naming the cost if training ``config`` at ``batch_size`` does not fit the budget."""
    cost = estimate(config, batch_size, optimizer)
    if not cost.within(budget_mb):
        raise ValueError(_over_budget(cost, batch_size, budget_mb))


def _over_budget(cost: Cost, batch_size: object, budget_mb: float) -> str:
    return (
        f"this net needs about {cost.memory_mb:,.0f} MB at batch_size {batch_size} "
        f"({cost.parameters:,} parameters), over the {budget_mb:.0f} MB a kernel may use here; "
        "use a smaller depth, width, seq_len or batch_size"
    )


def _beyond(limit: Limit, value: float) -> float:
    """How far ``value`` lies outside ``limit`` (0 inside)."""
    return max(limit.low - value, value - limit.high, 0.0)


def check_class_change(current: Mapping[str, Any], changes: Mapping[str, Any],
                       budget_mb: float = KERNEL_BUDGET_MB) -> None:
    """``ValueError`` naming the field if a control's ``changes`` to the settings ``current`` (a session's
    ``describe()``: net fields plus ``batch_size`` and ``optimizer``) leave the class's limits: a value outside
    :data:`CLASS_LIMITS`, or a net over the kernel budget.

    A setting that code already took past a limit (``Playground(depth=100)`` in a notebook) may move back towards
    it, never further: the dashboard's settings are always within the limits, so there every step out is refused.
    """
    for name, value in changes.items():
        limit = CLASS_LIMITS.get(name)
        if limit is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # not a capped field, or not a number: the session's own validation names the problem
        outside = _beyond(limit, float(value))
        if outside > 0 and outside >= _beyond(limit, float(current.get(name, value))):
            raise ValueError(f"{name} should be {limit.describe()} from the controls (the class server's limit), "
                             f"got {value!r}")
    settings = {**current, **changes}
    try:
        after, before = _settings_cost(settings), _settings_cost(current)
    except ValueError:
        return  # an invalid combination: the session refuses it with its own message
    if not after.within(budget_mb) and after.memory_mb > before.memory_mb:
        raise ValueError(_over_budget(after, settings.get("batch_size"), budget_mb))


def _settings_cost(settings: Mapping[str, Any]) -> Cost:
    config = NetConfig().replace(**{k: v for k, v in settings.items() if k in STRUCTURAL_FIELDS})
    return estimate(config, int(settings.get("batch_size", 1)), str(settings.get("optimizer", "adam")))

"""Turn a :class:`GradientStats` reading into a plain-language verdict with the number behind it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .stats import GradientStats

__all__ = ["DIAGNOSES", "Diagnosis", "diagnose", "format_number"]

DIAGNOSES = (
    "healthy",
    "vanishing",
    "exploding",
    "frozen",
    "dead",
    "nonfinite",
    "no_gradient",
    "unused",
    "skipped",
    "inconclusive",
)

VANISHING_RATIO = 1e-3
"""First block's gradient below this fraction of the last block's: early layers learn 1000x slower."""
EXPLODING_RATIO = 1e3
EXPLODING_NORM = 1e3
"""A per-layer gradient norm above this is far outside what any sane loss scale produces."""
UNDERFLOW = 1e-12
NEVER_LEARNED = 1e-3
"""A layer "never learned" when its weights moved less than this fraction of the most-moved layer's drift."""
MIN_STEPS_FOR_DRIFT = 20


@dataclass(frozen=True)
class Diagnosis:
    """``kind`` is one of :data:`DIAGNOSES`; ``message`` says what is happening, ``fix`` what to try.

    ``ratio`` is the first live block's gradient norm divided by the last one's, over the repeated blocks of
    the body (embeddings, heads and norms left out; ``nan`` when it cannot be formed); ``compared`` names those
    two blocks (``("transformer.h.0", "transformer.h.11")``); ``time_ratio`` the same through time for
    recurrent nets; ``layers`` names the layers concerned.

    Kinds beyond the gradient-flow ones: ``no_gradient`` (nothing received a gradient: read before
    ``backward()`` or after ``zero_grad()``), ``unused`` (trainable layers got no gradient this step: a branch
    the forward pass skipped), ``skipped`` (AMP: inf/NaN in the scaled gradients, a step ``GradScaler``
    skips), ``inconclusive`` (only one layer measured: nothing to compare).
    """

    kind: str
    message: str
    fix: str
    ratio: float
    layers: tuple[str, ...] = ()
    time_ratio: float | None = None
    compared: tuple[str, ...] = ()

    @property
    def headline(self) -> str:
        return {
            "healthy": "Healthy gradient flow",
            "vanishing": "Vanishing gradients",
            "exploding": "Exploding gradients",
            "frozen": "Frozen layers (by design)",
            "dead": "Dead layers",
            "nonfinite": "Training diverged (inf/NaN)",
            "no_gradient": "No gradient to read",
            "unused": "Layers unused this step",
            "skipped": "AMP skipped this step",
            "inconclusive": "Nothing to compare",
        }[self.kind]

    def to_dict(self) -> dict[str, Any]:
        """The verdict as stored in a run file: every field (tuples as lists) plus the ``headline``."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        out["headline"] = self.headline
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Diagnosis:
        """The inverse of :meth:`to_dict`, checked (a run file may be damaged or forged): ``kind`` one of
        :data:`DIAGNOSES`, text fields strings, numbers numbers, name lists lists of strings. Keys it does not know
        (``headline``, fields of a newer version) are ignored; a missing optional field takes its default.
        Raises ``ValueError`` naming the field."""
        if not isinstance(data, dict):
            raise ValueError(f"a verdict must be a mapping, got {type(data).__name__}")
        kind = data.get("kind")
        if kind not in DIAGNOSES:
            raise ValueError(f"verdict kind must be one of {list(DIAGNOSES)}, got {kind!r}")
        values: dict[str, Any] = {"kind": kind}
        for field in dataclasses.fields(cls):
            if field.name == "kind" or field.name not in data:
                continue
            value = data[field.name]
            default = field.default
            if isinstance(default, tuple) or field.name in ("layers", "compared"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"verdict field {field.name!r} must be a list of strings, got {value!r:.80}")
                value = tuple(value)
            elif field.name in ("message", "fix") or isinstance(default, str):
                if not isinstance(value, str):
                    raise ValueError(f"verdict field {field.name!r} must be a string, got {type(value).__name__}")
            elif value is not None or default is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"verdict field {field.name!r} must be a number, got {value!r:.80}")
                value = float(value)
            values[field.name] = value
        for name in ("message", "fix"):
            values.setdefault(name, "")
        values.setdefault("ratio", math.nan)
        return cls(**values)


def format_number(value: float) -> str:
    """Compact and honest: ``0.25``, ``3.2e-08``, ``0`` and ``nan`` as they are."""
    if value is None or not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if 0.01 <= abs(value) < 1000:
        return f"{value:.3g}"
    return f"{value:.1e}"


def _config_value(config: Any, name: str, default: Any = None) -> Any:
    return getattr(config, name, default) if config is not None else default


def _vanishing_fix(config: Any) -> str:
    kind = _config_value(config, "kind")
    if kind == "rnn":
        cell = _config_value(config, "cell")
        if cell == "lstm":
            return "Open the LSTM's forget gate: set its bias to 1-3 so the cell state carries the gradient back."
        if cell == "rnn":
            return "Use an LSTM (forget-gate bias 1-3) or GRU, or a ReLU RNN with identity recurrent init."
        return "Shorten the sequence or add a path that skips time steps."
    if kind == "transformer":
        return "Put the residual connections and LayerNorm back: deep attention stacks need both."
    activation = _config_value(config, "activation")
    if activation == "sigmoid":
        # Measured (notebook 1): no unit is saturated in a deep default-init sigmoid net; each layer multiplies
        # the gradient by slope (~1/4) x weight scale (~0.58), and the outputs' 0.5 mean shrinks the signal too.
        return (
            "Each sigmoid layer multiplies the gradient by its slope (at most 1/4) times the weights' scale, and "
            "its outputs are not centred (mean 0.5): switch to ReLU/GELU with He init, or add pre-norm "
            "normalization (LayerNorm/BatchNorm) or skip connections."
        )
    if activation == "tanh":
        return (
            "Each tanh layer multiplies the gradient by its slope times the weights' scale: use Xavier init to keep "
            "that product near 1, or ReLU/GELU with He init, skip connections or normalization."
        )
    if activation in ("relu", "leaky_relu") and _config_value(config, "init") in ("default", "normal"):
        return "Use He (kaiming) initialization, which keeps ReLU signals the same size layer to layer."
    return (
        "Use a non-saturating activation (ReLU/GELU) with He/Xavier init, or add skip connections or "
        "normalization."
    )


def _ratio(stats: GradientStats, live_rows: np.ndarray) -> tuple[float, tuple[str, ...], np.ndarray, np.ndarray]:
    """First live block's gradient norm / last live block's; the two blocks' names; live block ids and norms."""
    block_ids = stats.block_indices()
    if not len(block_ids):
        return float("nan"), (), block_ids, np.zeros(0)
    block_norm = stats.block_grad_norm()
    live = np.array([bool(live_rows[stats.blocks == b].any()) for b in block_ids])
    live_ids, live_norm = block_ids[live], block_norm[live]
    if len(live_norm) < 2 or not np.isfinite(live_norm[-1]) or live_norm[-1] <= 0:
        return float("nan"), (), live_ids, live_norm
    names = dict(zip(block_ids.tolist(), stats.block_names(), strict=True))
    compared = (names[int(live_ids[0])], names[int(live_ids[-1])])
    return float(live_norm[0] / live_norm[-1]), compared, live_ids, live_norm


def diagnose(stats: GradientStats, history: Any = None, config: Any = None) -> Diagnosis:
    """Classify a reading, first match wins: ``skipped > nonfinite > no_gradient > exploding > vanishing >
    dead > unused > frozen > inconclusive > healthy``.

    ``history`` (anything with ``len()``, e.g. a session's history) enables the "layers that never learned"
    check, which needs training to have run a while. ``config`` (a :class:`NetConfig`) tailors the fix.
    """
    if not isinstance(stats, GradientStats):
        raise ValueError(f"stats must be a GradientStats, got {type(stats).__name__}")
    names = np.asarray(stats.names, dtype=object)
    grad = stats.grad_norm
    trainable = stats.trainable
    live_rows = trainable & stats.has_grad
    time_ratio = stats.time_ratio()
    ratio, compared, live_ids, live_norm = _ratio(stats, live_rows)
    between = f" ({compared[0]} vs {compared[1]})" if compared else ""

    def result(kind: str, message: str, fix: str, layers: Any = ()) -> Diagnosis:
        return Diagnosis(kind, message, fix, ratio, tuple(str(n) for n in layers), time_ratio, compared)

    loss_finite = math.isnan(stats.loss) or math.isfinite(stats.loss)
    bad = live_rows & ~np.isfinite(grad)
    if stats.skipped and loss_finite:
        return result(
            "skipped",
            f"AMP skipped this step (step {stats.step}): the scaled gradients hold inf/NaN at loss scale "
            f"{stats.grad_scale:g}, so GradScaler skips optimizer.step() and lowers the scale. "
            "This is not divergence.",
            "Nothing to fix if it happens now and then (often in the first steps); if every step is skipped, "
            "check the loss for inf/NaN and lower the learning rate.",
            names[bad],
        )
    if bad.any() or not loss_finite:
        where = f" in {len(names[bad])} layer(s)" if bad.any() else " (the loss)"
        return result(
            "nonfinite",
            f"Gradients became inf/NaN{where} at step {stats.step}: training has diverged.",
            "Reset, then lower the learning rate, clip gradients, or use a smaller initialization.",
            names[bad],
        )

    if trainable.any() and not live_rows.any():
        return result(
            "no_gradient",
            f"No layer received a gradient since the last read (step {stats.step}): the read came before "
            "loss.backward(), or after optimizer.zero_grad(). Nothing was measured.",
            "Read right after loss.backward() and before optimizer.zero_grad(): probe.read(loss) or "
            "monitor.update(loss); with AMP pass scaler=scaler and read before scaler.step().",
        )

    largest = float(grad[live_rows].max()) if live_rows.any() else 0.0
    time_exploding = time_ratio is not None and time_ratio > EXPLODING_RATIO
    if largest > EXPLODING_NORM or ratio > EXPLODING_RATIO or time_exploding:
        if time_exploding:
            detail = f"the gradient grows {format_number(time_ratio)}x on its way back through time"
        elif ratio > EXPLODING_RATIO:
            detail = f"the first block's gradient is {format_number(ratio)}x the last block's{between}"
        else:
            detail = f"a layer's gradient norm reached {format_number(largest)}"
        scaled = " (already divided by the AMP loss scale)" if stats.grad_scale != 1.0 else ""
        return result(
            "exploding",
            f"Exploding gradients: {detail}{scaled}; the next steps will overshoot.",
            "Lower the learning rate, clip gradients (clip_grad_norm_), or use a smaller init (Xavier/He).",
            names[live_rows & (grad > EXPLODING_NORM)],
        )

    stack = live_rows & (stats.blocks >= 0) & np.array([r != "norm" for r in stats.roles])
    zero = stack & (grad == 0)
    if zero.any():
        nonzero = grad[stack & (grad > 0)]
        smallest = float(nonzero.min()) if len(nonzero) else 0.0
        # Underflow leaves a geometric trail: the layers still reached carry tiny gradients. A clean cut from
        # healthy to exactly zero (or a stack with no gradient at all) means units are dead instead.
        if len(nonzero) and smallest / float(nonzero.max()) < UNDERFLOW:
            return result(
                "vanishing",
                f"Vanishing gradients: {int(zero.sum())} layer(s) get exactly zero gradient, the product of "
                "per-layer factors underflowed to 0 on the way back.",
                _vanishing_fix(config),
                names[zero],
            )
        return result(
            "dead",
            f"Dead layers: {int(zero.sum())} trainable layer(s) get exactly zero gradient: no unit passes a "
            "signal (dead ReLUs), so nothing flows back through them.",
            "Lower the learning rate, use leaky ReLU/GELU, or re-initialize (He init, small positive bias).",
            names[zero],
        )

    if time_ratio is not None and time_ratio < VANISHING_RATIO:
        return result(
            "vanishing",
            f"Vanishing through time: the gradient reaching step 0 is {format_number(time_ratio)} of the "
            "last step's, so the net cannot learn what happened early in the sequence.",
            _vanishing_fix(config),
        )
    if ratio < VANISHING_RATIO:
        weak_blocks = live_ids[live_norm < VANISHING_RATIO * live_norm[-1]]
        weak = names[np.isin(stats.blocks, weak_blocks) & stack]
        return result(
            "vanishing",
            f"Vanishing gradients: the first layer receives {format_number(ratio)} of the gradient that "
            f"reaches the last layer{between}, so the early layers barely learn.",
            _vanishing_fix(config),
            weak,
        )

    if history is not None and len(history) >= MIN_STEPS_FOR_DRIFT and np.isfinite(stats.drift).any():
        drift = np.where(stack, stats.drift, np.nan)
        most = np.nanmax(drift) if np.isfinite(drift).any() else 0.0
        stuck = stack & (drift < NEVER_LEARNED * most)
        if most > 0 and stuck.any():
            moved = float(np.nanmax(drift[stuck]))
            amount = "not at all" if moved == 0 else f"by at most {format_number(moved)} (relative)"
            return result(
                "dead",
                f"Layers that never learned: {int(stuck.sum())} layer(s) moved {amount} from their initial "
                f"weights while another moved {format_number(float(most))}. The loss may fall, but those layers "
                "are dead weight.",
                "Check that those layers are handed to the optimizer and not frozen by mistake; if they are, their "
                "gradient is too small to move them: " + _vanishing_fix(config),
                names[stuck],
            )

    unused = trainable & ~stats.has_grad
    if unused.any():
        had = unused & (stats.had_grad if stats.had_grad is not None else np.zeros(len(names), bool))
        parts = []
        if had.any():
            parts.append(f"{int(had.sum())} had one at an earlier step (a branch taken only sometimes)")
        if (unused & ~had).any():
            parts.append(f"{int((unused & ~had).sum())} never had one (not part of the loss's graph yet)")
        return result(
            "unused",
            f"Unused this step: {int(unused.sum())} trainable layer(s) got no gradient because the forward pass "
            f"did not use them; {' and '.join(parts)}. The layers that were used look fine"
            + ("." if math.isnan(ratio) else f" (first/last ratio {format_number(ratio)}{between})."),
            "Nothing to fix for conditional branches (mixture-of-experts, auxiliary heads); if those layers should "
            "run every step, check the forward() that skips them.",
            names[unused],
        )

    frozen = stats.frozen
    if frozen.any():
        return result(
            "frozen",
            f"{int(frozen.sum())} layer(s) are frozen (requires_grad=False): no gradient by design, which is not "
            "vanishing. The trainable layers are healthy"
            + ("." if math.isnan(ratio) else f" (first/last ratio {format_number(ratio)}{between})."),
            "Nothing to fix; unfreeze them if they should learn.",
            names[frozen],
        )
    if math.isnan(ratio) and time_ratio is None:
        measured = names[live_rows]
        only = f" ({measured[0]}, gradient norm {format_number(float(grad[live_rows][0]))})" if len(measured) else ""
        return result(
            "inconclusive",
            f"Nothing to compare: the body has fewer than two layers with a gradient{only}, so there is no "
            "first-to-last ratio to judge vanishing or exploding by. The norms themselves are finite.",
            "Watch a model with at least two hidden layers (or stacked RNN layers), or compare the numbers over "
            "training steps.",
        )
    if math.isnan(ratio):
        message = "Healthy: no layer's gradient is vanishing, exploding or stuck at zero."
    else:
        message = f"Healthy: the first layer gets {format_number(ratio)}x the last layer's gradient{between}."
    if time_ratio is not None:
        message += f" Through time, step 0 gets {format_number(time_ratio)}x the last step's."
    return result("healthy", message, "Nothing to fix.")

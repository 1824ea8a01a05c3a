"""Turn a :class:`GradientStats` reading into a plain-language verdict with the number behind it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .probe import GradientStats

__all__ = ["DIAGNOSES", "Diagnosis", "diagnose", "format_number"]

DIAGNOSES = ("healthy", "vanishing", "exploding", "frozen", "dead", "nonfinite")

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

    ``ratio`` is the first trainable block's gradient norm divided by the last one's (``nan`` when it cannot
    be formed); ``time_ratio`` the same through time for recurrent nets; ``layers`` names the layers concerned.
    """

    kind: str
    message: str
    fix: str
    ratio: float
    layers: tuple[str, ...] = ()
    time_ratio: float | None = None

    @property
    def headline(self) -> str:
        return {
            "healthy": "Healthy gradient flow",
            "vanishing": "Vanishing gradients",
            "exploding": "Exploding gradients",
            "frozen": "Frozen layers (by design)",
            "dead": "Dead layers",
            "nonfinite": "Training diverged (inf/NaN)",
        }[self.kind]


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


def diagnose(stats: GradientStats, history: Any = None, config: Any = None) -> Diagnosis:
    """Classify a reading: ``nonfinite > exploding > vanishing > dead > frozen > healthy``, first match wins.

    ``history`` (anything with ``len()``, e.g. a session's history) enables the "layers that never learned"
    check, which needs training to have run a while. ``config`` (a :class:`NetConfig`) tailors the fix.
    """
    if not isinstance(stats, GradientStats):
        raise ValueError(f"stats must be a GradientStats, got {type(stats).__name__}")
    names = np.asarray(stats.names, dtype=object)
    grad = stats.grad_norm
    trainable = stats.trainable & stats.has_grad
    time_ratio = stats.time_ratio()

    block_ids = stats.block_indices()
    block_norm = stats.block_grad_norm()
    block_live = ~stats.block_frozen() if len(block_ids) else np.zeros(0, bool)
    live_norm = block_norm[block_live]
    ratio = float("nan")
    if len(live_norm) >= 2 and np.isfinite(live_norm[-1]) and live_norm[-1] > 0:
        ratio = float(live_norm[0] / live_norm[-1])

    def result(kind: str, message: str, fix: str, layers: Any = ()) -> Diagnosis:
        return Diagnosis(kind, message, fix, ratio, tuple(str(n) for n in layers), time_ratio)

    bad = trainable & ~np.isfinite(grad)
    if bad.any() or not (math.isnan(stats.loss) or math.isfinite(stats.loss)):
        where = f" in {len(names[bad])} layer(s)" if bad.any() else " (the loss)"
        return result(
            "nonfinite",
            f"Gradients became inf/NaN{where} at step {stats.step}: training has diverged.",
            "Reset, then lower the learning rate, clip gradients, or use a smaller initialization.",
            names[bad],
        )

    largest = float(grad[trainable].max()) if trainable.any() else 0.0
    time_exploding = time_ratio is not None and time_ratio > EXPLODING_RATIO
    if largest > EXPLODING_NORM or ratio > EXPLODING_RATIO or time_exploding:
        if time_exploding:
            detail = f"the gradient grows {format_number(time_ratio)}x on its way back through time"
        elif ratio > EXPLODING_RATIO:
            detail = f"the first layer's gradient is {format_number(ratio)}x the last layer's"
        else:
            detail = f"a layer's gradient norm reached {format_number(largest)}"
        return result(
            "exploding",
            f"Exploding gradients: {detail}; the next steps will overshoot.",
            "Lower the learning rate, clip gradients (clip_grad_norm_), or use a smaller init (Xavier/He).",
            names[trainable & (grad > EXPLODING_NORM)],
        )

    stack = trainable & (stats.blocks >= 0) & np.array([r != "norm" for r in stats.roles])
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
        weak_blocks = block_ids[block_live][live_norm < VANISHING_RATIO * live_norm[-1]]
        weak = names[np.isin(stats.blocks, weak_blocks) & stack]
        return result(
            "vanishing",
            f"Vanishing gradients: the first layer receives {format_number(ratio)} of the gradient that "
            "reaches the last layer, so the early layers barely learn.",
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

    frozen = stats.frozen
    if frozen.any():
        return result(
            "frozen",
            f"{int(frozen.sum())} layer(s) are frozen (requires_grad=False): no gradient by design, which is not "
            "vanishing. The trainable layers are healthy"
            + ("." if math.isnan(ratio) else f" (first/last ratio {format_number(ratio)})."),
            "Nothing to fix; unfreeze them if they should learn.",
            names[frozen],
        )
    if math.isnan(ratio):
        message = "Healthy: no layer's gradient is vanishing, exploding or stuck at zero."
    else:
        message = f"Healthy: the first layer gets {format_number(ratio)}x the last layer's gradient."
    if time_ratio is not None:
        message += f" Through time, step 0 gets {format_number(time_ratio)}x the last step's."
    return result("healthy", message, "Nothing to fix.")

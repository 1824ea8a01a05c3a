"""What to try, in words: the fix a verdict proposes, tailored to the net's configuration when it is known.

Kept apart from :mod:`.diagnosis` (which decides *what* is wrong) so the advice can be read, and corrected by a
teacher, in one place.
"""

from __future__ import annotations

from typing import Any

from .stats import GradientStats

__all__ = ["config_value", "exploding_fix", "vanishing_fix"]


def config_value(config: Any, name: str, default: Any = None) -> Any:
    return getattr(config, name, default) if config is not None else default


def vanishing_fix(config: Any) -> str:
    kind = config_value(config, "kind")
    if kind == "rnn":
        cell = config_value(config, "cell")
        if cell == "lstm":
            return "Open the LSTM's forget gate: set its bias to 1-3 so the cell state carries the gradient back."
        if cell == "rnn":
            return "Use an LSTM (forget-gate bias 1-3) or GRU, or a ReLU RNN with identity recurrent init."
        return "Shorten the sequence or add a path that skips time steps."
    if kind == "transformer":
        return "Put the residual connections and LayerNorm back: deep attention stacks need both."
    activation = config_value(config, "activation")
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
    if activation in ("relu", "leaky_relu") and config_value(config, "init") in ("default", "normal"):
        return "Use He (kaiming) initialization, which keeps ReLU signals the same size layer to layer."
    return "Use a non-saturating activation (ReLU/GELU) with He/Xavier init, or add skip connections or normalization."


def exploding_fix(stats: GradientStats, config: Any) -> str:
    batch_norm = any("BatchNorm" in k for k in stats.kinds) or config_value(config, "norm") == "batch"
    if batch_norm and not config_value(config, "residual", False):
        # Measured: deep ReLU + BatchNorm (depth 40) reads 4e3 at He init and 5.4e3 at He x 0.1 - BatchNorm makes
        # each layer scale-invariant, so a smaller init or learning rate does not change the ratio; a skip
        # connection brings it to 15.
        return (
            "BatchNorm makes every layer scale-invariant, so a smaller init or learning rate does not change this "
            "ratio: add skip connections (residual blocks), or clip gradients while it settles."
        )
    return "Lower the learning rate, clip gradients (clip_grad_norm_), or use a smaller init (Xavier/He)."

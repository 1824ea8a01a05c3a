"""Turn a :class:`GradientStats` reading into a plain-language verdict with the number behind it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .fixes import exploding_fix, vanishing_fix
from .optimizer_reads import optimizer_facts, predicted_update_ratio
from .stacks import by_design_zero, display_name, pick_stack, ratio_series, stack_ratios
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
    "diverging",
    "amp_unscaled",
    "micro_batch",
    "eps_limited",
    "lr_too_small",
    "unstable",
)

VANISHING_RATIO = 1e-3
"""First block's gradient below this fraction of the last block's (within one stack): early layers learn 1000x
slower."""
EXPLODING_RATIO = 1e3
"""First block's gradient above this multiple of the last block's (within one stack): exploding over depth. Calibrated
on the diagnosis benchmark: ReLU + BatchNorm at depth 60 settles near 2e2 once trained, and learns."""
EXPLODING_NORM = 1e4
"""A body layer's gradient norm above this is exploding whatever the ratio (stems and heads are left out: a
healthy ResNet-50's ``conv1`` reaches 1.4e3 at batch 4)."""
AMP_SCALE_NORM = 3e2
"""Every layer's gradient this large (median), with an ordinary first/last ratio: a GradScaler's loss scale
(2**16 by default) is still in the gradients."""
UNDERFLOW = 1e-12
DEAD_FRACTION = 0.9
"""A layer whose output units get exactly zero gradient in this fraction (or more) is (mostly) dead."""
NEVER_LEARNED = 1e-4
"""A layer "never learned" when its weights moved less than this fraction of the most-moved layer's drift..."""
NEVER_LEARNED_ABS = 1e-2
"""... and less than 1% of their own size since the start."""
MIN_STEPS_FOR_DRIFT = 20
UPDATE_RATIO_TOO_SMALL = 1e-5
"""Update-to-data ratio (``|step| / |w|``, healthy near 1e-3) below which a layer barely moves."""
UPDATE_RATIO_DIVERGING = 0.3
"""Update-to-data ratio above which each step rewrites a third of the weights: the learning rate diverges (SGD-like
optimizers; an adaptive one moves every entry by about lr, so it gets :data:`UPDATE_RATIO_DIVERGING_ADAPTIVE`)."""
UPDATE_RATIO_DIVERGING_ADAPTIVE = 1.0
"""Adam/Adagrad/RMSprop: a first step as large as the weights themselves (Adagrad at lr 0.05 reads 0.4 and learns)."""
EPS_LIMITED_SHARE = 0.8
EPS_REACH = 1e-8
"""Below ``EPS_REACH * eps`` (1e-16 for Adam's 1e-8) a layer's gradient has vanished, not merely met eps."""
"""At most this share of the body may be below eps for the verdict to blame eps (beyond it, the gradient)."""
LOSS_FLAT = 0.05
"""The loss is "at chance" when, after :data:`MIN_STEPS_FOR_DRIFT` reads, it is within 5% of where it started."""


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
    skips), ``inconclusive`` (only one layer measured: nothing to compare), ``diverging`` (the learning rate is
    too large: steps rewrite the weights, loss and gradients grow), ``amp_unscaled`` (read without ``scaler=``:
    the gradients still carry the loss scale), ``micro_batch`` (the gradients were added onto the previous
    read's: a read between micro-batches of gradient accumulation), ``eps_limited`` (an Adam-family optimizer's
    eps exceeds a layer's gradient RMS, so its step is ``lr * g / eps``), ``lr_too_small`` (update-to-data ratio
    far below ~1e-3), ``unstable`` (an instability signal grows the way it does before a loss spike: attention
    logits or the output's log Z; see :mod:`gradwidgets.core.signals`). ``stack`` names the stack
    (``decoder.block``) the ratio was formed in when the model has several (an encoder and a decoder).
    """

    kind: str
    message: str
    fix: str
    ratio: float
    layers: tuple[str, ...] = ()
    time_ratio: float | None = None
    compared: tuple[str, ...] = ()
    stack: str = ""

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
            "diverging": "Learning rate diverging",
            "amp_unscaled": "AMP loss scale still in the gradients",
            "micro_batch": "Read between micro-batches",
            "eps_limited": "Steps limited by the optimizer's eps",
            "lr_too_small": "Learning rate too small",
            "unstable": "Unstable: a loss spike may follow",
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


def _losses(history: Any) -> np.ndarray:
    try:
        loss = np.asarray(history.loss, dtype=np.float64)
    except (AttributeError, TypeError, ValueError):
        return np.zeros(0)
    return loss[np.isfinite(loss)]


def diagnose(
    stats: GradientStats,
    history: Any = None,
    config: Any = None,
    optimizer: Any = None,
    steps: int | None = None,
) -> Diagnosis:
    """Classify a reading, first match wins: ``skipped > nonfinite > no_gradient > micro_batch > amp_unscaled >
    diverging > exploding > eps_limited > vanishing > dead > lr_too_small > vanishing over time > unused >
    frozen > inconclusive > healthy``.

    ``history`` (a :class:`~gradwidgets.core.history.History` of the reads so far, this one last) enables the
    verdicts over time (a ratio falling read after read, a loss stuck at its start with healthy-looking bars,
    layers that never learned); ``steps`` (an int) says how many reads came before when no history is kept.
    ``config`` (a :class:`NetConfig`) tailors the fix. ``optimizer`` (the ``torch.optim.Optimizer`` training the
    model) adds the checks that need its learning rate and eps: eps-limited layers and the update-to-data ratio.
    """
    if not isinstance(stats, GradientStats):
        raise ValueError(f"stats must be a GradientStats, got {type(stats).__name__}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ValueError(f"steps must be a non-negative integer or None, got {steps!r}")
    facts = optimizer_facts(optimizer) if optimizer is not None else None
    reads = steps if steps is not None else (len(history) if history is not None else 0)
    names = np.asarray(stats.names, dtype=object)
    grad = stats.grad_norm
    trainable = stats.trainable
    live_rows = trainable & stats.has_grad
    time_ratio = stats.time_ratio()
    ratios = stack_ratios(stats, live_rows)
    chosen = pick_stack(ratios, VANISHING_RATIO, EXPLODING_RATIO)
    ratio = chosen.ratio if chosen is not None else float("nan")
    compared = chosen.compared if chosen is not None else ()
    live_ids = chosen.live_ids if chosen is not None else np.zeros(0, np.int64)
    live_norm = chosen.live_norm if chosen is not None else np.zeros(0)
    several = len([r for r in ratios if math.isfinite(r.ratio)]) > 1
    stack_name = chosen.stack if chosen is not None and several else ""
    within = f" within the {stack_name} stack" if stack_name else ""
    between = f" ({display_name(compared[0], stats)} vs {display_name(compared[1], stats)}{within})" if compared else ""

    def result(kind: str, message: str, fix: str, layers: Any = ()) -> Diagnosis:
        return Diagnosis(kind, message, fix, ratio, tuple(str(n) for n in layers), time_ratio, compared, stack_name)

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

    # Every layer exactly 0 while the optimizer's running averages are not: its last step saw a gradient, so the
    # read came after zero_grad(set_to_none=False), not in a dead net (whose averages stay 0).
    cleared = live_rows.any() and not np.any(grad[live_rows] != 0) and _optimizer_saw_gradients(optimizer)
    if trainable.any() and (not live_rows.any() or cleared):
        return result(
            "no_gradient",
            f"No layer received a gradient since the last read (step {stats.step}): the read came before "
            "loss.backward(), or after optimizer.zero_grad(). Nothing was measured.",
            "Read right after loss.backward() and before optimizer.zero_grad(): probe.read(loss) or "
            "monitor.update(loss); with AMP pass scaler=scaler and read before scaler.step(). With the optimizer "
            "given (GradientMonitor(model, optimizer=opt)) the read happens at optimizer.step() by itself.",
        )

    accumulated = stats.accumulated
    if accumulated is not None and live_rows.any() and accumulated[live_rows].mean() >= 0.5:
        return result(
            "micro_batch",
            f"Read between micro-batches (step {stats.step}): {int(accumulated[live_rows].sum())} layer(s)' "
            "gradients were added onto the previous read's, with no optimizer.zero_grad() in between. These are "
            "partial sums of a gradient still being accumulated, so their size and ratio mean nothing yet.",
            "Read once per optimizer step, after the last micro-batch's backward() (or pass optimizer= to read at "
            "optimizer.step()); if you do not accumulate on purpose, call optimizer.zero_grad() every step.",
            names[live_rows & accumulated],
        )

    body = live_rows & np.array([r not in ("norm", "embedding") for r in stats.roles])
    median = float(np.median(grad[body])) if body.any() else 0.0
    formed = [r.ratio for r in ratios if math.isfinite(r.ratio)]
    calm = all(VANISHING_RATIO <= r <= EXPLODING_RATIO for r in formed)
    ordinary_loss = math.isfinite(stats.loss) and median > AMP_SCALE_NORM * max(abs(stats.loss), 1e-3)
    if stats.grad_scale == 1.0 and median > AMP_SCALE_NORM and ordinary_loss and calm and not (time_ratio or 0) > 1e2:
        return result(
            "amp_unscaled",
            f"The gradients look like they still carry an AMP loss scale: the median layer's gradient norm is "
            f"{format_number(median)}, over {format_number(AMP_SCALE_NORM)}x the loss ({format_number(stats.loss)}), "
            "while the first/last ratio is ordinary"
            + ("." if math.isnan(ratio) else f" ({format_number(ratio)}{between}).")
            + " GradScaler multiplies the loss by 2**16 (65536) by default, and these are the scaled gradients.",
            "Pass the scaler: probe.read(loss, scaler=scaler) / monitor.update(loss, scaler=scaler), or read after "
            "scaler.unscale_(optimizer). If you use no GradScaler, the gradients really are this large: lower the "
            "learning rate or clip.",
            names[body & (grad > AMP_SCALE_NORM)],
        )

    predicted = None
    if facts is not None and math.isfinite(facts.lr) and stats.weight_norm is not None:
        predicted = predicted_update_ratio(facts, grad, stats.weight_norm, stats.param_count)
    weighted = (
        body & trainable & (grad > 0) & np.isfinite(predicted) if predicted is not None else np.zeros(len(names), bool)
    )
    typical_update = float(np.median(predicted[weighted])) if predicted is not None and weighted.any() else math.nan
    losses = _losses(history) if history is not None else np.zeros(0)
    loss_grew = len(losses) >= 5 and losses[-1] > 2.0 * float(np.min(losses[:3]))
    stack_rows = live_rows & (stats.blocks >= 0) & np.array([r != "norm" for r in stats.roles])
    largest_body = float(grad[stack_rows].max()) if stack_rows.any() else 0.0
    time_exploding = time_ratio is not None and time_ratio > EXPLODING_RATIO
    exploding = largest_body > EXPLODING_NORM or ratio > EXPLODING_RATIO or time_exploding
    limit = UPDATE_RATIO_DIVERGING_ADAPTIVE if facts is not None and facts.adaptive else UPDATE_RATIO_DIVERGING
    too_large = math.isfinite(typical_update) and typical_update > limit and not exploding
    moved = np.where(body, stats.update_ratio, np.nan)
    if too_large and np.isfinite(moved).any():
        # The last measured step was far smaller than the gradient predicts: clipping (or a scheduler) holds the
        # steps down, so the large gradient is the story, not the learning rate.
        too_large = float(np.nanmedian(moved)) > limit / 3
    if too_large or (loss_grew and not exploding):
        detail = (
            f"each step of {facts.name} (lr {facts.lr:g}) would change the median layer by "
            f"{format_number(typical_update)} of its size (healthy: ~1e-3)"
            if too_large and facts is not None
            else f"the loss grew from {format_number(float(np.min(losses[:3])))} to {format_number(float(losses[-1]))}"
        )
        return result(
            "diverging",
            f"Learning rate too large (diverging): {detail}. Steps overshoot, so loss and gradients grow together.",
            "Lower the learning rate (10x at a time) or use a warm-up; clipping only hides it.",
            names[weighted & (predicted > limit)] if predicted is not None else (),
        )

    if exploding:
        if time_exploding:
            detail = f"the gradient grows {format_number(time_ratio or math.nan)}x on its way back through time"
            layers = names[stack_rows & (grad > EXPLODING_NORM)]
        elif ratio > EXPLODING_RATIO:
            detail = f"the first block's gradient is {format_number(ratio)}x the last block's{between}"
            strong = live_ids[live_norm > EXPLODING_RATIO * live_norm[-1]]
            layers = names[np.isin(stats.blocks, strong) & stack_rows]
        else:
            top = int(np.argmax(np.where(stack_rows, grad, -np.inf)))
            detail = f"{names[top]}'s gradient norm reached {format_number(largest_body)}"
            layers = names[stack_rows & (grad > EXPLODING_NORM)]
        scaled = " (already divided by the AMP loss scale)" if stats.grad_scale != 1.0 else ""
        return result(
            "exploding",
            f"Exploding gradients: {detail}{scaled}; the next steps will overshoot.",
            exploding_fix(stats, config),
            layers,
        )

    layer_norm = any("LayerNorm" in k or "RMSNorm" in k for k in stats.kinds)
    flat = len(losses) >= MIN_STEPS_FOR_DRIFT and losses[-5:].mean() >= (1 - LOSS_FLAT) * losses[:3].mean()
    slow = math.isfinite(typical_update) and typical_update < UPDATE_RATIO_TOO_SMALL
    if flat and layer_norm and not slow and not ratio < VANISHING_RATIO:
        return result(
            "vanishing",
            f"Stuck at the start: after {len(losses)} reads the loss is still "
            f"{format_number(float(losses[-1]))} (started at {format_number(float(losses[0]))}) while the bars "
            f"look healthy (ratio {format_number(ratio)}{between}). In a LayerNorm stack without residual "
            "connections the tokens collapse onto each other: each LayerNorm rescales the gradient back up, so "
            "its size says nothing, but the signal carries no information.",
            "Check the forward token spread with gw.ActivationStats (it shrinks block after block); put the "
            "residual connections back.",
        )

    if facts is not None and facts.eps is not None:
        rms = grad / np.sqrt(np.maximum(stats.param_count, 1))
        limited = body & (rms < facts.eps) & (grad > 0)
        # Some layers below eps while the others are above it: Adam's per-layer normalisation fails for those
        # alone (an 11-layer sigmoid net learns with eps=1e-30). Nearly every layer below it: the gradient itself
        # is the problem. In a LayerNorm stack, tiny gradients come from tokens collapsing (no residuals), not eps.
        worst = float(rms[limited].min()) if limited.any() else math.nan
        # ... and within reach of eps: a gradient 19 orders of magnitude below it has vanished, whatever eps.
        if (
            limited.any()
            and limited.sum() <= EPS_LIMITED_SHARE * body.sum()
            and not layer_norm
            and (worst >= EPS_REACH * facts.eps)
        ):
            return result(
                "eps_limited",
                f"Steps limited by eps: {int(limited.sum())} layer(s) have a gradient RMS below {facts.name}'s "
                f"eps={facts.eps:g} (smallest {format_number(worst)} per entry), so their step is lr*g/eps instead "
                "of ~lr: they barely move, whatever the learning rate says.",
                "Lower eps (1e-12 or less: the same net can learn with eps=1e-30) or fix the vanishing gradient "
                "underneath: " + vanishing_fix(config),
                names[limited],
            )

    zero = stack_rows & (grad == 0)
    designed = by_design_zero(stats, zero)
    zero &= ~designed
    if zero.any():
        nonzero = grad[stack_rows & (grad > 0)]
        smallest = float(nonzero.min()) if len(nonzero) else 0.0
        if len(nonzero) and smallest / float(nonzero.max()) < UNDERFLOW:
            return result(
                "vanishing",
                f"Vanishing gradients: {int(zero.sum())} layer(s) get no gradient at all, and the others fall "
                f"to {format_number(smallest)}: the product of per-layer factors shrinks toward 0 on the way back.",
                vanishing_fix(config),
                names[zero],
            )

    if zero.any():
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
            vanishing_fix(config),
        )
    if ratio < VANISHING_RATIO:
        weak_blocks = live_ids[live_norm < VANISHING_RATIO * live_norm[-1]]
        weak = names[np.isin(stats.blocks, weak_blocks) & stack_rows]
        where = f"the first block{within}" if within else "the first layer"
        spread = (
            " In a LayerNorm stack without residual connections, check the forward token spread with "
            "gw.ActivationStats: the tokens collapse onto each other block after block."
            if layer_norm
            else ""
        )
        return result(
            "vanishing",
            f"Vanishing gradients: {where} receives {format_number(ratio)} of the gradient that reaches the "
            f"last one{between}, so the early layers barely learn.",
            vanishing_fix(config) + spread,
            weak,
        )

    fraction = stats.dead_fraction
    if fraction is not None:
        hidden = live_rows & np.array([r == "hidden" for r in stats.roles]) & ~designed
        hidden &= ~by_design_zero(stats, hidden)
        mostly = hidden & (np.nan_to_num(fraction, nan=0.0) >= DEAD_FRACTION)
        if mostly.any():
            worst = int(np.argmax(np.where(mostly, fraction, -1.0)))
            return result(
                "dead",
                f"Mostly dead: {format_number(100 * float(fraction[worst]))}% of {names[worst]}'s units get exactly "
                f"zero gradient (at step {stats.detail_step}): they output nothing for any example of the batch "
                f"(dead ReLUs){f', and {int(mostly.sum()) - 1} more layer(s) like it' if mostly.sum() > 1 else ''}. "
                "The layer works at a fraction of its width.",
                "Lower the learning rate, use leaky ReLU/GELU, or re-initialize (He init, small positive bias).",
                names[mostly],
            )

    if reads >= MIN_STEPS_FOR_DRIFT and np.isfinite(stats.drift).any():
        drift = np.where(stack_rows, stats.drift, np.nan)
        most = np.nanmax(drift) if np.isfinite(drift).any() else 0.0
        stuck = stack_rows & (drift < NEVER_LEARNED * most) & (drift < NEVER_LEARNED_ABS)
        if most > 0 and stuck.any():
            least_moved = float(np.nanmax(drift[stuck]))
            amount = "not at all" if least_moved == 0 else f"by at most {format_number(least_moved)} (relative)"
            return result(
                "dead",
                f"Layers that never learned: {int(stuck.sum())} layer(s) moved {amount} from their initial "
                f"weights while another moved {format_number(float(most))}. The loss may fall, but those layers "
                "are dead weight.",
                "Check that those layers are handed to the optimizer and not frozen by mistake; if they are, their "
                "gradient is too small to move them: " + vanishing_fix(config),
                names[stuck],
            )

    measured = np.where(body, stats.update_ratio, np.nan)
    if math.isfinite(typical_update):
        update, source = typical_update, f"each step of {facts.name} (lr {facts.lr:g}) changes"  # type: ignore[union-attr]
    elif np.isfinite(measured).any() and reads >= 2:
        update, source = float(np.nanmedian(measured)), "the last step changed"
    else:
        update, source = math.nan, ""
    if math.isfinite(update) and update < UPDATE_RATIO_TOO_SMALL:
        return result(
            "lr_too_small",
            f"Learning rate too small: {source} the median layer by {format_number(update)} of its size "
            "(update-to-data ratio; healthy is ~1e-3), so the loss barely moves.",
            "Raise the learning rate (10x at a time) until the update-to-data ratio is near 1e-3.",
        )

    if history is not None and chosen is not None and reads >= MIN_STEPS_FOR_DRIFT:
        series = ratio_series(history, stats, chosen)
        series = series[np.isfinite(series) & (series > 0)]
        if len(series) >= 5 and ratio < 0.1 and series[-1] < series[0] / 10:
            half = series[len(series) // 2]
            if series[0] > half > series[-1]:
                return result(
                    "vanishing",
                    f"Vanishing over time: the first/last ratio fell read after read, from "
                    f"{format_number(float(series[0]))} to {format_number(ratio)}{between}.",
                    vanishing_fix(config),
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
    note = ""
    if designed.any():
        note = (
            f" {int(designed.sum())} layer(s) get no gradient by design: a zero-initialised layer next to them "
            "(LoRA's B = 0, zero_init_residual) passes nothing back yet; that changes after the first step."
        )
    if frozen.any():
        return result(
            "frozen",
            f"{int(frozen.sum())} layer(s) are frozen (requires_grad=False): no gradient by design, which is not "
            "vanishing. The trainable layers are healthy"
            + ("." if math.isnan(ratio) else f" (first/last ratio {format_number(ratio)}{between}).")
            + note,
            "Nothing to fix; unfreeze them if they should learn.",
            names[frozen],
        )
    if math.isnan(ratio) and time_ratio is None:
        measured_rows = names[live_rows]
        only = (
            f" ({measured_rows[0]}, gradient norm {format_number(float(grad[live_rows][0]))})"
            if len(measured_rows)
            else ""
        )
        return result(
            "inconclusive",
            f"Nothing to compare: the body has fewer than two layers with a gradient{only}, so there is no "
            "first-to-last ratio to judge vanishing or exploding by. The norms themselves are finite." + note,
            "Watch a model with at least two hidden layers (or stacked RNN layers), or compare the numbers over "
            "training steps.",
        )
    if math.isnan(ratio):
        message = "Healthy: no layer's gradient is vanishing, exploding or stuck at zero."
    else:
        message = f"Healthy: the first layer gets {format_number(ratio)}x the last layer's gradient{between}."
    if time_ratio is not None:
        message += f" Through time, step 0 gets {format_number(time_ratio)}x the last step's."
    return result("healthy", message + note, "Nothing to fix.", names[designed])


def _optimizer_saw_gradients(optimizer: Any) -> bool:
    """True when any of the optimizer's running buffers (momentum, Adam's averages) holds a nonzero value."""
    state = getattr(optimizer, "state", None)
    if not state:
        return False
    for per_param in list(state.values()):
        for key, value in per_param.items():
            if key != "step" and isinstance(value, torch.Tensor) and value.numel() > 1 and bool(value.any()):
                return True
    return False

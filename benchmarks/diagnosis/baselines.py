"""Two published rule sets, run on the same checkpoints as ``gw.diagnose`` (from plain-torch readings).

AUTOTRAINER (Zhang et al., ICSE 2021), its rules as published (thresholds as quoted in issue 19):

* vanishing gradient: first/last weight-gradient norm ratio < 1e-3 AND first-layer gradient norm < 1e-4;
* exploding gradient: ratio > 70, or the loss / a weight is NaN or inf;
* dying ReLU: >= 70% of the gradient entries are zero (a trainable weight with no gradient counts as zeros, as
  Keras reports it);
* oscillating loss: over the last 10 losses the step-to-step change flips sign >= 6 times and max - min is more
  than 10% of the mean (our statement of "the loss oscillates");
* slow convergence: over the last 10 losses the loss fell by less than 1% (our statement of it).

First matching symptom wins in that order. Mapping onto our labels: vanishing -> vanishing, exploding ->
exploding, dying ReLU -> dead, oscillating loss -> diverging (its cause: learning rate too large), slow
convergence -> lr_too_small, no symptom -> healthy.

DeepDiagnosis (Wardat et al., ICSE 2022), its 8 symptoms, checked in its order. The paper's numeric
thresholds could not be looked up here (the search tool found no copy), so we state ours and why:

* numerical error: NaN/inf in the loss, a weight or a gradient -> diverging;
* exploding gradient: a weight's gradient norm > 1e3 (the scale gradwidgets also calls "far outside any sane
  loss scale") -> exploding;
* vanishing gradient: the input-side weight's gradient norm < 1e-4 (AUTOTRAINER's first-layer threshold) ->
  vanishing;
* dead node: >= 70% of a ReLU layer's units output 0 on the whole batch (AUTOTRAINER's 70%) -> dead;
* saturated activation: >= 70% of a sigmoid/tanh layer's outputs within 0.01 of its bounds -> vanishing;
* out-of-range activation: an activation's output magnitude > 1e3 -> exploding;
* unchanged weights: every weight moved by < 1e-7 (relative) in the last step -> lr_too_small;
* loss not decreasing: over the last 10 losses, no decrease -> lr_too_small (its first suggested fix is the
  learning rate);
* none -> healthy.

Neither tool has a notion of frozen, unused, no_gradient, amp_unscaled, micro_batch or eps_limited: on those
programs they score as whatever symptom (or healthy) their rules produce.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .harness import Checkpoint

WINDOW = 10


def _trainable(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in layers if r["requires_grad"]]


def _finite_run(point: Checkpoint) -> bool:
    loss_ok = all(math.isfinite(v) for v in point.losses[-1:])
    weights_ok = all(r["finite"] for r in point.layers)
    grads_ok = all(math.isfinite(r["grad_norm"]) for r in point.layers)
    return loss_ok and weights_ok and grads_ok


def autotrainer(point: Checkpoint) -> str:
    """AUTOTRAINER's symptom at ``point`` mapped to a benchmark label."""
    layers = _trainable(point.layers)
    loss_nan = not all(math.isfinite(v) for v in point.losses[-1:]) or not all(r["finite"] for r in layers)
    if loss_nan:
        return "exploding"
    if layers:
        first, last = layers[0]["grad_norm"], layers[-1]["grad_norm"]
        if not (math.isfinite(first) and math.isfinite(last)):
            return "exploding"
        ratio = first / last if last > 0 else (math.inf if first > 0 else float("nan"))
        if ratio > 70:
            return "exploding"
        if ratio < 1e-3 and first < 1e-4:
            return "vanishing"
        total = sum(r["numel"] for r in layers)
        zeros = sum(r["zero_frac"] * r["numel"] for r in layers)
        if total and zeros / total >= 0.7:
            return "dead"
    tail = point.losses[-WINDOW:]
    if len(tail) >= WINDOW:
        diffs = np.diff(tail)
        flips = int(np.sum(np.sign(diffs[1:]) != np.sign(diffs[:-1])))
        spread = max(tail) - min(tail)
        if flips >= 6 and spread > 0.1 * abs(float(np.mean(tail))):
            return "diverging"
        if tail[-1] > 0.99 * tail[0]:
            return "lr_too_small"
    return "healthy"


def deepdiagnosis(point: Checkpoint) -> str:
    """DeepDiagnosis's symptom at ``point`` mapped to a benchmark label."""
    if not _finite_run(point):
        return "diverging"
    layers = _trainable(point.layers)
    if any(r["grad_norm"] > 1e3 for r in layers):
        return "exploding"
    if layers and layers[0]["grad_norm"] < 1e-4:
        return "vanishing"
    for act in point.acts:
        if act["kind"] == "relu" and act["dead_unit_frac"] >= 0.7:
            return "dead"
    for act in point.acts:
        if act["kind"] in ("sigmoid", "tanh") and act["sat_frac"] >= 0.7:
            return "vanishing"
    if any(act["max_abs"] > 1e3 for act in point.acts):
        return "exploding"
    if point.weight_change and max(point.weight_change) < 1e-7:
        return "lr_too_small"
    tail = point.losses[-WINDOW:]
    if len(tail) >= WINDOW and min(tail[1:]) >= tail[0]:
        return "lr_too_small"
    return "healthy"


BASELINES = {"AUTOTRAINER rules": autotrainer, "DeepDiagnosis rules": deepdiagnosis}

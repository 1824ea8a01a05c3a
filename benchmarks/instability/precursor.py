"""Is there a signal that moves >= 20 steps before the lr-1 output-logit divergences of run.py, and not on the
stable runs (issue 23)? Trains the two lr-1 runs (qk-layernorm, warm-up 300 to lr 1, with and without z-loss) and
the stable runs nearest to them (qk-layernorm lr 3e-1 and its z-loss twin, the qk-layernorm twin at 1e-1, healthy
lr 1e-2, the log Z drift run) and records every step: what ``InstabilitySignals`` measures (per attention block
the largest attention logit, entropy, update ratio |dW|/|W|, gradient RMS; the mean and largest log Z) and cheap
candidates: per group (blocks ``h.i``, ``head`` = final norm + lm_head, ``emb``) the weight norm, the gradient
norm, cos(Adam's update, -gradient) (Molybog et al. 2023: Adam's updates stop pointing downhill), cos(gradient,
previous step's gradient) (negative: the step oscillates across a valley, the edge of stability), and the learning
rate. For each signal (5-step mean) it prints, over steps 20 .. spike-20 of each unstable run, the most extreme
level and the largest 20-step growth factor (cosines: the lowest value), beside the same over the whole of each
stable run, and marks ``<==`` a signal whose unstable values all lie beyond every stable value.

    nice -n 10 python benchmarks/instability/precursor.py [--seeds 0 1] [--save DIR]

What it found (README, "Instability signals"; measured with this script's prototype - the same per-step signals
and features - on seed 0 for all seven runs and on held-out seed 1 for the lr-1 run and qk-layernorm lr 3e-1, and
on run.py's saved InstabilitySignals readings of both seeds; this script itself ran seed 0's seven runs and seed
1's two lr-1 runs before the shared machine's load stopped it): nothing separates. The stable qk-layernorm lr 3e-1
run goes through the states the lr-1 runs are in 20 steps before their spike; it is at the edge itself (its loss
rises 1.22x on seed 0, 1.17x on seed 1; a spike is 1.25x): at step 87 of a warm-up of 300 to lr 1 the lr is 0.29,
where the lr 3e-1 run sits for 100 steps. Its largest attention logit (91 vs 28-40), attention entropy (0.32 vs
0.54-0.60), gradient RMS, log Z, gradient norms and their 20-step growth
reach at least what the lr-1 runs show before their spike. Gradient oscillation - cos(gradient, previous gradient)
down to -0.3 .. -0.8 in every block from ~step 50, ~60 steps ahead - marks the high-lr regime against the healthy,
drift and qk-layernorm 1e-1 runs (>= -0.14) but is as strong in the stable lr 3e-1 runs (-0.39 .. -0.70).
cos(Adam's update, -gradient) falls to ~0 in the stable lr 3e-1 run, lower than in the lr-1 runs (0.03-0.16).
On seed 0 alone each block's update ratio (5-step mean, 0.058-0.064 vs <= 0.0585) and the 20-step growth of each
block's weight norm (1.73-1.81x vs <= 1.73x) separated by hair-thin margins; on held-out seed 1 the stable lr 3e-1
run reached 0.065 and 1.79-1.83x. On seed 0 the 20-step growth of the head's weight norm was larger in the lr-1
runs (2.10-2.18 vs <= 1.95); on held-out seed 1 the lr 3e-1 run reached 2.09: a margin of 0.5%, which measures the
lr-1 runs' slightly steeper warm-up (1/300 vs 0.3/100 per step), not a precursor. No rule is shipped from it.

What separates the two is not the state but the schedule: the stable run's warm-up stops at lr 0.3, the lr-1 runs'
keeps raising the lr past the edge. ``InstabilitySignals`` now reads the scheduler's outlook (``lr_ahead``) and the
gradient-momentum cosine (``momentum_cos``, recorded here too), and run.py measures the edge rule built on them:
oscillation while the schedule will still double the learning rate (README, "Instability signals").
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from run import RUNS, RunSpec, setup, spike_step, train_steps  # noqa: E402 - the benchmark's loop, found above

from gradwidgets.core.signals import InstabilitySignals  # noqa: E402

UNSTABLE = ("logit divergence lr 1", "  + z-loss 1e-4 lr 1")
STABLE = ("qk-layernorm lr 3e-1", "  + z-loss 1e-4", "  + qk-layernorm twin", "healthy lr 1e-2",
          "log Z drift, head x10+bias")
LEAD, WINDOW, SMOOTH = 20, 20, 5
Runs = list[tuple[str, list[dict[str, float]], int]]  # (label, a row per step, the last step looked at)


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).float() for t in tensors])


def record(spec: RunSpec, steps: int, seed: int) -> list[dict[str, float]]:
    """One row of signals per step (the run as run.py trains it, with InstabilitySignals on every step)."""
    run = setup(spec, seed)
    model, optimizer, scheduler = run
    signals = InstabilitySignals(model, sample=4, every=1, optimizer=optimizer, scheduler=scheduler)
    groups = {f"h.{i}": list(block.parameters()) for i, block in enumerate(model.h)}
    groups["head"] = list(model.ln_f.parameters()) + list(model.lm_head.parameters())
    groups["emb"] = list(model.wte.parameters()) + list(model.wpe.parameters())
    rows: list[dict[str, float]] = []
    previous: dict[str, torch.Tensor] = {}
    before: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}

    def after_backward(step: int) -> None:
        before.update({k: _flat(v) for k, v in groups.items()})
        grads.update({k: _flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in v])
                      for k, v in groups.items()})

    def after_step(step: int, loss: float) -> None:
        reading = signals.history[-1]
        row = {"loss": loss, "lr": reading.lr, "log_z": reading.log_z, "log_z_max": reading.log_z_max}
        for i, block in enumerate(reading.blocks):
            for name in ("max_logit", "entropy", "update_ratio", "grad_rms", "momentum_cos"):
                row[f"{name}/{block}"] = float(getattr(reading, name)[i])
        for k, v in groups.items():
            new, g = _flat(v), grads[k]
            update = new - before[k]
            row[f"weight_norm/{k}"] = float(new.norm())
            row[f"grad_norm/{k}"] = float(g.norm())
            row[f"cos_update_downhill/{k}"] = float(-(update @ g) / (update.norm() * g.norm()).clamp_min(1e-30))
            if k in previous:
                row[f"cos_grad_previous/{k}"] = float((g @ previous[k]) / (g.norm() * previous[k].norm()).clamp_min(
                    1e-30))
        previous.update(grads)
        rows.append(row)

    train_steps(spec, seed, steps, run, after_backward, after_step)
    signals.remove()
    return rows


def _smooth(values: list[float]) -> list[float]:
    return [statistics.fmean(values[max(0, i - SMOOTH + 1) : i + 1]) for i in range(len(values))]


def features(rows: list[dict[str, float]], key: str, last: int) -> tuple[float, float]:
    """(the most extreme 5-step mean over steps WINDOW .. last: the lowest for a cosine or an entropy, else the
    largest; the largest growth factor over WINDOW steps in it, NaN for a cosine)."""
    s = _smooth([row.get(key, math.nan) for row in rows])[: last + 1]
    window = [v for v in s[WINDOW:] if math.isfinite(v)]
    if not window:
        return math.nan, math.nan
    low = key.startswith(("cos", "entropy"))
    level = min(window) if low else max(window)
    if low:
        return level, math.nan
    growth = [s[i] / s[i - WINDOW] for i in range(2 * WINDOW, len(s)) if s[i - WINDOW] > 0 and math.isfinite(s[i])]
    return level, max(growth, default=math.nan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--runs", nargs="+", default=None, metavar="WORD",
                        help="only the runs whose name contains one of these words")
    parser.add_argument("--save", type=Path, default=None, help="write each run's rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    by_name = {spec.name: spec for spec in RUNS}
    unstable: Runs = []
    stable: Runs = []
    for seed in args.seeds:
        for name in UNSTABLE + STABLE:
            if args.runs is not None and not any(word in name for word in args.runs):
                continue
            rows = record(by_name[name], args.steps, seed)
            spike, rise = spike_step([row["loss"] for row in rows])
            label = f"{name.strip(' +')[:14]} s{seed}"
            print(f"{label:18} spike {spike} rise {rise:.2f}", flush=True)
            if args.save is not None:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / f"{name.strip(' +').replace(' ', '_').replace(',', '')}_seed{seed}.json").write_text(
                    json.dumps({"spike": spike, "rows": rows}))
            if name in UNSTABLE and spike is not None:
                unstable.append((label, rows, spike - LEAD))
            elif name in STABLE and spike is None:
                stable.append((label, rows, len(rows) - 1))
    table(unstable, stable)


def table(unstable: Runs, stable: Runs) -> None:
    """Prints each signal's features: (label, rows, last step looked at) per run."""
    if not unstable or not stable:
        print("need at least one unstable run that spiked and one stable run that did not")
        return
    keys = [k for k in unstable[0][1][-1] if k not in ("loss", "lr")]
    print(f"\nlevel = most extreme 5-step mean (lowest for cosines and entropy), growth = largest {WINDOW}-step "
          f"factor; unstable runs up to {LEAD} steps before their spike, stable runs all along")
    print(f"{'signal':34} {'':6} " + " ".join(f"{label[:10] + label[-3:]:>13}" for label, _, _ in unstable)
          + " | " + " ".join(f"{label[:10] + label[-3:]:>13}" for label, _, _ in stable))
    for key in keys:
        for which in (0, 1):
            ahead = [features(rows, key, last)[which] for _, rows, last in unstable]
            calm = [features(rows, key, last)[which] for _, rows, last in stable]
            if all(math.isnan(v) for v in ahead):
                continue
            low = which == 0 and key.startswith(("cos", "entropy"))
            apart = max(ahead) < min(calm) if low else min(ahead) > max(calm)
            print(f"{key:34} {('level', 'growth')[which]:6} " + " ".join(f"{v:13.3g}" for v in ahead) + " | "
                  + " ".join(f"{v:13.3g}" for v in calm) + ("  <==" if apart else ""))


if __name__ == "__main__":
    main()

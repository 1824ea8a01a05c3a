"""Measured early warning for transformer instabilities (issue 23): small GPTs on generated data (nothing
downloaded) at learning rates where attention logits grow, each beside its qk-layernorm twin, a qk-layernorm run at
a higher learning rate beside its z-loss twin, a qk-layernorm run whose output logits diverge once the warm-up
reaches lr ~0.4 (and its z-loss twin), and healthy runs. Per run: the loss-spike step, the first step
``warn_unstable`` fired on the ``InstabilitySignals`` history, the lead time; false alarms count warnings on the
stable runs (fixed twins, healthy). Every run is seeded; the numbers repeat (one torch thread).

A spike: the loss (mean of the last 5 steps) rises above ``SPIKE_FACTOR`` times its running minimum after it has
dropped below ``DROPPED`` times its starting value or after the first ``SETTLED`` steps, past the warm-up's early
bump (the held-out seed 1 of the z-loss lr-1 run never dropped below 0.8x, 3.53 at best, then went to 130: without
``SETTLED`` that divergence was not counted). The task's loss ceiling is ln(vocab) = 4.16, so a model that
has learnt something can at most lose a factor of ~3 - a 2x threshold would miss divergences that end near
chance; see the table for how far each run rose.

    nice -n 10 python benchmarks/instability/run.py [--steps 200] [--every 5] [--seeds 0 1] [--save DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from model import SmallGPT, copy_batch, successor_table  # noqa: E402 - the benchmark's own model, found above

from gradwidgets.core.signals import InstabilityReading, InstabilitySignals, warn_unstable  # noqa: E402

SPIKE_FACTOR, DROPPED, SMOOTH, SETTLED = 1.25, 0.8, 5, 50
VOCAB, HALF, BATCH, WIDTH, HEADS, DEPTH = 64, 16, 32, 128, 4, 6


@dataclass(frozen=True)
class RunSpec:
    name: str
    lr: float
    warmup: int
    qk_norm: bool = False
    z_loss: float = 0.0
    stable: bool = False  # a fixed twin or a healthy run: a warning on it is a false alarm
    head_mult: float = 1.0  # the head's learning rate: lr times this
    head_bias: bool = False  # give the head a (zero-initialised) bias
    steps: int | None = None  # its own length (None: --steps)


RUNS = (
    RunSpec("attention-logit growth", lr=1e-1, warmup=100),
    RunSpec("  + qk-layernorm twin", lr=1e-1, warmup=100, qk_norm=True, stable=True),
    RunSpec("attention-logit growth 5e-2", lr=5e-2, warmup=100),
    RunSpec("  + qk-layernorm twin 5e-2", lr=5e-2, warmup=100, qk_norm=True, stable=True),
    RunSpec("qk-layernorm lr 3e-1", lr=3e-1, warmup=100, qk_norm=True, stable=True),
    RunSpec("  + z-loss 1e-4", lr=3e-1, warmup=100, qk_norm=True, z_loss=1e-4, stable=True),
    RunSpec("logit divergence lr 1", lr=1.0, warmup=300, qk_norm=True),
    RunSpec("  + z-loss 1e-4 lr 1", lr=1.0, warmup=300, qk_norm=True, z_loss=1e-4),
    RunSpec("healthy lr 1e-2", lr=1e-2, warmup=100, stable=True),
    RunSpec("healthy lr 3e-3", lr=3e-3, warmup=100, stable=True),
    # head_lr.py's run that keeps learning while its log Z drifts up (largest 20 -> 32 in 300 steps)
    RunSpec("log Z drift, head x10+bias", lr=3e-2, warmup=100, qk_norm=True, stable=True, head_mult=10.0,
            head_bias=True, steps=300),
)


def spike_step(losses: list[float]) -> tuple[int | None, float]:
    """(the first step the smoothed loss exceeds SPIKE_FACTOR x its running minimum after having dropped or after
    the first SETTLED steps, or None; the largest such rise seen, smoothed loss / running minimum)."""
    smooth = [statistics.fmean(losses[max(0, i - SMOOTH + 1) : i + 1]) for i in range(len(losses))]
    lowest, dropped, first, rise = smooth[0], False, None, 1.0
    for step, value in enumerate(smooth):
        dropped = dropped or value < DROPPED * smooth[0] or step >= SETTLED
        if dropped:
            rise = max(rise, value / lowest)
            if first is None and value > SPIKE_FACTOR * lowest:
                first = step
        lowest = min(lowest, value)
    return first, rise


def first_warning(history: list[InstabilityReading]) -> tuple[int | None, str]:
    for i in range(len(history)):
        warning = warn_unstable(history[: i + 1])
        if warning is not None:
            return warning.step, f"{warning.block} {warning.signal}: {warning.fix}"
    return None, ""


def setup(spec: RunSpec, seed: int) -> tuple[SmallGPT, torch.optim.Optimizer, tuple[float, float]]:
    """The run's model and Adam (body, head groups) and the two groups' peak learning rates; ``seed`` seeds the
    initialisation (seed 0 is the benchmark's run)."""
    torch.manual_seed(seed)
    model = SmallGPT(VOCAB, WIDTH, HEADS, 2 * HALF, DEPTH, qk_norm=spec.qk_norm)
    if spec.head_bias:
        model.lm_head = nn.Linear(WIDTH, VOCAB, bias=True)
        nn.init.normal_(model.lm_head.weight, std=0.02)
        nn.init.zeros_(model.lm_head.bias)
    head = list(model.lm_head.parameters())
    body = [p for p in model.parameters() if all(p is not h for h in head)]
    optimizer = torch.optim.Adam([{"params": body}, {"params": head}], lr=spec.lr, betas=(0.9, 0.95))
    return model, optimizer, (spec.lr, spec.lr * spec.head_mult)


def warm_up(optimizer: torch.optim.Optimizer, base: tuple[float, float], spec: RunSpec, step: int) -> None:
    for index, group in enumerate(optimizer.param_groups):
        group["lr"] = base[index] * min(1.0, (step + 1) / spec.warmup)


def loss_of(spec: RunSpec, logits: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the cross-entropy, what is minimised: it plus the run's z-loss)."""
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), idx[:, 1:].reshape(-1))
    total = loss + spec.z_loss * torch.logsumexp(logits, dim=-1).square().mean() if spec.z_loss else loss
    return loss, total


def train(
    spec: RunSpec, steps: int, every: int, seed: int = 0
) -> tuple[list[float], list[InstabilityReading], float]:
    """One run: ``seed`` seeds the initialisation and ``seed + 1`` the batches (the bigram language is the same for
    every seed)."""
    model, optimizer, base = setup(spec, seed)
    signals = InstabilitySignals(model, sample=4, every=every, optimizer=optimizer)
    table = successor_table(VOCAB, 4, seed=123)
    gen = torch.Generator().manual_seed(seed + 1)
    losses, start = [], time.perf_counter()
    for step in range(spec.steps or steps):
        warm_up(optimizer, base, spec, step)
        idx = copy_batch(gen, table, BATCH, HALF)
        loss, total = loss_of(spec, model(idx[:, :-1]), idx)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        losses.append(loss.item())
    signals.remove()
    return losses, list(signals.history), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=5, help="signal cadence in steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds to run (0: the seed the thresholds were chosen on; others are held out)")
    parser.add_argument("--save", type=Path, default=None, help="write each run's losses and signals as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{DEPTH}-block GPT width {WIDTH}, Adam (0.9, 0.95) no weight decay, linear warm-up, {args.steps} steps "
          f"unless said, signals every {args.every} steps on 4 of {BATCH} sequences")
    leads, spikes, warned, false_alarms, summaries = [], 0, 0, 0, []
    for seed in args.seeds:
        print(f"seed {seed}")
        print(f"{'run':26} {'lr':>6} {'min loss':>8} {'rise':>5} {'spike':>6} {'warned':>6} {'lead':>5}  warning")
        counts = [0, 0, 0, []]  # spikes, warned, false alarms, leads of this seed
        for spec in RUNS:
            losses, history, seconds = train(spec, args.steps, args.every, seed)
            spike, rise = spike_step(losses)
            warn, why = first_warning(history)
            if args.save is not None:
                args.save.mkdir(parents=True, exist_ok=True)
                record = {"losses": losses, "readings": [r.to_dict() for r in history]}
                name = spec.name.strip(" +").replace(" ", "_").replace(",", "")
                (args.save / f"{name}_seed{seed}.json").write_text(json.dumps(record))
            lead = None
            if spike is not None:
                counts[0] += 1
                if warn is not None and warn <= spike:
                    counts[1] += 1
                    lead = spike - warn
                    counts[3].append(lead)
            elif warn is not None and spec.stable:
                counts[2] += 1
            print(f"{spec.name:26} {spec.lr:6.0e} {min(losses):8.3f} {rise:5.2f} "
                  f"{'-' if spike is None else spike:>6} {'-' if warn is None else warn:>6} "
                  f"{'-' if lead is None else lead:>5}  {why or '-'}  ({seconds:.0f} s)", flush=True)
        spikes, warned, false_alarms = spikes + counts[0], warned + counts[1], false_alarms + counts[2]
        leads += counts[3]
        summaries.append(f"seed {seed}: {counts[0]} spikes, warned {counts[1]}, leads {counts[3]}, "
                         f"false alarms {counts[2]}")
    for line in summaries:
        print(line)
    median = statistics.median(leads) if leads else float("nan")
    print(f"instability benchmark: {spikes} spikes, warned {warned}, median lead {median:g} steps, "
          f"false alarms {false_alarms}")


if __name__ == "__main__":
    main()

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

    nice -n 10 python benchmarks/instability/run.py [--steps 200] [--every 5] [--seeds 0 1] [--jobs 2] [--save DIR]
        [--runs WORD ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from model import SmallGPT, copy_batch, successor_table  # noqa: E402 - the benchmark's own model, found above

from gradwidgets.core.signals import InstabilityReading, InstabilitySignals, warn_unstable  # noqa: E402

SPIKE_FACTOR, DROPPED, SMOOTH, SETTLED = 1.25, 0.8, 5, 50
VOCAB, HALF, BATCH, WIDTH, HEADS, DEPTH = 64, 16, 32, 128, 4, 6
TINY = {"width": 32, "depth": 2, "heads": 2, "batch": 8}


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
    width: int = WIDTH
    depth: int = DEPTH
    heads: int = HEADS
    batch: int = BATCH


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
HELD_OUT = (
    # schedules the edge rule's thresholds were not chosen on; a warning on one that does not spike is a false alarm
    RunSpec("* lr 1, warm-up 200", lr=1.0, warmup=200, qk_norm=True),
    RunSpec("* lr 1, warm-up 500", lr=1.0, warmup=500, qk_norm=True, steps=300),
    RunSpec("* lr 5e-1, warm-up 300", lr=0.5, warmup=300, qk_norm=True, steps=300),
    RunSpec("* lr 3e-1, warm-up 300", lr=0.3, warmup=300, qk_norm=True, steps=300),
    RunSpec("* lr 2e-1, warm-up 50", lr=0.2, warmup=50, qk_norm=True),
    RunSpec("* lr 3e-1, warm-up 20", lr=0.3, warmup=20, qk_norm=True),
    # tutorial 08's model: 2 blocks of width 32, 2 heads, batch 8 (a noisier gradient), 240 steps
    RunSpec("* tiny, lr 1, warm-up 200", lr=1.0, warmup=200, qk_norm=True, steps=240, **TINY),
    RunSpec("* tiny, lr 3e-1, warm-up 200", lr=0.3, warmup=200, qk_norm=True, steps=240, **TINY),
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


def setup(spec: RunSpec, seed: int) -> tuple[SmallGPT, torch.optim.Optimizer, LambdaLR]:
    """The run's model, Adam (body, head groups at their peak learning rates) and its linear warm-up as a
    ``LambdaLR`` stepped once per optimizer step; ``seed`` seeds the initialisation (seed 0 is the seed the
    thresholds were chosen on)."""
    torch.manual_seed(seed)
    model = SmallGPT(VOCAB, spec.width, spec.heads, 2 * HALF, spec.depth, qk_norm=spec.qk_norm)
    if spec.head_bias:
        model.lm_head = nn.Linear(spec.width, VOCAB, bias=True)
        nn.init.normal_(model.lm_head.weight, std=0.02)
        nn.init.zeros_(model.lm_head.bias)
    head = list(model.lm_head.parameters())
    body = [p for p in model.parameters() if all(p is not h for h in head)]
    groups = [{"params": body, "lr": spec.lr}, {"params": head, "lr": spec.lr * spec.head_mult}]
    optimizer = torch.optim.Adam(groups, lr=spec.lr, betas=(0.9, 0.95))
    return model, optimizer, LambdaLR(optimizer, partial(warm_up, spec.warmup))


def warm_up(length: int, step: int) -> float:
    """The linear warm-up's factor at ``step`` (0-based): (step + 1) / length, then 1."""
    return min(1.0, (step + 1) / length)


def loss_of(spec: RunSpec, logits: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the cross-entropy, what is minimised: it plus the run's z-loss)."""
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), idx[:, 1:].reshape(-1))
    total = loss + spec.z_loss * torch.logsumexp(logits, dim=-1).square().mean() if spec.z_loss else loss
    return loss, total


def train_steps(
    spec: RunSpec,
    seed: int,
    steps: int,
    run: tuple[SmallGPT, torch.optim.Optimizer, LambdaLR],
    after_backward: Callable[[int], None] | None = None,
    after_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """The run's training loop, the one every script here uses: ``seed + 1`` seeds the batches (the bigram language
    is the same for every seed); ``after_backward(step)`` sees the gradients before the optimizer's step,
    ``after_step(step, loss)`` the weights after it. Returns the per-step losses."""
    model, optimizer, scheduler = run
    table = successor_table(VOCAB, 4, seed=123)
    gen = torch.Generator().manual_seed(seed + 1)
    losses: list[float] = []
    for step in range(spec.steps or steps):
        idx = copy_batch(gen, table, spec.batch, HALF)
        loss, total = loss_of(spec, model(idx[:, :-1]), idx)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if after_backward is not None:
            after_backward(step)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if after_step is not None:
            after_step(step, losses[-1])
    return losses


def train(
    spec: RunSpec, steps: int, every: int, seed: int = 0
) -> tuple[list[float], list[InstabilityReading], float]:
    """One run with ``InstabilitySignals`` (optimizer and scheduler given) every ``every`` steps: (losses,
    readings, seconds)."""
    torch.set_num_threads(1)
    run = setup(spec, seed)
    signals = InstabilitySignals(run[0], sample=4, every=every, optimizer=run[1], scheduler=run[2])
    start = time.perf_counter()
    losses = train_steps(spec, seed, steps, run)
    signals.remove()
    return losses, list(signals.history), time.perf_counter() - start


@dataclass
class Tally:
    """One seed's counts: spikes, spikes warned before they came, their leads, warnings on runs that did not spike
    and should not have been warned (stable and held-out runs), and warnings on any run that did not spike (the
    unstable runs without qk-layernorm count there too: a warning's precision)."""

    spikes: int = 0
    warned: int = 0
    false_alarms: int = 0
    leads: list[int] = field(default_factory=list)
    unfollowed: int = 0

    def add(self, spike: int | None, warn: int | None, false_alarm_possible: bool) -> int | None:
        """Counts one run; returns its lead (steps from the warning to the spike) when it was warned in time."""
        if spike is None:
            self.false_alarms += int(warn is not None and false_alarm_possible)
            self.unfollowed += int(warn is not None)
            return None
        self.spikes += 1
        if warn is None or warn > spike:
            return None
        self.warned += 1
        self.leads.append(spike - warn)
        return spike - warn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=5, help="signal cadence in steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds to run (0: the seed the thresholds were chosen on; others are held out)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (one torch thread each)")
    parser.add_argument("--save", type=Path, default=None, help="write each run's losses and signals as JSON here")
    parser.add_argument("--runs", nargs="+", default=None, metavar="WORD",
                        help="only the runs whose name contains one of these words")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{DEPTH}-block GPT width {WIDTH} unless said, Adam (0.9, 0.95) no weight decay, linear warm-up, "
          f"{args.steps} steps unless said, signals every {args.every} steps on 4 of {BATCH} sequences; held-out "
          "schedules and models marked *")
    specs = [spec for spec in RUNS + HELD_OUT if args.runs is None or any(w in spec.name for w in args.runs)]
    jobs = [(spec, seed) for seed in args.seeds for spec in specs]
    tallies = {seed: Tally() for seed in args.seeds}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = pool.map(train, *zip(*[(spec, args.steps, args.every, seed) for spec, seed in jobs], strict=True))
        for (spec, seed), (losses, history, seconds) in zip(jobs, results, strict=True):
            if spec is specs[0]:
                print(f"seed {seed}")
                print(f"{'run':28} {'lr':>6} {'min loss':>8} {'rise':>5} {'spike':>6} {'warned':>6} {'lead':>5}  "
                      "warning")
            spike, rise = spike_step(losses)
            warn, why = first_warning(history)
            if args.save is not None:
                args.save.mkdir(parents=True, exist_ok=True)
                record = {"losses": losses, "readings": [r.to_dict() for r in history]}
                name = spec.name.strip(" +*").replace(" ", "_").replace(",", "")
                (args.save / f"{name}_seed{seed}.json").write_text(json.dumps(record))
            lead = tallies[seed].add(spike, warn, false_alarm_possible=spec.stable or spec in HELD_OUT)
            print(f"{spec.name:28} {spec.lr:6.0e} {min(losses):8.3f} {rise:5.2f} "
                  f"{'-' if spike is None else spike:>6} {'-' if warn is None else warn:>6} "
                  f"{'-' if lead is None else lead:>5}  {why or '-'}  ({seconds:.0f} s)", flush=True)
    for seed, tally in tallies.items():
        print(f"seed {seed}: {tally.spikes} spikes, warned {tally.warned}, leads {tally.leads}, "
              f"false alarms {tally.false_alarms}")
    leads = [lead for tally in tallies.values() for lead in tally.leads]
    median = statistics.median(leads) if leads else float("nan")
    warned = sum(t.warned for t in tallies.values())
    print(f"warnings followed by a spike: {warned} of {warned + sum(t.unfollowed for t in tallies.values())} (a "
          "warning after its spike counts neither way)")
    in_time = sum(1 for lead in leads if lead >= 20)
    print(f"warned >= 20 steps ahead (the target): {in_time} of {sum(t.spikes for t in tallies.values())} spikes; "
          f"shortest lead {min(leads, default=float('nan')):g} steps")
    print(f"instability benchmark: {sum(t.spikes for t in tallies.values())} spikes, warned "
          f"{sum(t.warned for t in tallies.values())}, median lead {median:g} steps, "
          f"false alarms {sum(t.false_alarms for t in tallies.values())}")

if __name__ == "__main__":
    main()

"""Looking for a signal that moves before an output-logit divergence (issue 23): the benchmark's 6-block GPT with
qk-layernorm (so attention logits stay small) trained with a larger learning rate on the head only, optionally with
a bias on the head, no weight decay. Prints, every ``--print-every`` steps, the loss (5-step mean), log Z (mean
and largest over the sampled positions), the head's update ratio |dW|/|W| and the largest attention logit; then
the loss-spike step and the first step ``warn_unstable`` fired (the same rules as run.py).

    nice -n 10 python benchmarks/instability/head_lr.py --lr 0.03 --head-mult 10 --bias --steps 1000

What it found (measured under heavy load on the shared 2-core machine; see README, "Instability signals"):
head lr x10 with a head bias (body lr 3e-2, warm-up 100, --steps 1000) learns all along (5-step loss 0.94 at step
100, 0.77 at 900) while its log Z drifts up (mean 10.6 -> 23, largest 20 -> 48) and never spikes, yet the log Z rule
warned at step 230 while it read the largest log Z (it reads the mean since; the run is in run.py's stable set, 300
steps, as "log Z drift, head x10+bias"); head lr x100 (body 1e-2) blows up during the
warm-up and then learns (loss 0.87) with the largest log Z at 30-170; head lr x30 without a bias blows up during the
warm-up (loss 4.2 -> 9.1 by step 45) with log Z rising with the loss, not before it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from run import RunSpec, first_warning, setup, spike_step, train_steps  # noqa: E402 - the benchmark's loop, above

from gradwidgets.core.signals import InstabilitySignals  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=0.03, help="learning rate of everything but the head")
    parser.add_argument("--head-mult", type=float, default=10.0, help="the head's learning rate: lr times this")
    parser.add_argument("--bias", action="store_true", help="give the head a bias (zero-initialised)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=5, help="signal cadence in steps")
    parser.add_argument("--print-every", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = RunSpec("head lr", lr=args.lr, warmup=args.warmup, qk_norm=True, head_mult=args.head_mult,
                   head_bias=args.bias, steps=args.steps)
    run = setup(spec, seed=0)
    model, optimizer, scheduler = run
    signals = InstabilitySignals(model, sample=4, every=args.every, optimizer=optimizer, scheduler=scheduler)
    losses: list[float] = []
    head: dict[str, torch.Tensor] = {}

    def after_backward(step: int) -> None:
        head["before"] = model.lm_head.weight.detach().clone()

    def after_step(step: int, loss: float) -> None:
        losses.append(loss)
        if step % args.print_every == 0 and signals.history:
            reading = signals.history[-1]
            ratio = float((model.lm_head.weight.detach() - head["before"]).norm() / head["before"].norm())
            print(f"{step:5d} {statistics.fmean(losses[-5:]):6.2f} {reading.log_z:6.2f} {reading.log_z_max:7.2f} "
                  f"{ratio:14.3f} {float(reading.max_logit.max()):9.3g}", flush=True)

    print(f"{'step':>5} {'loss':>6} {'log Z':>6} {'max':>7} {'head |dW|/|W|':>14} {'max logit':>9}")
    train_steps(spec, 0, args.steps, run, after_backward, after_step)
    signals.remove()
    spike, rise = spike_step(losses)
    warned, why = first_warning(list(signals.history))
    print(f"min loss {min(losses):.3f}, rise {rise:.2f}, spike {spike}, first warning {warned} {why}")


if __name__ == "__main__":
    main()

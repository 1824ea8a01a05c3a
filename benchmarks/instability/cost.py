"""What ``InstabilitySignals`` costs a training step: the 6-block GPT of bench_probe.py (tests/_models.py: width
256, 8 heads, context 64, vocabulary 2048, tied head, AdamW, batch 16) bare and with the signals on (default
cadence, every 10th step, 4 sampled sequences, optimizer and a warm-up ``LambdaLR`` given, so the gradient-momentum
cosine and the scheduler's 100-step outlook are measured too). Rounds of ``--steps`` steps alternate between
the two, so drift in machine load hits both alike; reported: the median per-round wall-time ratio, and the time
spent inside the hooks per step (the cost itself, free of the noise of a shared machine).
Target: <= 2% of the step.

    nice -n 10 python benchmarks/instability/cost.py [--rounds 6] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _models import TinyGPT  # noqa: E402 - the test suite's model, found through the path above

from gradwidgets.core.signals import InstabilitySignals  # noqa: E402


class TimedSignals(InstabilitySignals):
    """The same hooks, each timed: ``seconds`` is the wall time spent inside them."""

    seconds = 0.0

    def _guard(self, what: str, hook: Callable[..., Any]) -> Callable[..., None]:
        guarded = super()._guard(what, hook)

        def timed(*args: Any) -> None:
            start = time.perf_counter()
            guarded(*args)
            TimedSignals.seconds += time.perf_counter() - start

        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = TinyGPT(vocab=2048, width=256, heads=8, context=64, depth=6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 1000))
    gen = torch.Generator().manual_seed(1)

    def steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            idx = torch.randint(0, 2048, (16, 65), generator=gen)
            logits = model(idx[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, 2048), idx[:, 1:].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        return time.perf_counter() - start

    steps(3)
    ratios, bare_times, hook_seconds, measured_steps = [], [], 0.0, 0
    for _ in range(args.rounds):
        bare = steps(args.steps)
        signals = TimedSignals(model, optimizer=optimizer, scheduler=scheduler)
        TimedSignals.seconds = 0.0
        on = steps(args.steps)
        hook_seconds += TimedSignals.seconds
        measured_steps += args.steps
        assert len(signals.history) == args.steps // 10, "the signals measured on their cadence"
        assert all(r.lr_ahead > r.lr for r in signals.history), "the scheduler's outlook measured"
        signals.remove()
        ratios.append(on / bare)
        bare_times.append(bare / args.steps)
    step = statistics.median(bare_times)
    inside = hook_seconds / measured_steps
    print(f"6-block GPT step {step * 1e3:.0f} ms bare; with InstabilitySignals (every 10): median wall ratio "
          f"{statistics.median(ratios):.3f}x, inside the hooks {inside * 1e3:.2f} ms/step = {inside / step:.2%} "
          f"of the step (measured under nice -n 10 on a shared 2-core machine)")


if __name__ == "__main__":
    main()

"""Probe and monitor cost on real-sized models: a training step with ``GradientProbe.read()`` (default detail
cadence, every 20th read) or ``GradientMonitor.update()`` vs the same step bare.

Models (tests/_models.py, nothing downloaded): a ResNet-18-size conv net (basic blocks [2, 2, 2, 2], widths 64-512,
11.2M parameters, 32x32 inputs) and a 6-block GPT (width 256, 8 heads, context 64, vocabulary 2048, head tied to
the token embedding). Variants run interleaved in rounds of ``--steps`` steps (a whole detail period), so drift
in machine load hits all alike; the table reports medians of per-round wall-time ratios to the bare loop, and
the time measured inside ``read()``/``update()`` (plus the monitor's drawing-thread CPU time) per step, which
is the cost itself, free of the +-2% noise of a shared machine.
Targets: probe <= 2% of the step, monitor <= 1.03x.

    python benchmarks/bench_probe.py [--rounds 6] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import gradwidgets as gw
from gradwidgets.testing import recording_comm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _models import TinyGPT, TinyResNet  # noqa: E402 - the test suite's models, found through the path above


def resnet_setup(batch: int) -> tuple[nn.Module, Callable[[nn.Module, torch.Generator], torch.Tensor], type]:
    def loss_fn(model: nn.Module, gen: torch.Generator) -> torch.Tensor:
        x = torch.randn(batch, 3, 32, 32, generator=gen)
        return F.cross_entropy(model(x), torch.randint(0, 10, (batch,), generator=gen))

    return TinyResNet(width=64), loss_fn, torch.optim.SGD


def gpt_setup(batch: int) -> tuple[nn.Module, Callable[[nn.Module, torch.Generator], torch.Tensor], type]:
    def loss_fn(model: nn.Module, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, 2048, (batch, 65), generator=gen)
        logits = model(idx[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))

    return TinyGPT(vocab=2048, width=256, heads=8, context=64, depth=6), loss_fn, torch.optim.AdamW


def make_loop(setup: Callable, batch: int, variant: str) -> Callable[[int], float]:
    torch.manual_seed(0)
    model, loss_fn, optimizer_class = setup(batch)
    optimizer = optimizer_class(model.parameters(), lr=1e-3)
    probe = gw.GradientProbe(model) if variant == "probe" else None
    monitor = gw.GradientMonitor(model) if variant == "monitor" else None
    gen = torch.Generator().manual_seed(1)
    inside = [0.0, 0]  # seconds spent inside read()/update(), steps

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss = loss_fn(model, gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            entered = time.perf_counter()
            if probe is not None:
                probe.read(loss)
            if monitor is not None:
                monitor.update(loss)
            inside[0] += time.perf_counter() - entered
            optimizer.step()
        inside[1] += steps
        return (time.perf_counter() - start) / steps

    run.monitor = monitor  # type: ignore[attr-defined]
    run.inside = inside  # type: ignore[attr-defined]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    with recording_comm():
        for label, setup, batch in (("ResNet-18 size, 32x32", resnet_setup, 16), ("GPT 6 blocks, tied", gpt_setup, 16)):
            variants = {name: make_loop(setup, batch, name) for name in ("bare", "probe", "monitor")}
            for run in variants.values():
                run(3)  # warm-up
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, run in variants.items():
                    times[name].append(run(args.steps))
            bare = times["bare"]
            bare_ms = statistics.median(bare) * 1e3
            monitor = variants["monitor"].monitor  # type: ignore[attr-defined]
            monitor.flush()
            for name, samples in times.items():
                ratios = [s / b for s, b in zip(samples, bare, strict=True)]
                seconds, steps = variants[name].inside  # type: ignore[attr-defined]
                if name == "monitor":
                    seconds += monitor.draw_seconds
                cost = 1e3 * seconds / max(steps, 1)
                row = (label, batch, name, statistics.median(samples) * 1e3, statistics.median(ratios), cost, bare_ms)
                rows.append(row)
            note = f"  monitor: {monitor.reads} reads, {monitor.frames} frames in {monitor.calls} steps"
            rows.append((label, batch, note, 0.0, 0.0, 0.0, 0.0))
            monitor.close()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.rounds} rounds x {args.steps} steps")
    print("in-call: time inside read()/update() (+ the monitor's drawing-thread CPU time) per step, vs the bare step")
    print(
        f"{'model':<22} {'batch':>5}  {'variant':<8} {'ms/step':>8} {'vs bare':>8} {'in-call ms':>10} {'in-call %':>9}"
    )
    for label, batch, name, ms, ratio, cost, bare_ms in rows:
        if ms == 0:
            print(f"{label:<22} {batch:>5} {name}")
            continue
        share = 100 * cost / bare_ms
        print(f"{label:<22} {batch:>5}  {name:<8} {ms:8.1f} {ratio:8.3f} {cost:10.2f} {share:8.2f}%")


if __name__ == "__main__":
    main()

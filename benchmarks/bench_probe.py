"""Probe overhead: a training step with ``GradientProbe.read()`` vs the same step without it.

Depth-20, width-128 MLPs on the spiral set, batch 128, SGD. Bare and instrumented loops run interleaved in
rounds (so drift in machine load hits both alike) and the table reports medians of per-round ratios.
Target: overhead <= 2% of the step.

    python benchmarks/bench_probe.py [--rounds 15] [--steps 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

import gradwidgets as gw


def make_loop(activation: str, instrumented: bool, track_weights: bool, batch_size: int, detail_every: int = 20):
    cfg = gw.NetConfig(depth=20, width=128, activation=activation, init="kaiming")
    data = gw.make_dataset("spiral", n_samples=2048)
    torch.manual_seed(0)
    model = gw.build_model(cfg, data.in_features, data.out_features)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    probe = gw.GradientProbe(model, track_weights, detail_every) if instrumented else None
    gen = torch.Generator().manual_seed(1)

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            index = torch.randint(len(data.x_train), (batch_size,), generator=gen)
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if probe is not None:
                probe.read(loss)
        return (time.perf_counter() - start) / steps

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for activation, batch in (("relu", 128), ("sigmoid", 128), ("relu", 512)):
        variants = {
            "bare": make_loop(activation, False, False, batch),
            "probe (default: detail every 20)": make_loop(activation, True, True, batch, 20),
            "probe (grad norms only)": make_loop(activation, True, False, batch, 100_000),
            "probe (everything every step)": make_loop(activation, True, True, batch, 1),
        }
        for run in variants.values():
            run(20)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, run in variants.items():
                times[name].append(run(args.steps))
        bare = times["bare"]
        for name, samples in times.items():
            ratios = [s / b for s, b in zip(samples, bare, strict=True)]
            rows.append((activation, batch, name, statistics.median(samples) * 1e3, statistics.median(ratios)))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), depth 20 x width 128 MLP, SGD")
    print(f"{'activation':<10} {'batch':>5}  {'variant':<34} {'ms/step':>8} {'vs bare':>8} {'overhead':>9}")
    for activation, batch, name, ms, ratio in rows:
        print(f"{activation:<10} {batch:>5}  {name:<34} {ms:8.3f} {ratio:8.3f} {100 * (ratio - 1):8.1f}%")


if __name__ == "__main__":
    main()

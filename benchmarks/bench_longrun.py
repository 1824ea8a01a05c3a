"""Long runs: 100k training steps with the probe and bounded history; memory must stay flat.

Prints resident memory (RSS) and the history's own bytes every 10k steps, and the growth from 10k to the end.

    python benchmarks/bench_longrun.py [--steps 100000]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

import gradwidgets as gw


def rss_mib() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    session = gw.TrainingSession(depth=6, width=16, batch_size=32, activation="tanh", history_size=2000)
    every = max(args.steps // 10, 1)
    start = time.perf_counter()
    rows = []
    while session.steps < args.steps:
        session.step(min(every, args.steps - session.steps))
        rows.append((session.steps, rss_mib(), session.history.nbytes / 1024, len(session.history)))
    elapsed = time.perf_counter() - start
    print(f"{'steps':>8} {'RSS MiB':>9} {'history KiB':>12} {'held':>6}")
    for steps, rss, hist, held in rows:
        print(f"{steps:>8} {rss:9.1f} {hist:12.1f} {held:>6}")
    growth = rows[-1][1] - rows[0][1]
    print(f"RSS growth from step {rows[0][0]} to {rows[-1][0]}: {growth:+.1f} MiB; {args.steps / elapsed:.0f} steps/s")


if __name__ == "__main__":
    main()

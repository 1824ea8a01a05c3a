"""GradientLogger: cost per training step, file size on long runs, and watch latency (write -> screen).

1. **Cost**: the 6-block GPT of ``examples/train_gpt.py`` (d_model 64, context 64, batch 16, AdamW, one torch
   thread), a bare loop vs the same loop with ``logger.log(loss)``, interleaved in rounds; medians of per-round
   ratios. Target at the default cadence (``every=10``): <= 2%.
2. **Size**: 100,000 steps x 50 layers written through the logger's record path (synthetic numbers, detail
   fields changing every 20th read like the probe's), at ``every=1`` (worst case) and the default ``every=10``.
   Target: bounded (at most ``3 * keep_recent`` records).
3. **Watch latency**: ``gradwidgets watch`` (real Voila + headless Chromium) on a file this process appends to;
   time from the ``write()`` of a record to its step number appearing on the page. Target: <= 1 s.

    python benchmarks/bench_logger.py [--rounds 7] [--steps 30] [--skip-watch]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import gradwidgets as gw
from gradwidgets.core.runfile import RunRecord, RunWriter, split_stats
from gradwidgets.core.stats import make_stats

ROOT = Path(__file__).resolve().parents[1]


def _gpt_module():
    spec = importlib.util.spec_from_file_location("train_gpt", ROOT / "examples" / "train_gpt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_cost(rounds: int, steps: int, every_values: tuple[int, ...]) -> None:
    gpt = _gpt_module()
    torch.set_num_threads(1)
    text = gpt.corpus(50_000)
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])
    torch.manual_seed(0)
    model = gpt.GPT(len(chars), blocks=6, d_model=64, heads=4, context=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stream = gpt.batches(data, 16, 64, torch.Generator().manual_seed(1))
    folder = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    loggers = {every: gw.GradientLogger(model, folder / f"every{every}.gwrun", every=every) for every in every_values}

    def run(logger: gw.GradientLogger | None) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            x, y = next(stream)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            loss.backward()
            if logger is not None:
                logger.log(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) / steps

    run(None)  # warm up
    ratios: dict[int, list[float]] = {every: [] for every in every_values}
    bare_times = []
    for _ in range(rounds):
        bare = run(None)
        bare_times.append(bare)
        for every, logger in loggers.items():
            ratios[every].append(run(logger) / bare - 1)
    n_layers = len(loggers[every_values[0]]._reader.names)
    print(f"\n## Logger cost per step: 6-block GPT ({n_layers} layers), {rounds} rounds x {steps} steps, 1 thread")
    print(f"bare step: {statistics.median(bare_times) * 1e3:.1f} ms (median)\n")
    print("| cadence | overhead (median of rounds) | min | max |")
    print("|---|---|---|---|")
    for every, values in ratios.items():
        label = f"every={every}" + (" (default)" if every == gw.core.logger.DEFAULT_EVERY else "")
        print(f"| {label} | {statistics.median(values) * 100:+.2f}% | {min(values) * 100:+.2f}% | "
              f"{max(values) * 100:+.2f}% |")
    for logger in loggers.values():
        logger.close()


def synthetic_stats(step: int, n_layers: int, rng: np.random.Generator, detail: dict) -> gw.GradientStats:
    if step == 1 or step % 20 == 0:
        detail.update(
            grad_mean_abs=rng.random(n_layers), grad_max_abs=rng.random(n_layers), weight_norm=rng.random(n_layers),
            update_ratio=rng.random(n_layers), drift=rng.random(n_layers), detail_step=step,
        )
    values = {
        "names": tuple(f"blocks.{i // 4}.layer{i % 4}" for i in range(n_layers)),
        "kinds": ("Linear",) * n_layers, "roles": ("hidden",) * n_layers,
        "blocks": np.arange(n_layers) // 4, "param_count": np.full(n_layers, 4096.0),
        "grad_norm": rng.random(n_layers), "frozen": np.zeros(n_layers, bool), "has_grad": np.ones(n_layers, bool),
        "step": step, "loss": float(rng.random()), **detail,
    }
    return make_stats(values, n_layers)


def bench_size(total_steps: int, n_layers: int, keep_recent: int) -> None:
    print(f"\n## File size after {total_steps:,} steps x {n_layers} layers (keep_recent={keep_recent})\n")
    print("| cadence | records written | records in file | bound (3 x keep_recent) | file size | "
          "bytes/record | write time |")
    print("|---|---|---|---|---|---|---|")
    verdict = gw.Diagnosis("healthy", "Healthy.", "Nothing to fix.", 0.5)
    for every in (1, 10):
        rng = np.random.default_rng(0)
        detail: dict = {}
        folder = Path(tempfile.mkdtemp(prefix="gw-size-"))
        path = folder / "long.gwrun"
        started = time.perf_counter()
        written = 0
        with RunWriter(path, keep_recent=keep_recent) as writer:
            pending_steps: list[int] = []
            for step in range(1, total_steps + 1):
                pending_steps.append(step)
                if not (step == 1 or step % every == 0):
                    continue
                stats = synthetic_stats(written + 1, n_layers, rng, detail)
                if written == 0:
                    writer.write_header(split_stats(stats)[0])
                record = RunRecord.from_stats(stats, verdict, pending_steps, rng.random(len(pending_steps)))
                record.step = step
                writer.append(record)
                pending_steps = []
                written += 1
        elapsed = time.perf_counter() - started
        size = path.stat().st_size
        run = gw.load_run(path)
        print(f"| every={every} | {written:,} | {len(run):,} | {3 * keep_recent:,} | {size / 2**20:.1f} MiB | "
              f"{size / len(run):.0f} | {elapsed:.1f} s ({writer.compactions} thinning passes) |")


def bench_watch(samples: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from _browser import headless_chromium
    from _servers import ARTIFACTS, Server, free_port, server_environment

    folder = Path(tempfile.mkdtemp(prefix="gw-watch-"))
    path = folder / "latency.gwrun"
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(8)])
    logger = gw.GradientLogger(model, path, every=1)

    def write(step: int) -> float:
        model.zero_grad()
        model(torch.randn(4, 16)).pow(2).mean().mul(1.1**step).backward()
        logger.log(step=step)
        return time.monotonic()

    write(1)
    port = free_port()
    command = [sys.executable, "-m", "gradwidgets", "watch", str(path), "--no-browser", "--port", str(port)]
    server = Server(command, port, ARTIFACTS / "bench-watch.log", env=server_environment({"PYTHONPATH": str(ROOT)}))
    latencies = []
    try:
        server.wait_listening(90)
        with headless_chromium() as browser:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(server.url, timeout=120_000)
            page.wait_for_function("() => document.body.innerText.includes('step 1 ·')", timeout=120_000)
            rng = np.random.default_rng(0)
            for step in range(2, samples + 2):
                time.sleep(float(rng.uniform(0.3, 1.2)))  # writes land at random phases of the poll interval
                written = write(step)
                page.wait_for_function(
                    "k => document.body.innerText.includes('step ' + k + ' ·')", arg=step, polling=10, timeout=30_000
                )
                latencies.append(time.monotonic() - written)
            page.close()
    finally:
        server.stop()
        logger.close()
    values = np.array(latencies)
    print(f"\n## Watch latency, write() -> step on screen ({samples} records, Voila + headless Chromium)\n")
    print("| median | p90 | max |")
    print("|---|---|---|")
    print(f"| {np.median(values) * 1e3:.0f} ms | {np.percentile(values, 90) * 1e3:.0f} ms | "
          f"{values.max() * 1e3:.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--total-steps", type=int, default=100_000)
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--keep-recent", type=int, default=gw.core.runfile.DEFAULT_KEEP_RECENT)
    parser.add_argument("--watch-samples", type=int, default=20)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-size", action="store_true")
    parser.add_argument("--skip-watch", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not args.skip_cost:
        bench_cost(args.rounds, args.steps, (gw.core.logger.DEFAULT_EVERY, 1))
    if not args.skip_size:
        bench_size(args.total_steps, args.layers, args.keep_recent)
    if not args.skip_watch:
        bench_watch(args.watch_samples)


if __name__ == "__main__":
    main()

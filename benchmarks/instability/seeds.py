"""Can any threshold on the signals warn >= 20 steps before the spikes run.py's edge rule misses, without a false
alarm (issue 23)? Those spikes come from configurations where the same hyperparameters spike on some seeds and not
on others. This script trains each such configuration, and a twin that should not be warned (the same peak with a
longer warm-up, or the same model at a lower peak), on ``--seeds`` seeds with run.py's loop and signals (every 5
steps), and per signal the rules could use compares its value 20 steps before each spike with the most extreme
value it reaches at any reading of a calm run (one that did not spike: the configuration's other seeds, the twin's
seeds). A threshold that never fires on a calm run can warn that early at most the spikes whose value lies beyond
every calm value: printed as "warnable k of S", the best any single-signal threshold can do.

Signals (as ``warn_unstable`` sees them): ``edge cos`` the gradient-momentum cosine averaged over blocks and the
readings of the last 20 steps (lower: more oscillation); ``max logit`` the largest attention logit over blocks;
``logit growth`` its 20-step growth factor; ``entropy`` the lowest attention entropy over blocks; ``update ratio``
the largest |dW|/|W| over blocks; ``log Z`` the output's mean log-partition; ``lr`` the learning rate itself.

    nice -n 10 python benchmarks/instability/seeds.py [--seeds 0 1 2 3 4 5 6 7] [--jobs 2] [--only WORD ...]

What it found on seeds 0-7 (4 min with two jobs; README, "Instability signals"): the 6-block GPT warmed up over 20
steps to lr 0.3 spiked on 5 of 8 seeds, over 100 steps on none; the tiny GPT spiked on 5 of 8 at lr 0.3 and on 8 of
8 at lr 1. No signal separates a spike 20 steps ahead from the calm runs with a margin: 0 of 5 warnable on every
signal for the 20-step warm-up (its calm seeds oscillate more: cosine -0.81), 0-3 of 5 and 0-2 of 8 on the tiny
GPT's except the update ratio (0.0777-0.0938 against a calm 0.0775, a 0.3% margin at the closest) and the learning
rate itself while the schedule will double it (this model's critical lr, not a signal that carries over). With
``--only tiny`` on seeds 0-31 (40 s) the update ratio's margin is gone: lr 0.3 spiked on 19 seeds, none warnable on
it, at most 4 on any signal; the lr-1 runs (32 of 32 spiking) at most 24 of 32.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from run import HELD_OUT, RUNS, RunSpec, first_warning, spike_step, train  # noqa: E402 - the benchmark's loop

from gradwidgets.core.signals import (  # noqa: E402
    EDGE_RISE,
    LOOKBACK,
    InstabilityReading,
    edge_cosine,
    reading_before,
)

LEAD = 20
CONFIGS = (
    # (a configuration the edge rule misses, its twins that should not be warned: a longer warm-up, a lower peak,
    # and for every configuration the healthy run)
    ("* lr 3e-1, warm-up 20", ("qk-layernorm lr 3e-1", "healthy lr 1e-2")),
    ("* tiny, lr 3e-1, warm-up 200", ("healthy lr 1e-2",)),
    ("* tiny, lr 1, warm-up 200", ("* tiny, lr 3e-1, warm-up 200", "healthy lr 1e-2")),
)


def _edge_cos(history: Sequence[InstabilityReading], index: int) -> float:
    return edge_cosine(history[: index + 1])[0]


def _logit_growth(history: Sequence[InstabilityReading], index: int) -> float:
    before = reading_before(history[: index + 1], LOOKBACK)
    if before is None:
        return math.nan
    return float(np.nanmax(history[index].max_logit / np.maximum(before.max_logit, 1e-12)))


@dataclass(frozen=True)
class Signal:
    name: str
    value: Callable[[Sequence[InstabilityReading], int], float]
    low: bool = False  # a lower value is the alarming direction


SIGNALS = (
    Signal("edge cos", _edge_cos, low=True),
    Signal("max logit", lambda h, i: float(np.nanmax(h[i].max_logit))),
    Signal("logit growth", _logit_growth),
    Signal("entropy", lambda h, i: float(np.nanmin(h[i].entropy)), low=True),
    Signal("update ratio", lambda h, i: float(np.nanmax(h[i].update_ratio))),
    Signal("log Z", lambda h, i: float(h[i].log_z)),
    Signal("lr", lambda h, i: float(h[i].lr)),
)


def _rising(reading: InstabilityReading) -> bool:
    """The edge rule's schedule condition: the scheduler will at least double the learning rate."""
    return reading.lr > 0 and reading.lr_ahead >= EDGE_RISE * reading.lr


def _extreme(
    signal: Signal, history: Sequence[InstabilityReading], until: float = math.inf,
    when: Callable[[InstabilityReading], bool] | None = None,
) -> float:
    """The most extreme value of ``signal`` over the readings from step LOOKBACK to ``until`` (those for which
    ``when`` holds, if given): where a threshold rule would have fired first."""
    values = [signal.value(history, i) for i, r in enumerate(history)
              if LOOKBACK <= r.step <= until and (when is None or when(r))]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan
    return min(values) if signal.low else max(values)


Runs = Sequence[tuple[list[float], list[InstabilityReading]]]  # per seed: (losses, readings)


def describe(spec: RunSpec, seeds: Sequence[int], runs: Runs) -> tuple[list[tuple[int, list[InstabilityReading]]],
                                                                       list[list[InstabilityReading]]]:
    """Prints one configuration's seeds (spike step / the edge rule's first warning / rise); returns (the spiking
    seeds' (spike, readings), the calm seeds' readings)."""
    spiked: list[tuple[int, list[InstabilityReading]]] = []
    calm: list[list[InstabilityReading]] = []
    cells = []
    for seed, (losses, history) in zip(seeds, runs, strict=True):
        spike, rise = spike_step(losses)
        warned, _ = first_warning(history)
        cells.append(f"{seed}: {'-' if spike is None else spike}/{'-' if warned is None else warned}/{rise:.2f}x")
        if spike is None:
            calm.append(history)
        else:
            spiked.append((spike, history))
    print(f"\n{spec.name.strip(' *')} (lr {spec.lr:g}, warm-up {spec.warmup}, {spec.depth} blocks, batch "
          f"{spec.batch}): {len(spiked)} of {len(seeds)} seeds spiked; per seed spike/warned/rise")
    print("  " + ", ".join(cells))
    return spiked, calm


def separable(spiked: list[tuple[int, list[InstabilityReading]]], calm: list[list[InstabilityReading]]) -> None:
    """Per signal, at any time and only while the schedule will double the learning rate (the edge rule's
    condition): its most extreme value over the calm runs, its most extreme value up to LEAD steps before each
    spike, and how many spikes a threshold that never fires on a calm run could have warned that early."""
    for label, when in (("any time", None), ("lr to double", _rising)):
        print(f"  {label}:")
        for signal in SIGNALS:
            bound = [v for v in (_extreme(signal, h, when=when) for h in calm) if math.isfinite(v)]
            limit = (min(bound) if signal.low else max(bound)) if bound else math.nan
            ahead = [_extreme(signal, history, spike - LEAD, when) for spike, history in spiked]
            beyond = sum(1 for v in ahead if math.isfinite(v) and (v < limit if signal.low else v > limit))
            print(f"    {signal.name:13} {'lowest' if signal.low else 'highest'} on the calm runs {limit:8.3g}; "
                  f"up to {LEAD} steps before each spike: " + " ".join(f"{v:.3g}" for v in ahead)
                  + f"  -> warnable {beyond} of {len(spiked)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (one torch thread each)")
    parser.add_argument("--only", nargs="+", default=None, metavar="WORD",
                        help="only the configurations and twins whose name contains one of these words")
    args = parser.parse_args()
    by_name = {spec.name.strip(): spec for spec in RUNS + HELD_OUT}

    def kept(name: str) -> bool:
        return args.only is None or any(word in name for word in args.only)

    configs = [(name, tuple(t for t in twins if kept(t))) for name, twins in CONFIGS if kept(name)]
    names = list(dict.fromkeys([name for name, _ in configs] + [t for _, twins in configs for t in twins]))
    jobs = [(by_name[name], seed) for name in names for seed in args.seeds]
    print(f"seeds {args.seeds}, {args.steps} steps unless the run says, signals every 5 steps; a calm run: one "
          f"that did not spike, of the configuration itself or of its twin")
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(train, *zip(*[(spec, args.steps, 5, seed) for spec, seed in jobs], strict=True)))
    outcome = {}
    for k, name in enumerate(names):
        chunk = results[k * len(args.seeds) : (k + 1) * len(args.seeds)]
        outcome[name] = describe(by_name[name], args.seeds, [(losses, history) for losses, history, _ in chunk])
    for name, twins in configs:
        spiked, calm = outcome[name]
        if not spiked:
            continue
        calm = calm + [history for twin in twins for history in outcome[twin][1]]
        print(f"\n{name.strip(' *')}: {len(spiked)} spikes against {len(calm)} calm runs (its own and those of "
              + ", ".join(twin.strip(" *") for twin in twins) + ")")
        separable(spiked, calm)

if __name__ == "__main__":
    main()

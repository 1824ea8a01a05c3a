"""A training script stand-in for the watch tests and benchmark: logs one record every ``--interval`` seconds.

The gradients grow 25% per record (the loss is scaled up), so the bars on a watching page visibly grow.
Prints ``ready`` once the file has its first record; with ``--hold`` it then waits for a line on stdin before
writing on, so that a test's page sees the growth from its start whatever the server's start-up took (the
float32 norms overflow to inf after about 210 records: left running, a late page would see bars on the floor).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

import gradwidgets as gw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--growth", type=float, default=1.25)
    parser.add_argument("--hold", action="store_true", help="after the first record, wait for a line on stdin")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(6)], nn.Linear(16, 1))
    x = torch.randn(32, 16)
    with gw.GradientLogger(model, args.path, every=1) as logger:
        for step in range(1, args.steps + 1):
            model.zero_grad()
            loss = model(x).pow(2).mean()
            (loss * args.growth**step).backward()
            logger.log(loss, step=step)
            if step == 1:
                print("ready", flush=True)
                if args.hold:
                    sys.stdin.readline()
            time.sleep(args.interval)


if __name__ == "__main__":
    main()

"""Run by ``python -m torch.distributed.run --nproc-per-node 2`` from tests/test_distributed.py (gloo, CPU).

Trains a small MLP for a few SGD steps on a global batch split across the ranks, with ``GradientLogger`` on every
rank, wrapped as asked: ``ddp`` (DistributedDataParallel), ``fsdp2`` (``fully_shard`` per layer and the root).
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
from torch import nn

import gradwidgets as gw

STEPS = 4
GLOBAL_BATCH = 16


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, GLOBAL_BATCH, 6, generator=generator)
    return x, torch.randn(STEPS, GLOBAL_BATCH, 3, generator=generator)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wrap", choices=("ddp", "fsdp2"), required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model()
    if args.wrap == "ddp":
        wrapped = nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        wrapped = fully_shard(model)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    logger = gw.GradientLogger(wrapped, args.out, every=1)
    xs, ys = data()
    share = GLOBAL_BATCH // world
    for step in range(STEPS):
        x = xs[step, rank * share : (rank + 1) * share]
        y = ys[step, rank * share : (rank + 1) * share]
        optimizer.zero_grad()
        loss = (wrapped(x) - y).pow(2).mean()
        loss.backward()
        stats = logger.log(loss)
        assert (stats is not None) == (rank == 0 or args.wrap == "fsdp2"), (rank, stats)
        optimizer.step()
    assert logger.writes == (rank == 0)
    logger.close()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""Run by ``python -m torch.distributed.run --nproc-per-node 2`` from tests/test_distributed.py (gloo, CPU).

Each run named on the command line (``WRAP:MODEL``) trains one model for a few SGD steps on a global batch split
across the ranks, with ``GradientLogger`` (every step) on every rank, and writes ``OUT/WRAP-MODEL.gwrun``:

* wraps: ``ddp`` (DistributedDataParallel), ``fsdp2`` (``fully_shard`` per block and the root), ``hsdp``
  (``fully_shard`` on a 2 x 1 mesh: both ranks hold every parameter whole, replicated);
* models: ``mlp``; ``gpt``, a small GPT whose head (tied to the token embedding) is declared before its body, so
  registration order is not data-flow order; ``lstm``, a 2-layer ``nn.LSTM`` under a head declared first;
  ``branchy``, an auxiliary branch used every other step with ``zero_grad(set_to_none=False)``.

The models, batches and loop are also what tests/test_distributed.py and tests/test_rows.py run in one process.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from _models import Branchy, TinyGPT
from torch import nn
from torch.nn import functional as F

import gradwidgets as gw

STEPS = 4
GLOBAL_BATCH = 16
VOCAB, WIDTH, HEADS, CONTEXT = 32, 16, 2, 8


class LSTMNet(nn.Module):
    """A 2-layer ``nn.LSTM`` (one module owning both layers' weights) under a head declared before it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(12, 3)
        self.lstm = nn.LSTM(4, 12, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


def head_first_gpt() -> TinyGPT:
    """2 blocks (MLPs 2x wide), the head tied to the token embedding and declared first (``_models.TinyGPT``)."""
    return TinyGPT(VOCAB, WIDTH, HEADS, CONTEXT, depth=2, head_first=True, expansion=2)


def make_model(kind: str = "mlp") -> nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3))
    return {"gpt": head_first_gpt, "lstm": LSTMNet, "branchy": Branchy}[kind]()


def data(kind: str = "mlp") -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of every step's global batch: ``(STEPS, GLOBAL_BATCH, ...)``."""
    generator = torch.Generator().manual_seed(1)
    if kind == "gpt":
        idx = torch.randint(0, VOCAB, (STEPS, GLOBAL_BATCH, CONTEXT + 1), generator=generator)
        return idx[..., :-1], idx[..., 1:]
    shape, out = {"mlp": ((6,), 3), "lstm": ((5, 4), 3), "branchy": ((4,), 2)}[kind]
    x = torch.randn(STEPS, GLOBAL_BATCH, *shape, generator=generator)
    return x, torch.randn(STEPS, GLOBAL_BATCH, out, generator=generator)


def loss_of(kind: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
    if kind == "gpt":
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
    out = model(x, use_aux=step % 2 == 0) if kind == "branchy" else model(x)
    return (out - y).pow(2).mean()


def zero_grad(kind: str, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad(set_to_none=kind != "branchy")  # branchy: the unused branch keeps a zeroed gradient


def train(kind: str, model: nn.Module, on_step: Callable[[int, torch.Tensor], None], rank: int = 0, world: int = 1):
    """The loop every test runs: SGD on this rank's share of each global batch, ``on_step`` after backward."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    xs, ys = data(kind)
    share = GLOBAL_BATCH // world
    for step in range(STEPS):
        zero_grad(kind, optimizer)
        part = slice(rank * share, (rank + 1) * share)
        loss = loss_of(kind, model, xs[step, part], ys[step, part], step)
        loss.backward()
        on_step(step, loss)
        optimizer.step()


def wrap(how: str, kind: str, model: nn.Module) -> nn.Module:
    if how == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.fsdp import fully_shard

    mesh = None
    if how == "hsdp":
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (dist.get_world_size(), 1), mesh_dim_names=("replicate", "shard"))
    for module in inner_modules(kind, model):
        fully_shard(module, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def inner_modules(kind: str, model: nn.Module) -> list[nn.Module]:
    """What gets its own ``fully_shard`` before the root: each Linear, each block, the LSTM, the body."""
    if kind == "mlp":
        return [m for m in model if isinstance(m, nn.Linear)]
    if kind == "gpt":
        return list(model.h)
    return [model.lstm] if kind == "lstm" else [model.body]


def run(how: str, kind: str, out: Path, rank: int, world: int) -> None:
    model = wrap(how, kind, make_model(kind))
    logger = gw.GradientLogger(model, out / f"{how}-{kind}.gwrun", every=1)
    sharded = how != "ddp"

    def log(step: int, loss: torch.Tensor) -> None:
        stats = logger.log(loss)
        assert (stats is not None) == (rank == 0 or sharded), (rank, stats)
        if sharded:  # every rank sums the same rows in the same order
            names: list = [None] * world
            dist.all_gather_object(names, (stats.names, stats.aliases))
            assert all(n == names[0] for n in names), names

    train(kind, model, log, rank, world)
    assert logger.writes == (rank == 0)
    logger.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", required=True, help="comma-separated WRAP:MODEL, e.g. ddp:mlp,fsdp2:gpt")
    parser.add_argument("--out", required=True, help="folder for the run files")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    for item in args.runs.split(","):
        how, kind = item.split(":")
        run(how, kind, Path(args.out), rank, world)
        dist.barrier()
    dist.destroy_process_group()
    # Every run file is closed: leave without the interpreter's finalisation, where torch's gloo threads can still
    # hold work and abort the process (SIGABRT, "terminate called without an active exception", ~1 in 5 runs under
    # load, also before gradwidgets' signals existed; pytorch/pytorch#179291 describes the race).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

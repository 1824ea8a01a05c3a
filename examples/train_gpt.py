"""Train a small GPT (character level, tied embeddings like GPT-2/nanoGPT) and record its gradients to a run file.

    python examples/train_gpt.py --steps 2000 --log run.gwrun      # then, in another terminal:
    gradwidgets watch run.gwrun

Options worth knowing: ``--accumulate 4`` (gradient accumulation: the logger is called once per optimizer step),
``--compile`` (torch.compile; the logger adds no hook to the graph), ``--every N`` (log every N-th step).
Under ``torchrun --nproc-per-node 2 examples/train_gpt.py --log run.gwrun`` it trains with DDP (gloo on CPU) and
rank 0 writes the file. The text is generated (nothing is downloaded): the model learns to continue sentences.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time

import torch
from torch import nn
from torch.nn import functional as F

import gradwidgets as gw

WORDS = "the a gradient layer norm vanishes explodes flows through each block of deep nets and learns slowly".split()


def corpus(n_chars: int = 200_000, seed: int = 0) -> str:
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + ". "
        out.append(sentence)
        size += len(sentence)
    return "".join(out)


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token + position embeddings, pre-LN blocks, a head that shares the token embedding's weight."""

    def __init__(self, vocab: int, blocks: int = 6, d_model: int = 64, heads: int = 4, context: int = 64) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads) for _ in range(blocks))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2
        mask = torch.triu(torch.full((context, context), float("-inf")), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        x = self.wte(tokens) + self.wpe(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x, self.mask[:t, :t])
        return self.lm_head(self.ln_f(x))


def batches(data: torch.Tensor, batch: int, context: int, generator: torch.Generator):
    while True:
        starts = torch.randint(0, len(data) - context - 1, (batch,), generator=generator)
        x = torch.stack([data[s : s + context] for s in starts])
        y = torch.stack([data[s + 1 : s + context + 1] for s in starts])
        yield x, y


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    parser.add_argument("--log", help="run file to record gradients to (e.g. run.gwrun)")
    parser.add_argument("--every", type=int, default=gw.core.logger.DEFAULT_EVERY, help="log every N-th step")
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--accumulate", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    distributed = "RANK" in os.environ
    if distributed:
        torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank() if distributed else 0
    torch.manual_seed(args.seed)
    text = corpus()
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
    model: nn.Module = GPT(len(chars), args.blocks, args.d_model, 4, args.context)
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    if args.compile:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    logger = None
    if args.log:
        meta = {k: v for k, v in vars(args).items() if k != "log"}
        logger = gw.GradientLogger(model, args.log, every=args.every, meta=meta)
    stream = batches(data, args.batch, args.context, torch.Generator().manual_seed(args.seed + rank))
    started = time.monotonic()
    for step in range(1, args.steps + 1):
        micro_losses = []
        for _ in range(args.accumulate):
            x, y = next(stream)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten()) / args.accumulate
            loss.backward()
            micro_losses.append(loss)
        if logger is not None:  # once per optimizer step, before step()/zero_grad(); records the losses' sum
            logger.log(micro_losses, step=step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if rank == 0 and (step % 100 == 0 or step == args.steps):
            rate = step / (time.monotonic() - started)
            print(f"step {step}  loss {loss.item() * args.accumulate:.3f}  ({rate:.1f} steps/s)", flush=True)
    if logger is not None:
        logger.close()
        if rank == 0:
            print(f"recorded {logger.records} steps to {args.log}; watch: gradwidgets watch {args.log}")
    if distributed:
        torch.distributed.destroy_process_group()
    assert math.isfinite(loss.item())


if __name__ == "__main__":
    main()

"""Small shared helpers for the core tests: one forward/backward at initialization, measured in plain torch."""

from __future__ import annotations

import torch
from torch.nn import functional as F

import gradwidgets as gw


def batch_for(config: gw.NetConfig, dataset: str | None = None, n: int = 256, seed: int = 0):
    data = gw.make_dataset(
        dataset or {"mlp": "spiral", "rnn": "adding", "transformer": "recall"}[config.kind],
        n_samples=max(2 * n, 64),
        seed=seed,
        seq_len=config.seq_len,
    )
    return data, data.x_train[:n], data.y_train[:n]


def loss_fn(data: gw.Dataset, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output, target) if data.task == "regression" else F.cross_entropy(output, target)


def stats_at_init(config: gw.NetConfig, n: int = 256, seed: int = 0) -> gw.GradientStats:
    """Build with a fixed seed, one backward on a batch, read the probe: the numbers the tutorials quote."""
    data, x, y = batch_for(config, n=n, seed=seed)
    torch.manual_seed(seed)
    model = gw.build_model(config, data.in_features, data.out_features)
    probe = gw.GradientProbe(model)
    loss = loss_fn(data, model(x), y)
    loss.backward()
    return probe.read(loss)


def ratio_at_init(**fields) -> float:
    stats = stats_at_init(gw.NetConfig(**fields))
    norms = stats.block_grad_norm()
    return float(norms[0] / norms[-1])

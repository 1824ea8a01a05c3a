"""Family 1: this project's own nets, ``gw.build_model(gw.NetConfig(...))``: MLP, RNN/LSTM/GRU, transformer."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import gradwidgets as gw

from . import common as c
from .harness import Program, Setup

FAMILY = "gradwidgets nets"
LN2, LN8 = math.log(2), math.log(8)


class WithUnusedHead(nn.Module):
    """The net plus an auxiliary head that forward() never calls (a branch left out of the loss)."""

    def __init__(self, net: nn.Module, width: int, out: int) -> None:
        super().__init__()
        self.net = net
        self.aux_head = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def net(
    name: str,
    config: gw.NetConfig,
    labels: tuple[str, str],
    check: c.Check,
    *,
    data: str = "spiral",
    seq_len: int | None = None,
    optimizer: str = "adam",
    lr: float = 1e-2,
    eps: float = 1e-8,
    fixed: dict[str, Any] | None = None,
    steps: int = 40,
    mode: str = "standard",
    case: int | None = None,
    batch: int = 64,
    post: Any = None,
    watch_layer: str | None = None,
    clip: float | None = None,
    set_to_none: bool = True,
    momentum: float = 0.9,
    activation_hooks: bool = True,
) -> Program:
    """A program over ``build_model(config)``; ``fixed`` overrides (config fields, ``lr``, ``eps``, ``optimizer``)
    give its fixed twin."""
    fixed = fixed or {}

    def build(is_fixed: bool) -> Setup:
        overrides = fixed if is_fixed else {}
        cfg_changes = {k: v for k, v in overrides.items() if k not in ("lr", "eps", "optimizer", "clip")}
        cfg = config.replace(**cfg_changes) if cfg_changes else config
        if seq_len is not None:
            batch_fn, loss, fin, fout = c.sequences(data, seq_len, batch=batch)
        else:
            batch_fn, loss, fin, fout = c.tabular(data, batch=batch)
        model = gw.build_model(cfg, fin, fout)
        if post is not None:
            replaced = post(model, is_fixed)
            model = replaced if replaced is not None else model
        rate = overrides.get("lr", lr)
        kind = overrides.get("optimizer", optimizer)
        if kind == "adam":
            opt = c.adam(model, rate, overrides.get("eps", eps))
        else:
            opt = c.sgd(model, rate, momentum)
        return Setup(
            model, opt, batch_fn, loss, config=cfg, clip=overrides.get("clip", clip), watch_layer=watch_layer,
            set_to_none=set_to_none, activation_hooks=activation_hooks,
        )

    return Program(name, FAMILY, build, labels, check, steps=steps, mode=mode, case=case)


def _kill_bias(block: str, fraction: float) -> Any:
    """Set a hidden block's bias to -20 on ``fraction`` of its units: those ReLUs output 0 for every input."""

    def post(model: nn.Module, is_fixed: bool) -> None:
        if is_fixed:
            return
        layer = model.get_submodule(block).layer
        n = int(round(fraction * layer.out_features))
        with torch.no_grad():
            layer.bias[:n] = -20.0

    return post


def _freeze_first(count: int) -> Any:
    def post(model: nn.Module, is_fixed: bool) -> None:
        for module in [model.input, *list(model.blocks)[: count - 1]]:
            for p in module.parameters():
                p.requires_grad_(False)

    return post


def _unused_head(model: nn.Module, is_fixed: bool) -> nn.Module:
    return WithUnusedHead(model, model.head.in_features, model.head.out_features)


def _compiled(model: nn.Module, is_fixed: bool) -> nn.Module:
    return torch.compile(model, backend="eager")


def programs() -> list[Program]:
    M = gw.NetConfig
    he = {"init": "kaiming"}
    out = [
        # ---- healthy
        net("nets/mlp-relu-he-d4", M(depth=4, **he), ("healthy", "healthy"), c.healthy(), steps=60),
        net("nets/mlp-tanh-xavier-d6", M(depth=6, activation="tanh", init="xavier"), ("healthy", "healthy"),
            c.healthy(), data="moons"),
        net("nets/mlp-relu-bn-d10", M(depth=10, norm="batch", **he), ("healthy", "healthy"), c.healthy(),
            data="circles"),
        net("nets/mlp-resid-ln-d16", M(depth=16, residual=True, norm="layer", **he), ("healthy", "healthy"),
            c.healthy(), lr=3e-3, steps=60),
        net("nets/mlp-gelu-sgd-d3", M(depth=3, activation="gelu", **he), ("healthy", "healthy"), c.healthy(),
            data="moons", optimizer="sgd", lr=0.1),
        net("nets/mlp-relu-digits-d3", M(depth=3, width=64, **he), ("healthy", "healthy"), c.healthy(0.5),
            data="digits"),
        net("nets/lstm-fb1-adding-s10", M(kind="rnn", cell="lstm", forget_bias=1.0, width=32, seq_len=10),
            ("healthy", "healthy"), c.healthy(0.8), data="adding", seq_len=10, steps=60),
        net("nets/gru-recall-s5", M(kind="rnn", cell="gru", width=32, seq_len=5), ("healthy", "healthy"),
            c.healthy(0.8), data="recall", seq_len=5, steps=60),
        net("nets/transformer-resid-ln-d2", M(kind="transformer", depth=2, width=32, residual=True, norm="layer",
            seq_len=6), ("healthy", "healthy"), c.healthy(0.8), data="recall", seq_len=6, lr=3e-3, steps=60),
        net("nets/mlp-compiled-d4", M(depth=4, **he), ("healthy", "healthy"), c.healthy(), post=_compiled,
            activation_hooks=False, case=12),
        # ---- vanishing
        net("nets/mlp-sigmoid-d20-sgd", M(depth=20, activation="sigmoid"), ("vanishing", "vanishing"),
            c.vanishing(LN2), data="moons", optimizer="sgd", lr=0.1,
            fixed={"activation": "relu", "init": "kaiming", "residual": True, "norm": "layer"}, steps=60),
        net("nets/mlp-tanh-d30-normal", M(depth=30, activation="tanh", init="normal", init_std=0.05),
            ("vanishing", "vanishing"), c.vanishing(LN2), data="moons", optimizer="sgd", lr=0.1,
            fixed={"init": "xavier", "residual": True, "norm": "layer"}, steps=60),
        net("nets/rnn-tanh-recall-s30", M(kind="rnn", cell="rnn", activation="tanh", width=32, seq_len=30,
            init="orthogonal", init_gain=0.4), ("vanishing", "vanishing"), c.vanishing(LN8), data="recall",
            seq_len=30, fixed={"init_gain": 1.0}, steps=80, lr=1e-2, batch=32),
        net("nets/transformer-noresid-ln-d24", M(kind="transformer", depth=24, width=32, norm="layer",
            seq_len=6), ("vanishing", "vanishing"), c.vanishing(LN8), data="recall", seq_len=6, lr=3e-3,
            fixed={"residual": True}, steps=60, case=7),
        net("nets/transformer-noresid-d24", M(kind="transformer", depth=24, width=32, seq_len=6),
            ("vanishing", "vanishing"), c.vanishing(LN8), data="recall", seq_len=6, lr=3e-3,
            fixed={"residual": True, "norm": "layer"}, steps=60, case=1),
        net("nets/transformer-swiglu-noresid-d16", M(kind="transformer", depth=16, width=32, activation="swiglu",
            seq_len=6), ("vanishing", "vanishing"), c.vanishing(LN8), data="recall", seq_len=6, lr=3e-3,
            fixed={"residual": True, "norm": "layer"}, steps=60, case=1),
        # ---- exploding (over depth / over time)
        net("nets/mlp-relu-normal-d20-clip", M(depth=20, init="normal", init_std=0.3), ("exploding", "exploding"),
            c.exploding(), data="moons", optimizer="sgd", lr=0.05, clip=1.0, fixed={"init": "kaiming"}),
        net("nets/mlp-relu-bn-d60", M(depth=60, norm="batch", norm_position="post", **he),
            ("exploding", "healthy"), c.exploding(then="recovers", twin_frac=0.9), data="moons", lr=1e-2,
            fixed={"residual": True}, steps=60, case=13),
        net("nets/mlp-relu-bn-d40", M(depth=40, norm="batch", norm_position="post", **he),
            ("exploding", "healthy"), c.exploding(then="recovers"), data="moons", lr=1e-2,
            fixed={"residual": True}, steps=40, case=6),
        net("nets/rnn-relu-irnn-gain-s30", M(kind="rnn", cell="rnn", activation="relu", width=32, seq_len=30,
            init="identity", init_gain=1.3), ("exploding", "healthy"), c.exploding(then="recovers"), data="adding",
            seq_len=30, optimizer="sgd", lr=0.01, clip=1.0, fixed={"init_gain": 1.0}, steps=60),
        # ---- learning-rate divergence
        net("nets/mlp-relu-sgd-lr5", M(depth=4, **he), ("diverging", "diverging"), c.diverging(),
            data="moons", optimizer="sgd", lr=5.0, fixed={"lr": 0.05}),
        net("nets/transformer-adam-lr3", M(kind="transformer", depth=2, width=32, residual=True, norm="layer",
            seq_len=6), ("diverging", "diverging"), c.diverging(), data="recall", seq_len=6, lr=3.0,
            optimizer="sgd", fixed={"lr": 0.01}),
        # ---- dead
        net("nets/mlp-dead-layer", M(depth=4, **he), ("dead", "dead"), c.dead(), post=_kill_bias("blocks.1", 1.0),
            watch_layer="blocks.1.act"),
        net("nets/mlp-98pct-dead-last", M(depth=4, width=100, **he), ("dead", "dead"), c.dead(),
            post=_kill_bias("blocks.2", 0.98), watch_layer="blocks.2.act", case=5),
        # ---- optimizer-limited
        net("nets/mlp-sgd-lr1e-6", M(depth=4, **he), ("lr_too_small", "lr_too_small"), c.lr_too_small(),
            data="moons", optimizer="sgd", lr=1e-6, momentum=0.0, fixed={"lr": 0.1}),
        net("nets/mlp-sigmoid-d11-adam-eps", M(depth=11, activation="sigmoid", width=64),
            ("eps_limited", "eps_limited"), c.eps_limited(LN2), data="moons", lr=3e-3, fixed={"eps": 1e-30},
            steps=300, case=10),
        net("nets/mlp-sigmoid-d12-adam-eps", M(depth=12, activation="sigmoid", width=64),
            ("eps_limited", "eps_limited"), c.eps_limited(LN2), data="moons", lr=3e-3, fixed={"eps": 1e-30},
            steps=300, case=10),
        # ---- reading bugs
        net("nets/mlp-tanh-zero-grad-end-zeros", M(depth=4, activation="tanh", init="xavier"),
            ("no_gradient", "no_gradient"), c.no_gradient(), data="moons", mode="zero_grad_end",
            set_to_none=False, case=11),
        net("nets/mlp-relu-zero-grad-end-none", M(depth=4, **he), ("no_gradient", "no_gradient"), c.no_gradient(),
            data="moons", mode="zero_grad_end", case=11),
        net("nets/mlp-amp-unscaled", M(depth=6, **he), ("amp_unscaled", "amp_unscaled"), c.amp_unscaled(),
            data="moons", mode="amp_unscaled", case=8),
        net("nets/mlp-micro-batch", M(depth=6, **he), ("micro_batch", "micro_batch"), c.micro_batch(),
            data="moons", mode="micro_batch", batch=16, case=9),
        # ---- by design
        net("nets/mlp-unused-aux-head", M(depth=4, **he), ("unused", "unused"), c.unused(), data="moons",
            post=_unused_head),
        net("nets/mlp-frozen-first-2", M(depth=6, **he), ("frozen", "frozen"), c.frozen(), data="moons",
            post=_freeze_first(2)),
    ]
    return out

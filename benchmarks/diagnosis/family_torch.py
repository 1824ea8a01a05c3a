"""Family 2: torch's stock modules: nn.LSTM/GRU/RNN stacks, nn.TransformerEncoder, nn.Sequential MLPs and CNNs."""

from __future__ import annotations

import torch
from torch import nn

from . import common as c
from .common import LN2, LN8, mlp

FAMILY = "torch stock modules"


class SeqClassifier(nn.Module):
    """A stock recurrent stack (``nn.LSTM``/``nn.GRU``/``nn.RNN``, batch_first) and a head on the last step."""

    def __init__(self, rnn: nn.Module, width: int, out: int, unused_branch: bool = False) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(width, out)
        self.aux = nn.Linear(width, out) if unused_branch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class EncoderClassifier(nn.Module):
    def __init__(self, fin: int, out: int, layers: int, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Linear(fin, width)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


def cnn(out: int = 4, bn: bool = False, width: int = 8) -> nn.Sequential:
    def norm(n: int) -> nn.Module:
        return nn.BatchNorm2d(n) if bn else nn.Identity()

    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), norm(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), norm(2 * width), nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1, stride=2), norm(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, out),
    )


def _dead_conv(model: nn.Sequential) -> nn.Sequential:
    with torch.no_grad():
        model[3].bias.fill_(-20.0)
    return model


def _frozen_features(model: nn.Sequential) -> nn.Sequential:
    for p in list(model.parameters())[:2]:  # the stem conv: a frozen pretrained stem, fine-tuned rest
        p.requires_grad_(False)
    return model


def _orthogonal_rnn(gain: float) -> nn.Module:
    rnn = nn.RNN(8, 32, batch_first=True)
    nn.init.orthogonal_(rnn.weight_hh_l0, gain=gain)
    return rnn


def programs() -> list:
    P = c.program
    relu, tanh, sigmoid = nn.ReLU, nn.Tanh, nn.Sigmoid
    out = [
        # ---- healthy
        P("torch/lstm-stack2-recall-s8", FAMILY,
          lambda f, i, o: SeqClassifier(nn.LSTM(i, 32, 2, batch_first=True), 32, o), ("healthy", "healthy"),
          c.healthy(), data="recall:8", batch=32, steps=100),
        P("torch/gru-stack3-adding-s10", FAMILY,
          lambda f, i, o: SeqClassifier(nn.GRU(i, 32, 3, batch_first=True), 32, o), ("healthy", "healthy"),
          c.healthy(), data="adding:10", batch=32, steps=60, loss=c.regress),
        P("torch/encoder-prenorm-d2", FAMILY, lambda f, i, o: EncoderClassifier(i, o, 2), ("healthy", "healthy"),
          c.healthy(), data="recall:6", batch=32, lr=3e-3, steps=60),
        P("torch/encoder-prenorm-d6", FAMILY, lambda f, i, o: EncoderClassifier(i, o, 6), ("healthy", "healthy"),
          c.healthy(), data="recall:6", batch=32, lr=1e-3, steps=60),
        P("torch/seq-mlp-relu-d3-sgd", FAMILY, lambda f, i, o: mlp([i, 64, 64, 64, o], relu, "kaiming"),
          ("healthy", "healthy"), c.healthy(), optimizer="sgd", lr=0.1),
        P("torch/seq-mlp-tanh-d5", FAMILY, lambda f, i, o: mlp([i] + [64] * 5 + [o], tanh, "xavier"),
          ("healthy", "healthy"), c.healthy(), data="circles"),
        P("torch/seq-mlp-relu-bn-d8", FAMILY, lambda f, i, o: mlp([i] + [64] * 8 + [o], relu, "kaiming", bn=True),
          ("healthy", "healthy"), c.healthy(), data="spiral", steps=60),
        P("torch/cnn-relu", FAMILY, lambda f, i, o: cnn(), ("healthy", "healthy"), c.healthy(), data="images",
          batch=16, lr=3e-3, steps=50),
        P("torch/cnn-relu-bn", FAMILY, lambda f, i, o: cnn(bn=True), ("healthy", "healthy"), c.healthy(),
          data="images", batch=16, lr=3e-3, steps=50),
        P("torch/seq-mlp-relu-d4-adamw", FAMILY, lambda f, i, o: mlp([i] + [64] * 4 + [o], relu, "kaiming"),
          ("healthy", "healthy"), c.healthy(), data="spiral", optimizer="adamw", lr=1e-2, steps=80),
        P("torch/cnn-relu-bn-rmsprop", FAMILY, lambda f, i, o: cnn(bn=True), ("healthy", "healthy"), c.healthy(),
          data="images", batch=16, optimizer="rmsprop", lr=1e-3, steps=50),
        P("torch/seq-mlp-tanh-d3-adagrad", FAMILY, lambda f, i, o: mlp([i, 64, 64, 64, o], tanh, "xavier"),
          ("healthy", "healthy"), c.healthy(), optimizer="adagrad", lr=0.05),
        P("torch/gru-stack2-adding-s10-nesterov", FAMILY,
          lambda f, i, o: SeqClassifier(nn.GRU(i, 32, 2, batch_first=True), 32, o), ("healthy", "healthy"),
          c.healthy(), data="adding:10", batch=32, optimizer="nesterov", lr=0.05, steps=80, loss=c.regress),
        # ---- vanishing
        P("torch/seq-sigmoid-d16-sgd", FAMILY,
          lambda f, i, o: mlp([i] + [64] * 16 + [o], relu if f else sigmoid, "kaiming" if f else "default"),
          ("vanishing", "vanishing"), c.vanishing(LN2), optimizer="sgd", lr=0.1, fixed={"lr": 0.02}, steps=60),
        P("torch/rnn-tanh-s30", FAMILY, lambda f, i, o: SeqClassifier(_orthogonal_rnn(1.0 if f else 0.4), 32, o),
          ("vanishing", "vanishing"), c.vanishing(LN8), data="recall:30", batch=32, steps=80),
        # ---- exploding
        P("torch/seq-relu-normal-d20-clip", FAMILY,
          lambda f, i, o: mlp([i] + [64] * 20 + [o], relu, "kaiming" if f else "normal", std=0.3),
          ("exploding", "exploding"), c.exploding(), optimizer="sgd", lr=0.05, clip=1.0),
        # ---- learning-rate divergence
        P("torch/cnn-bn-sgd-lr", FAMILY, lambda f, i, o: cnn(bn=True), ("diverging", "diverging"), c.diverging(),
          data="images", batch=16, optimizer="sgd", lr=20.0, fixed={"lr": 0.05}, steps=40),
        P("torch/lstm-sgd-lr", FAMILY, lambda f, i, o: SeqClassifier(nn.LSTM(i, 32, 2, batch_first=True), 32, o),
          ("diverging", "diverging"), c.diverging(), data="adding:10", batch=32, optimizer="sgd", lr=30.0,
          fixed={"lr": 0.1}, loss=c.regress, steps=40),
        # ---- dead, frozen, unused
        P("torch/cnn-dead-conv", FAMILY, lambda f, i, o: _dead_conv(cnn()), ("dead", "dead"), c.dead(),
          data="images", batch=16, lr=3e-3, watch_layer="5"),
        P("torch/cnn-frozen-features", FAMILY, lambda f, i, o: _frozen_features(cnn()), ("frozen", "frozen"),
          c.frozen(0.95), data="images", batch=16, lr=1e-2, steps=50),
        P("torch/lstm-unused-branch", FAMILY,
          lambda f, i, o: SeqClassifier(nn.LSTM(i, 32, 1, batch_first=True), 32, o, unused_branch=True),
          ("unused", "unused"), c.unused(), data="recall:8", batch=32, steps=60),
        # ---- reading bugs
        P("torch/seq-mlp-zero-grad-end", FAMILY, lambda f, i, o: mlp([i, 64, 64, 64, o], tanh, "xavier"),
          ("no_gradient", "no_gradient"), c.no_gradient(), mode="zero_grad_end", case=11),
        P("torch/cnn-amp-unscaled", FAMILY, lambda f, i, o: cnn(), ("amp_unscaled", "amp_unscaled"),
          c.amp_unscaled(), data="images", batch=16, lr=3e-3, mode="amp_unscaled", steps=50, case=8),
        P("torch/lstm-micro-batch", FAMILY, lambda f, i, o: SeqClassifier(nn.LSTM(i, 32, 2, batch_first=True), 32, o),
          ("micro_batch", "micro_batch"), c.micro_batch(), data="recall:8", batch=16, mode="micro_batch",
          steps=40, case=9),
        # ---- optimizer-limited
        P("torch/seq-sigmoid-d11-adam-eps", FAMILY, lambda f, i, o: mlp([i] + [64] * 11 + [o], sigmoid),
          ("eps_limited", "eps_limited"), c.eps_limited(LN2), lr=3e-3, fixed={"eps": 1e-30}, steps=300, case=10),
        P("torch/seq-sigmoid-d12-adam-eps", FAMILY, lambda f, i, o: mlp([i] + [64] * 12 + [o], sigmoid),
          ("eps_limited", "eps_limited"), c.eps_limited(LN2), lr=3e-3, fixed={"eps": 1e-30}, steps=300, case=10),
        P("torch/lstm-adam-lr1e-7", FAMILY, lambda f, i, o: SeqClassifier(nn.LSTM(i, 32, 2, batch_first=True), 32, o),
          ("lr_too_small", "lr_too_small"), c.lr_too_small(), data="recall:8", batch=32, lr=1e-7,
          fixed={"lr": 1e-2}, steps=100),
    ]
    return out

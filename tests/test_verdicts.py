"""Issue 19's "What was seen" items 1-13: one test each, on models this project did not write (plain torch
modules, stock layers, tiny Hugging Face configs where transformers is installed). Each failed on the code
before the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradwidgets as gw


def _deep_tiny_chain(depth: int = 24, width: int = 16, scale: float = 0.05) -> nn.Sequential:
    """A chain of blocks (Linear + tanh, no residual, no norm) whose small weights shrink the gradient ~20x per
    block: the first blocks' entries fall below float32's squaring range (~1e-19) but not to zero."""
    torch.manual_seed(0)
    blocks = []
    for _ in range(depth):
        block = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))
        for layer in (block[0], block[2]):
            nn.init.normal_(layer.weight, std=scale)
        blocks.append(block)
    return nn.Sequential(*blocks, nn.Linear(width, 2))


def test_item_1_tiny_gradients_read_their_value_not_zero():
    model = _deep_tiny_chain()
    probe = gw.GradientProbe(model)
    x = torch.randn(32, 16)
    F.cross_entropy(model(x), torch.randint(0, 2, (32,))).backward()
    stats = probe.read()
    first = dict(model.named_modules())["0.0"]
    exact = float(first.weight.grad.double().square().sum() + first.bias.grad.double().square().sum()) ** 0.5
    assert 0 < exact < 1e-19, "the case needs entries below float32's squaring range"
    assert float(torch.linalg.vector_norm(first.weight.grad)) == 0, "float32 squares underflow here"
    row = stats.names.index("0.0")
    assert stats.grad_norm[row] == pytest.approx(exact, rel=1e-5)
    # an independent float64 norm for every row: nothing reads 0 that holds a nonzero entry
    modules = dict(model.named_modules())
    for name, value in zip(stats.names, stats.grad_norm, strict=True):
        grads = [p.grad.double() for p in modules[name].parameters(recurse=False)]
        independent = float(sum(g.square().sum() for g in grads)) ** 0.5
        assert value == pytest.approx(independent, rel=1e-5), name
    d = gw.diagnose(stats)
    assert d.kind == "vanishing" and "exactly zero" not in d.message

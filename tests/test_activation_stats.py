"""ActivationStats against an independent plain-PyTorch computation of the same quantities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradwidgets as gw


def _batch(n: int = 64, features: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(2, (n,), generator=g)


def _manual_mlp(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list, list, list]:
    """Walk the project's MLP by hand (same math as its forward), keeping z, a and h with retain_grad."""
    zs, acts, hs = [], [], []
    h = x
    for block in [model.input, *model.blocks]:
        z = block.layer(block.norm(h) if block.norm is not None and block.pre else h)
        a = block.act(z)
        out = h + a if block.residual else a
        out.retain_grad()
        zs.append(z.detach())
        acts.append(a.detach())
        hs.append(out)
        h = out
    if model.final_norm is not None:
        h = model.final_norm(h)
    F.cross_entropy(model.head(h), y).backward()
    return zs, acts, hs


@pytest.mark.parametrize(
    "fields",
    [
        {"activation": "sigmoid", "depth": 6},
        {"activation": "tanh", "depth": 4, "init": "normal", "init_std": 1.0},
        {"activation": "relu", "depth": 5, "init": "kaiming", "residual": True},
        {"activation": "relu", "depth": 5, "norm": "layer"},
    ],
)
def test_own_mlp_matches_a_manual_forward_and_backward(fields: dict) -> None:
    torch.manual_seed(0)
    config = gw.NetConfig(**fields)
    model = gw.build_model(config, 2, 2)
    x, y = _batch()
    zs, acts, hs = _manual_mlp(model, x, y)
    manual_grads = [h.grad.double().norm().item() for h in hs]
    model.zero_grad()
    with gw.ActivationStats(model) as stats:
        F.cross_entropy(model(x), y).backward()
        r = stats.read()
    assert r.names[0] == "input" and len(r) == config.depth + 1
    for i, (z, a, h) in enumerate(zip(zs, acts, hs, strict=True)):
        h = h.detach().double()
        assert r.mean[i] == pytest.approx(h.mean().item(), rel=1e-9, abs=1e-12)
        assert r.std[i] == pytest.approx(h.std(dim=0, unbiased=False).mean().item(), rel=1e-9, abs=1e-12)
        assert r.rms[i] == pytest.approx(h.pow(2).mean().sqrt().item(), rel=1e-9)
        assert r.state_grad_norm[i] == pytest.approx(manual_grads[i], rel=1e-6)
        if config.activation == "sigmoid":
            s = torch.sigmoid(z.double())
            assert r.slope[i] == pytest.approx((s * (1 - s)).mean().item(), rel=1e-5)
            assert r.saturated[i] == pytest.approx((z.abs() > 2).double().mean().item())
            assert np.isnan(r.dead[i])
        if config.activation == "tanh":
            assert r.saturated[i] == pytest.approx((z.abs() > 2).double().mean().item())
            assert r.slope[i] == pytest.approx((1 - torch.tanh(z.double()) ** 2).mean().item(), rel=1e-5)
        if config.activation == "relu":
            assert r.dead[i] == pytest.approx((a == 0).all(dim=0).double().mean().item())
            assert r.slope[i] == pytest.approx((z > 0).double().mean().item())
            assert np.isnan(r.saturated[i])
    # The ratio compares the hidden blocks, as the gradient probe does: not the input layer (row 0).
    assert not r.in_stack[0] and r.in_stack[1:].all()
    assert r.state_grad_ratio() == pytest.approx(manual_grads[1] / manual_grads[-1], rel=1e-6)


def test_tanh_with_large_weights_saturates_and_sigmoid_at_default_init_does_not() -> None:
    x, _ = _batch(256)
    readings = {}
    for label, fields in {"sigmoid": {"activation": "sigmoid"}, "big tanh": {"activation": "tanh", "init": "normal",
                                                                            "init_std": 2.0}}.items():
        torch.manual_seed(0)
        model = gw.build_model(gw.NetConfig(depth=8, **fields), 2, 2)
        with gw.ActivationStats(model, state_grads=False) as stats, torch.no_grad():
            model(x)
            readings[label] = stats.read()
    assert readings["sigmoid"].saturated[1:].max() == 0
    assert readings["big tanh"].saturated[1:].min() > 0.5
    assert np.isnan(readings["sigmoid"].state_grad_norm).all()  # no backward ran


def test_dead_units_are_counted_per_unit_over_the_batch() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([-1.0, -2.0, 0.5, 1.0]))  # two units always off, two always on
    with gw.ActivationStats(model) as stats:
        model(torch.randn(10, 3)).sum().backward()
        r = stats.read()
    assert r.names == ("1",) and r.kinds == ("relu",)
    assert r.dead[0] == 0.5
    assert r.std[0] == 0  # every example sees the same constant output
    assert r.mean[0] == pytest.approx(0.375)


def test_any_model_reused_activation_module_gives_one_row_per_call() -> None:
    act = nn.Tanh()
    first, second, head = nn.Linear(2, 8), nn.Linear(8, 8), nn.Linear(8, 1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second, self.head, self.act = first, second, head, act

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.act(self.second(self.act(self.first(x)))))

    net = Net()
    x = torch.randn(32, 2)
    with gw.ActivationStats(net) as stats:
        net(x).sum().backward()
        r = stats.read()
    assert r.names == ("act", "act#2")
    h1 = torch.tanh(first(x))
    h2 = torch.tanh(second(h1))
    h1.retain_grad()
    head(h2).sum().backward()
    assert r.rms[1] == pytest.approx(h2.detach().double().pow(2).mean().sqrt().item(), rel=1e-9)
    assert r.state_grad_norm[0] == pytest.approx(h1.grad.norm().item(), rel=1e-5)


def test_hooks_come_off_and_bad_arguments_are_named() -> None:
    model = gw.build_model(gw.NetConfig(depth=2), 2, 2)
    stats = gw.ActivationStats(model)
    with pytest.raises(RuntimeError, match="no forward pass"):
        stats.read()
    stats.remove()
    model(torch.randn(4, 2))
    assert stats.forwards == 0
    with pytest.raises(ValueError, match="saturation_z"):
        gw.ActivationStats(model, saturation_z=0)
    with pytest.raises(ValueError, match="model must be"):
        gw.ActivationStats("net")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no activation module"):
        gw.ActivationStats(nn.Linear(2, 2))


def test_transformer_rows_are_its_blocks() -> None:
    torch.manual_seed(0)
    model = gw.build_model(gw.NetConfig(kind="transformer", depth=3, width=16, activation="gelu", seq_len=5), 4, 3)
    with gw.ActivationStats(model) as stats:
        model(torch.randn(8, 5, 4)).sum().backward()
        r = stats.read()
    assert r.names == ("blocks.0", "blocks.1", "blocks.2")
    assert np.isfinite(r.state_grad_norm).all() and np.isfinite(r.slope).all()


def test_the_sigmoid_fix_names_what_the_forward_statistics_measure() -> None:
    """Issue 14: a deep default-init sigmoid net has no saturated unit, so the fix must not blame saturation."""
    session = gw.TrainingSession(activation="sigmoid", depth=20, batch_size=256)
    with gw.ActivationStats(session.model) as stats:
        verdict = gw.diagnose(session.step(), config=session.config)
        r = stats.read()
    assert verdict.kind == "vanishing"
    assert r.saturated[1:].max() == 0 and 0.24 < r.slope[1:].mean() < 0.25
    assert "saturat" not in verdict.fix
    assert "slope" in verdict.fix and "weights" in verdict.fix and "mean 0.5" in verdict.fix
    assert "ReLU" in verdict.fix and "He" in verdict.fix

"""core.theory: the activation curves' numbers and the slope x weight-gain prediction of the gradient ratio."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import gradwidgets as gw
from gradwidgets.core.theory import activation_curve, predict_ratio


def state_grad_ratio(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """|dL/dh| of the first hidden layer / the last one's, by plain autograd (retain_grad on every hidden state)."""
    h = model.input(x)
    states = []
    for block in model.blocks:
        h = block(h)
        h.retain_grad()
        states.append(h)
    F.cross_entropy(model.head(h), y).backward()
    return float(states[0].grad.norm() / states[-1].grad.norm())


def sigmoid_net(depth: int, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = gw.build_model(gw.NetConfig(activation="sigmoid", depth=depth), in_features=2, out_features=2)
    data = gw.make_dataset("spiral", seed=seed)
    return model, data.x_train[:256], data.y_train[:256]


@pytest.mark.parametrize("depth", [10, 20])
def test_slope_times_gain_predicts_the_sigmoid_factor_within_five_percent(depth: int) -> None:
    for seed in range(3):
        model, x, y = sigmoid_net(depth, seed)
        prediction = predict_ratio(model, x)
        measured = state_grad_ratio(model, x, y) ** (1 / (depth - 1))
        assert prediction.steps == depth - 1
        assert prediction.factor == pytest.approx(measured, rel=0.05), seed
        # default init: Var(w) = 1/(3 n_in), so W^T scales a vector by sqrt(1/3) whatever the width
        assert prediction.weight_gain == pytest.approx(math.sqrt(1 / 3), rel=0.02)
        assert 0.24 < prediction.mean_slope <= 0.25


def test_max_slope_power_is_no_estimate_for_gelu() -> None:
    torch.manual_seed(0)
    model = gw.build_model(gw.NetConfig(activation="gelu", depth=20), in_features=2, out_features=2)
    data = gw.make_dataset("spiral")
    measured = state_grad_ratio(model, data.x_train[:256], data.y_train[:256])
    assert gw.theoretical_bound("gelu", 20) == pytest.approx(1.1289**19, rel=1e-6)  # ~10: above 1
    assert measured < 1e-8  # while the net vanishes
    predicted = predict_ratio(model, data.x_train[:256]).ratio
    assert 0.1 < predicted / measured < 10  # within a factor of a few; max f'^19 is off by 1e9 or more


def test_prediction_changes_no_weight_and_keeps_the_mode() -> None:
    model, x, _ = sigmoid_net(5)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    predict_ratio(model, x)
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not any(m._forward_hooks for m in model.modules()), "hooks are removed"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"residual": True}, "plain stack"),
        ({"norm": "layer"}, "plain stack"),
        ({"activation": "swiglu"}, "elementwise"),
    ],
)
def test_prediction_refuses_what_it_cannot_predict(changes: dict, message: str) -> None:
    config = gw.NetConfig(activation="sigmoid", depth=4).replace(**changes)
    model = gw.build_model(config, in_features=2, out_features=2)
    with pytest.raises(ValueError, match=message):
        predict_ratio(model, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="project's MLPs"):
        predict_ratio(torch.nn.Linear(2, 2), torch.zeros(4, 2))


def test_activation_curve_is_autograd_of_the_function() -> None:
    curve = activation_curve("sigmoid")
    sigmoid = 1 / (1 + torch.exp(-torch.as_tensor(curve.x)))
    assert torch.allclose(torch.as_tensor(curve.df), sigmoid * (1 - sigmoid), atol=1e-12)
    assert curve.max_derivative == 0.25

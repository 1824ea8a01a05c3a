import math

import pytest
import torch

import gradwidgets as gw
from gradwidgets.nets.activations import ACTIVATIONS, SwiGLU, activation_function


@pytest.mark.parametrize("name", [n for n, a in ACTIVATIONS.items() if not a.gated])
def test_max_derivative_matches_autograd(name):
    x = torch.linspace(-8, 8, 160001, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(activation_function(name)(x).sum(), x)
    assert grad.max().item() == pytest.approx(ACTIVATIONS[name].max_derivative, rel=2e-3)


def test_sigmoid_derivative_peaks_at_a_quarter():
    assert ACTIVATIONS["sigmoid"].max_derivative == 0.25
    assert gw.theoretical_bound("sigmoid", 10) == pytest.approx(0.25**9)
    assert gw.theoretical_bound("relu", 20) == 1.0


def test_swiglu_is_a_gated_projection():
    torch.manual_seed(0)
    layer = SwiGLU(5, 3)
    x = torch.randn(4, 5)
    gate, value = (x @ layer.weight.T + layer.bias).chunk(2, dim=-1)
    expected = gate * torch.sigmoid(gate) * value
    torch.testing.assert_close(layer(x), expected)
    assert layer.weight.shape == (6, 5)


def test_unknown_activation_is_refused_by_name():
    with pytest.raises(ValueError, match="activation must be one of"):
        activation_function("softsign")
    with pytest.raises(ValueError, match="activation"):
        gw.theoretical_bound("nope", 3)
    assert math.isfinite(gw.theoretical_bound("gelu", 5))

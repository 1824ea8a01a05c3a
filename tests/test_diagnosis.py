import numpy as np
import pytest
import torch
from _helpers import stats_at_init
from torch import nn

import gradwidgets as gw


def test_deep_sigmoid_is_vanishing_with_the_measured_ratio_and_a_fix():
    cfg = gw.NetConfig(activation="sigmoid", depth=10)
    stats = stats_at_init(cfg)
    d = gw.diagnose(stats, config=cfg)
    assert d.kind == "vanishing"
    blocks = stats.block_grad_norm()
    assert d.ratio == pytest.approx(blocks[0] / blocks[-1])
    assert d.ratio < 1e-5
    assert gw.core.diagnosis.format_number(d.ratio) in d.message
    assert "ReLU" in d.fix and "He" in d.fix
    assert "blocks.0.layer" in d.layers and "blocks.9.layer" not in d.layers
    assert d.headline == "Vanishing gradients"
    assert d.compared == ("blocks.0", "blocks.9") and "(blocks.0 vs blocks.9)" in d.message


def test_every_kind_has_a_headline():
    import dataclasses

    stats = stats_at_init(gw.NetConfig(depth=3))
    for kind in gw.DIAGNOSES:
        d = dataclasses.replace(gw.diagnose(stats), kind=kind)
        assert d.headline and d.headline != kind


def test_a_skipped_amp_step_is_not_divergence():
    import dataclasses

    stats = stats_at_init(gw.NetConfig(depth=3))
    grad = stats.grad_norm.copy()
    grad[0] = np.inf
    skipped = dataclasses.replace(stats, grad_norm=grad, skipped=True, grad_scale=65536.0)
    d = gw.diagnose(skipped)
    assert d.kind == "skipped" and "not divergence" in d.message and "loss scale 65536," in d.message
    assert gw.diagnose(dataclasses.replace(skipped, skipped=False)).kind == "nonfinite"
    assert gw.diagnose(dataclasses.replace(skipped, loss=float("inf"))).kind == "nonfinite", "a bad loss is real"


def test_relu_default_init_fix_names_he_init():
    cfg = gw.NetConfig(activation="relu", depth=20)
    d = gw.diagnose(stats_at_init(cfg), config=cfg)
    assert d.kind == "vanishing" and "He" in d.fix


@pytest.mark.parametrize(
    "fields",
    [{"activation": "relu", "init": "kaiming", "depth": 20}, {"activation": "sigmoid", "depth": 2}],
)
def test_healthy_nets_are_called_healthy(fields):
    d = gw.diagnose(stats_at_init(gw.NetConfig(**fields)))
    assert d.kind == "healthy", d.message
    assert 1e-2 < d.ratio < 1e2


def test_huge_init_explodes():
    cfg = gw.NetConfig(activation="relu", depth=20, init="kaiming", init_gain=3.0)
    d = gw.diagnose(stats_at_init(cfg))
    assert d.kind == "exploding"
    assert "learning rate" in d.fix


def test_nan_loss_or_gradient_is_nonfinite():
    model = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 2))
    probe = gw.GradientProbe(model)
    loss = model(torch.tensor([[float("nan"), 0.0]])).sum()
    loss.backward()
    d = gw.diagnose(probe.read(loss))
    assert d.kind == "nonfinite" and "diverged" in d.message


def test_frozen_layers_are_frozen_not_vanishing():
    torch.manual_seed(0)
    model = gw.build_model(gw.NetConfig(activation="relu", init="kaiming", depth=6), 2, 2)
    for block in model.blocks[:3]:
        block.requires_grad_(False)
    model.input.requires_grad_(False)
    probe = gw.GradientProbe(model)
    model(torch.randn(64, 2)).pow(2).mean().backward()
    stats = probe.read()
    d = gw.diagnose(stats)
    assert d.kind == "frozen", d.message
    assert set(d.layers) == {"input.layer", "blocks.0.layer", "blocks.1.layer", "blocks.2.layer"}
    assert "not vanishing" in d.message


def test_dead_relu_layer_is_dead():
    torch.manual_seed(0)
    model = gw.build_model(gw.NetConfig(activation="relu", init="kaiming", depth=6), 2, 2)
    with torch.no_grad():
        model.blocks[3].layer.bias.fill_(-100.0)  # no unit of block 3 is ever active
    probe = gw.GradientProbe(model)
    model(torch.randn(64, 2)).pow(2).mean().backward()
    d = gw.diagnose(probe.read())
    assert d.kind == "dead", d.message
    assert "blocks.0.layer" in d.layers and "blocks.3.layer" in d.layers


def test_dead_layer_in_the_middle_of_a_live_stack():
    torch.manual_seed(0)
    model = gw.build_model(gw.NetConfig(activation="relu", depth=6), 2, 2)  # default init keeps biases
    with torch.no_grad():
        model.blocks[2].layer.bias.fill_(-100.0)
    probe = gw.GradientProbe(model)
    model(torch.randn(64, 2)).pow(2).mean().backward()
    d = gw.diagnose(probe.read())
    assert d.kind == "dead", d.message
    assert "blocks.1.layer" in d.layers and "blocks.5.layer" not in d.layers


def test_underflow_to_zero_is_vanishing_not_dead():
    cfg = gw.NetConfig(kind="transformer", depth=24, residual=False, norm="none", activation="gelu", seq_len=8)
    d = gw.diagnose(stats_at_init(cfg, n=32))
    assert d.kind == "vanishing"
    assert "residual" in gw.diagnose(stats_at_init(cfg, n=32), config=cfg).fix


def test_layers_that_never_learned_need_history():
    session = gw.TrainingSession(activation="sigmoid", depth=11, dataset="moons", lr=0.1, seed=0)
    stats = session.step(60)
    d_now = gw.diagnose(stats)
    d_history = gw.diagnose(stats, history=session.history)
    assert d_now.kind == "vanishing"
    assert d_history.kind == "vanishing"  # vanishing outranks dead; the drift evidence is in the stats
    first, last = stats.drift[stats.names.index("blocks.0.layer")], stats.drift[stats.names.index("blocks.10.layer")]
    assert first < 1e-3 * last


def test_never_learned_is_reported_when_gradients_look_fine_now():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
    probe = gw.GradientProbe(model)
    x, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
    # Only the last two layers are given to the optimizer: the first one gets gradients but never moves.
    opt = torch.optim.SGD(list(model[2].parameters()) + list(model[4].parameters()), lr=0.5)
    history = []
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        history.append(probe.read())
    stats = history[-1]
    assert gw.diagnose(stats).kind == "healthy"
    d = gw.diagnose(stats, history=history)
    assert d.kind == "dead" and d.layers == ("0",)
    assert "never learned" in d.message and "moved not at all" in d.message
    assert "optimizer" in d.fix


def test_time_vanishing_speaks_about_time():
    cfg = gw.NetConfig(kind="rnn", cell="rnn", activation="tanh", seq_len=50, width=32)
    d = gw.diagnose(stats_at_init(cfg), config=cfg)
    assert d.kind == "vanishing"
    assert "step 0" in d.message and d.time_ratio < 1e-6
    assert "LSTM" in d.fix


def test_diagnose_validates_input():
    with pytest.raises(ValueError, match="GradientStats"):
        gw.diagnose({"grad_norm": np.ones(3)})


def test_format_number():
    fmt = gw.core.diagnosis.format_number
    assert fmt(0.25) == "0.25" and fmt(3.2e-8) == "3.2e-08" and fmt(0) == "0" and fmt(float("nan")) == "nan"


def test_single_block_nets_get_a_sentence_without_nan():
    cfg = gw.NetConfig(kind="rnn", cell="lstm", seq_len=10, width=16, forget_bias=3.0)
    d = gw.diagnose(stats_at_init(cfg), config=cfg)
    assert d.kind == "healthy" and "nan" not in d.message


def test_optimizer_facts_and_the_predicted_update_ratio_match_a_plain_step():
    from gradwidgets.core.optimizer_reads import optimizer_facts, predicted_update_ratio

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    probe = gw.GradientProbe(model)
    model(torch.randn(16, 4)).pow(2).mean().backward()
    stats = probe.read()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    facts = optimizer_facts(sgd)
    assert (facts.lr, facts.eps, facts.adaptive) == (0.1, None, False)
    predicted = predicted_update_ratio(facts, stats.grad_norm, stats.weight_norm, stats.param_count)
    before = [torch.cat([p.detach().flatten().clone() for p in m.parameters()]) for m in (model[0], model[2])]
    sgd.step()
    after = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (model[0], model[2])]
    measured = [float((a - b).norm() / b.norm()) for a, b in zip(after, before, strict=True)]
    assert predicted == pytest.approx(measured, rel=1e-4)
    adam = optimizer_facts(torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7))
    assert adam.adaptive and adam.eps == 1e-7
    with pytest.raises(ValueError, match="optimizer must be a torch.optim.Optimizer"):
        gw.diagnose(stats, optimizer=object())
    with pytest.raises(ValueError, match="steps must be"):
        gw.diagnose(stats, steps=-1)

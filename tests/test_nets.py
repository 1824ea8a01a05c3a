import pytest
import torch
from _helpers import ratio_at_init
from torch import nn

import gradwidgets as gw


def test_defaults_depend_on_kind():
    assert gw.NetConfig().depth == 10
    assert gw.NetConfig(kind="rnn", activation="tanh").depth == 1
    assert gw.NetConfig(kind="transformer").depth == 6


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kind", "cnn", "kind must be one of"),
        ("depth", 0, r"depth must be an integer in \[1, 200\]"),
        ("depth", 201, "depth"),
        ("depth", 3.5, "depth"),
        ("depth", True, "depth"),
        ("width", 0, r"width must be an integer in \[1, 4096\]"),
        ("width", 5000, "width"),
        ("activation", "softsign", "activation must be one of"),
        ("norm", "group", "norm must be one of"),
        ("norm_position", "middle", "norm_position"),
        ("init", "lecun", "init must be one of"),
        ("init_std", 0.0, "init_std"),
        ("init_gain", float("nan"), "init_gain"),
        ("residual", "yes", "residual must be True or False"),
        ("seq_len", 501, "seq_len"),
        ("forget_bias", float("inf"), "forget_bias"),
        ("heads", 0, "heads"),
    ],
)
def test_invalid_values_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        gw.NetConfig(**{field: value})


def test_cross_field_rules():
    with pytest.raises(ValueError, match="multiple of heads"):
        gw.NetConfig(kind="transformer", width=30, heads=4)
    with pytest.raises(ValueError, match="vanilla RNN"):
        gw.NetConfig(kind="rnn", cell="rnn", activation="sigmoid")
    with pytest.raises(ValueError, match="identity"):
        gw.NetConfig(kind="mlp", init="identity")
    with pytest.raises(ValueError, match="norm must be one of"):
        gw.NetConfig(kind="rnn", activation="tanh", norm="batch")


def test_config_is_immutable_and_replace_validates():
    cfg = gw.NetConfig(depth=4)
    with pytest.raises(AttributeError):
        cfg.depth = 5
    assert cfg.replace(depth=5).depth == 5
    with pytest.raises(ValueError, match="unknown NetConfig field"):
        cfg.replace(dept=5)
    with pytest.raises(ValueError, match="width"):
        cfg.replace(width=-1)
    assert cfg.replace(kind="rnn", activation="tanh").depth == 1


@pytest.mark.parametrize("activation", list(gw.ACTIVATIONS))
@pytest.mark.parametrize("norm", gw.NORMS)
def test_mlp_builds_and_runs_for_every_activation_and_norm(activation, norm):
    cfg = gw.NetConfig(depth=3, width=16, activation=activation, norm=norm, residual=True)
    model = gw.build_model(cfg, 2, 3)
    assert model(torch.randn(8, 2)).shape == (8, 3)
    hidden = [m.layer for m in model.blocks]
    assert len(hidden) == 3
    widths = {layer.weight.shape[1] for layer in hidden}
    assert widths == {16}, "residual hidden layers keep the width so the skip is an identity"


def test_residual_block_is_identity_plus_branch():
    torch.manual_seed(0)
    cfg = gw.NetConfig(depth=1, width=8, activation="tanh", residual=True)
    model = gw.build_model(cfg, 2, 2)
    block = model.blocks[0]
    x = torch.randn(5, 8)
    torch.testing.assert_close(block(x), x + torch.tanh(block.layer(x)))


def test_pre_norm_normalizes_the_block_input():
    torch.manual_seed(0)
    cfg = gw.NetConfig(depth=2, width=8, activation="relu", norm="layer", residual=True)
    block = gw.build_model(cfg, 2, 2).blocks[0]
    x = torch.randn(5, 8) * 3 + 1
    torch.testing.assert_close(block(x), x + torch.relu(block.layer(block.norm(x))))


def test_inits_have_the_documented_statistics():
    torch.manual_seed(0)
    width = 512
    kaiming = gw.build_model(gw.NetConfig(depth=1, width=width, init="kaiming"), width, 2).blocks[0].layer
    assert kaiming.weight.std().item() == pytest.approx((2 / width) ** 0.5, rel=0.02)
    assert kaiming.bias.abs().max().item() == 0
    xavier = gw.build_model(gw.NetConfig(depth=1, width=width, init="xavier"), width, 2).blocks[0].layer
    assert xavier.weight.std().item() == pytest.approx((2 / (2 * width)) ** 0.5, rel=0.02)
    normal = gw.build_model(gw.NetConfig(depth=1, width=width, init="normal", init_std=0.3), width, 2)
    assert normal.blocks[0].layer.weight.std().item() == pytest.approx(0.3, rel=0.02)
    ortho = gw.build_model(gw.NetConfig(depth=1, width=64, init="orthogonal"), 64, 2).blocks[0].layer.weight
    torch.testing.assert_close(ortho @ ortho.T, torch.eye(64), atol=1e-5, rtol=0)
    gained = gw.build_model(gw.NetConfig(depth=1, width=width, init="kaiming", init_gain=3.0), width, 2)
    assert gained.blocks[0].layer.weight.std().item() == pytest.approx(3 * (2 / width) ** 0.5, rel=0.02)


def test_default_init_is_pytorchs_own():
    torch.manual_seed(3)
    ours = gw.build_model(gw.NetConfig(depth=1, width=32), 2, 2)
    torch.manual_seed(3)
    reference = nn.Linear(2, 32)
    torch.testing.assert_close(ours.input.layer.weight, reference.weight)


def test_models_declare_roles_and_blocks():
    model = gw.build_model(gw.NetConfig(depth=3, width=8, norm="layer"), 2, 2)
    assert model.layer_roles["input.layer"] == "embedding"
    assert model.layer_roles["blocks.1.layer"] == "hidden"
    assert model.layer_roles["blocks.1.norm"] == "norm"
    assert model.layer_roles["head"] == "head"
    assert model.layer_blocks["blocks.2.layer"] == 2
    assert model.layer_blocks["head"] == -1


def test_build_model_validates_its_arguments():
    with pytest.raises(ValueError, match="config must be a NetConfig"):
        gw.build_model({"depth": 3}, 2, 2)
    with pytest.raises(ValueError, match="in_features"):
        gw.build_model(gw.NetConfig(), 0, 2)


# The textbook physics, at initialization, one backward on 256 spiral points (width 64).


def test_ten_sigmoid_layers_shrink_the_gradient_a_hundred_thousand_fold_or_more():
    ratio = ratio_at_init(activation="sigmoid", depth=10)
    assert ratio <= 1e-5
    assert ratio >= 1e-10, "the shrink is geometric, not a numerical accident"


def test_sigmoid_shrink_is_geometric_in_depth():
    r3, r10, r20 = (ratio_at_init(activation="sigmoid", depth=d) for d in (3, 10, 20))
    assert 1e-3 < r3 < 1e-1
    assert r20 < r10 * 1e-6 < r3


@pytest.mark.parametrize(
    "fields",
    [
        {"activation": "relu", "init": "kaiming"},
        {"activation": "sigmoid", "norm": "layer"},
        {"activation": "sigmoid", "residual": True},
        {"activation": "relu", "residual": True},
    ],
    ids=["relu+he", "sigmoid+layernorm", "sigmoid+residual", "relu+residual"],
)
def test_fixes_keep_a_depth_20_net_within_10x(fields):
    ratio = ratio_at_init(depth=20, **fields)
    assert 0.1 <= ratio <= 10


def test_batchnorm_restores_flow_in_a_deep_sigmoid_net():
    # BatchNorm rescales every layer's input: the shrink is gone (the first layer even gets a little more).
    ratio = ratio_at_init(depth=20, activation="sigmoid", norm="batch")
    assert 0.5 <= ratio <= 100
    assert ratio > 1e10 * ratio_at_init(depth=20, activation="sigmoid")


def test_relu_at_depth_20_still_needs_he_init():
    assert ratio_at_init(activation="relu", depth=20) < 1e-4
    assert ratio_at_init(activation="relu", depth=20, init="kaiming") > 0.1


def test_shallow_nets_are_fine_with_any_activation():
    for activation in ("sigmoid", "tanh", "relu", "gelu", "silu"):
        assert ratio_at_init(activation=activation, depth=2) > 1e-2, activation

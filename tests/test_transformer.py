import numpy as np
import pytest
import torch
from _helpers import stats_at_init

import gradwidgets as gw


def transformer(**fields) -> gw.NetConfig:
    return gw.NetConfig(kind="transformer", depth=24, width=32, heads=4, seq_len=8, activation="gelu", **fields)


def test_deep_transformer_with_residual_and_layernorm_is_healthy():
    cfg = transformer(residual=True, norm="layer")
    stats = stats_at_init(cfg, n=64)
    d = gw.diagnose(stats, config=cfg)
    assert d.kind == "healthy", d.message
    assert 1 / 20 <= d.ratio <= 20


def test_deep_transformer_without_both_vanishes():
    cfg = transformer(residual=False, norm="none")
    stats = stats_at_init(cfg, n=64)
    d = gw.diagnose(stats, config=cfg)
    norms = stats.block_grad_norm()
    assert norms[0] / norms[-1] < 1e-4
    assert d.kind == "vanishing"


@pytest.mark.parametrize("position", ["pre", "post"])
@pytest.mark.parametrize("activation", ["gelu", "swiglu", "relu"])
def test_block_variants_build_and_train(position, activation):
    cfg = gw.NetConfig(
        kind="transformer",
        depth=2,
        width=16,
        heads=2,
        seq_len=6,
        norm="layer",
        norm_position=position,
        residual=True,
        activation=activation,
    )
    s = gw.TrainingSession(cfg, batch_size=16)
    stats = s.step(2)
    assert np.isfinite(stats.grad_norm).all()
    assert len(stats.block_grad_norm()) == 2


def test_pre_ln_block_is_the_textbook_formula():
    torch.manual_seed(0)
    cfg = gw.NetConfig(kind="transformer", depth=1, width=8, heads=2, seq_len=5, norm="layer", residual=True)
    block = gw.build_model(cfg, 3, 2).blocks[0]
    x = torch.randn(2, 5, 8)
    h = block.norm1(x)
    x1 = x + block.attn(h, h, h, need_weights=False)[0]
    expected = x1 + block.fc2(torch.relu(block.fc1(block.norm2(x1))))
    torch.testing.assert_close(block(x), expected)


def test_transformer_layout_and_freeze():
    s = gw.TrainingSession(
        kind="transformer", depth=3, width=16, heads=2, seq_len=6, norm="layer", freeze=1, batch_size=16
    )
    stats = s.step()
    roles = dict(zip(stats.names, stats.roles, strict=True))
    assert roles["embed"] == "embedding" and roles["position"] == "embedding" and roles["head"] == "head"
    assert roles["blocks.0.attn"] == "hidden" and roles["blocks.2.norm2"] == "norm"
    frozen = {n for n, f in zip(stats.names, stats.frozen, strict=True) if f}
    assert frozen == {n for n in stats.names if n.startswith("blocks.0.")}

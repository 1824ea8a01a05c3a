"""Every number the probe reports, checked against plain PyTorch on the same tensors."""

import numpy as np
import pytest
import torch
from torch import nn

import gradwidgets as gw


def independent_stats(model: nn.Module):
    """Per module with direct parameters: L2 grad norm, mean |g|, max |g|, weight norm -- the obvious way."""
    rows = {}
    groups = []
    for name, module in model.named_modules():
        params = list(module.named_parameters(recurse=False))
        if not params:
            continue
        if isinstance(module, nn.RNNBase) and (module.num_layers > 1 or module.bidirectional):
            for k in range(module.num_layers):
                for suffix in ("", "_reverse") if module.bidirectional else ("",):
                    layer = [p for n, p in params if n.endswith(f"_l{k}{suffix}")]
                    groups.append((f"{name}.l{k}{suffix}".lstrip("."), layer))
        else:
            groups.append((name, [p for _, p in params]))
    for name, params in groups:
        grads = [p.grad.reshape(-1) for p in params if p.grad is not None]
        g = torch.cat(grads).double() if grads else torch.zeros(0, dtype=torch.float64)
        count = sum(p.numel() for p in params)
        w = torch.cat([p.detach().reshape(-1) for p in params]).double()
        rows[name] = (
            float(g.norm()) if len(g) else 0.0,
            float(g.abs().sum() / count) if len(g) else 0.0,
            float(g.abs().max()) if len(g) else 0.0,
            float(w.norm()),
        )
    return rows


def check_against_independent(model, stats):
    expected = independent_stats(model)
    assert sorted(stats.names) == sorted(expected), "one row per module that owns parameters"
    for i, name in enumerate(stats.names):
        norm, mean_abs, max_abs, weight = expected[name]
        assert stats.grad_norm[i] == pytest.approx(norm, rel=1e-5, abs=1e-30), name
        assert stats.grad_mean_abs[i] == pytest.approx(mean_abs, rel=1e-5, abs=1e-30), name
        assert stats.grad_max_abs[i] == pytest.approx(max_abs, rel=1e-6, abs=1e-30), name
        assert stats.weight_norm[i] == pytest.approx(weight, rel=1e-5), name


def backward(model, x, target=None):
    out = model(x)
    if isinstance(out, tuple):
        out = out[0]
    loss = out.float().pow(2).mean() if target is None else nn.functional.cross_entropy(out, target)
    loss.backward()
    return loss


def test_mlp_numbers_match_plain_pytorch():
    torch.manual_seed(0)
    model = gw.build_model(gw.NetConfig(depth=5, width=16, activation="tanh", norm="layer"), 2, 3)
    probe = gw.GradientProbe(model)
    loss = backward(model, torch.randn(32, 2), torch.randint(0, 3, (32,)))
    stats = probe.read(loss)
    check_against_independent(model, stats)
    assert stats.loss == pytest.approx(loss.item())
    assert stats.names[0] == "input.layer" and stats.names[-1] == "head"
    assert stats.has_grad.all() and not stats.frozen.any()


def test_torch_transformer_encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32, batch_first=True, dropout=0.0)
    model = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)
    probe = gw.GradientProbe(model)
    backward(model, torch.randn(4, 7, 16))
    stats = probe.read()
    check_against_independent(model, stats)
    assert "layers.0.self_attn" in stats.names  # MultiheadAttention owns in_proj_weight directly
    assert stats.blocks[stats.names.index("layers.2.linear2")] == 2
    assert stats.roles[stats.names.index("layers.1.norm1")] == "norm"
    # Post-LN: the data reach norm1 before linear1 (declared after it): rows follow the forward pass.
    assert stats.names.index("layers.0.norm1") < stats.names.index("layers.0.linear1")
    assert stats.names.index("layers.0.self_attn.out_proj") == stats.names.index("layers.0.self_attn") + 1


def test_torch_lstm_and_conv_net():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 8, num_layers=2, batch_first=True)
    probe = gw.GradientProbe(lstm)
    backward(lstm, torch.randn(5, 6, 3))
    stats = probe.read()
    check_against_independent(lstm, stats)
    assert stats.names == ("l0", "l1")  # nn.LSTM owns all its weights itself: a row per layer

    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    probe = gw.GradientProbe(conv)
    backward(conv, torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 0]))
    stats = probe.read()
    check_against_independent(conv, stats)
    assert stats.names == ("0", "2", "4")
    assert stats.roles == ("hidden", "norm", "hidden")


def test_frozen_and_gradless_layers_report_zero_and_frozen():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    unused = nn.Linear(3, 3)
    model.add_module("unused", unused)
    probe = gw.GradientProbe(model, detail_every=1)
    out = model[4](model[3](model[2](model[1](model[0](torch.randn(6, 2))))))
    out.pow(2).mean().backward()
    stats = probe.read()
    assert stats.names == ("0", "2", "4", "unused")
    assert stats.frozen.tolist() == [True, False, False, False]
    assert stats.has_grad.tolist() == [False, True, True, False]
    assert stats.grad_norm[0] == 0 and stats.grad_norm[3] == 0
    check_against_independent(model, stats)


def test_update_ratio_and_drift_measure_weight_motion():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    initial = [p.detach().clone() for p in model.parameters()]
    probe = gw.GradientProbe(model, detail_every=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    first = None
    for step in range(3):
        before = [p.detach().clone() for p in model.parameters()]
        opt.zero_grad()
        backward(model, x, y)
        opt.step()
        stats = probe.read()
        if step == 0:
            first = stats
        after = [p.detach() for p in model.parameters()]
        # Layer "0" owns parameters 0 and 1, layer "2" owns 2 and 3.
        for layer, (a, b) in zip((0, 1), ((0, 1), (2, 3)), strict=True):
            delta = torch.cat([(after[k] - before[k]).reshape(-1) for k in (a, b)]).double().norm()
            norm = torch.cat([after[k].reshape(-1) for k in (a, b)]).double().norm()
            moved = torch.cat([(after[k] - initial[k]).reshape(-1) for k in (a, b)]).double().norm()
            start = torch.cat([initial[k].reshape(-1) for k in (a, b)]).double().norm()
            if step > 0:
                assert stats.update_ratio[layer] == pytest.approx(float(delta / norm), rel=1e-5)
            assert stats.drift[layer] == pytest.approx(float(moved / start), rel=1e-5)
    assert np.isnan(first.update_ratio).all(), "no previous read to compare with"
    assert stats.step == 3


def test_track_weights_off_reports_nan_motion():
    model = nn.Linear(2, 2)
    probe = gw.GradientProbe(model, track_weights=False)
    backward(model, torch.randn(3, 2))
    stats = probe.read()
    assert np.isnan(stats.update_ratio).all() and np.isnan(stats.drift).all()
    assert stats.grad_norm[0] > 0


def test_nonfinite_gradients_are_reported_not_hidden():
    model = nn.Linear(2, 2)
    probe = gw.GradientProbe(model)
    (model(torch.tensor([[float("inf"), 1.0]])).sum()).backward()
    stats = probe.read()
    assert not np.isfinite(stats.grad_norm[0])


def test_probe_refuses_what_it_cannot_watch():
    with pytest.raises(ValueError, match="torch.nn.Module"):
        gw.GradientProbe("model")
    with pytest.raises(ValueError, match="no parameters"):
        gw.GradientProbe(nn.ReLU())


def test_block_norms_group_the_stack():
    torch.manual_seed(0)
    model = gw.build_model(gw.NetConfig(depth=3, width=8, norm="layer"), 2, 2)
    probe = gw.GradientProbe(model)
    backward(model, torch.randn(10, 2), torch.randint(0, 2, (10,)))
    stats = probe.read()
    blocks = stats.block_grad_norm()
    assert len(blocks) == 3
    layer = model.blocks[1].layer
    expected = torch.cat([layer.weight.grad.reshape(-1), layer.bias.grad]).double().norm()
    assert blocks[1] == pytest.approx(float(expected), rel=1e-6)


def test_detail_fields_are_sampled_every_n_reads_and_stay_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    probe = gw.GradientProbe(model, detail_every=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    for read in range(1, 10):
        before = [p.detach().clone() for p in model.parameters()]
        opt.zero_grad()
        backward(model, x, y)
        opt.step()
        stats = probe.read()
        expected_detail = 1 if read < 4 else 4 if read < 8 else 8
        assert stats.detail_step == expected_detail
        if read in (1, 4, 8):
            check_against_independent(model, stats)
        if read in (4, 8):
            after = [p.detach() for p in model.parameters()]
            delta = torch.cat([(a - b).reshape(-1) for a, b in zip(after[:2], before[:2], strict=True)]).norm()
            norm = torch.cat([a.reshape(-1) for a in after[:2]]).norm()
            assert stats.update_ratio[0] == pytest.approx(float(delta / norm), rel=1e-5)
        expected_norm = torch.cat([p.grad.reshape(-1) for p in model[2].parameters()]).norm()
        assert stats.grad_norm[1] == pytest.approx(float(expected_norm), rel=1e-5), "grad norm is measured every read"
    with pytest.raises(ValueError, match="detail_every"):
        gw.GradientProbe(model, detail_every=0)

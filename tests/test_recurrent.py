"""Vanishing through time (Hochreiter 1991; Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton 2015)."""

import numpy as np
import pytest
import torch
from _helpers import batch_for, loss_fn, stats_at_init
from torch import nn

import gradwidgets as gw


def time_ratio(**fields) -> float:
    stats = stats_at_init(gw.NetConfig(kind="rnn", seq_len=50, width=32, **fields))
    return stats.time_ratio()


def test_vanilla_tanh_rnn_vanishes_through_time():
    assert time_ratio(cell="rnn", activation="tanh") < 1e-6


def test_lstm_forget_gate_bias_decides():
    closed = time_ratio(cell="lstm", forget_bias=0.0)
    half_open = time_ratio(cell="lstm", forget_bias=1.0)
    open_gate = time_ratio(cell="lstm", forget_bias=3.0)
    assert closed < 1e-6
    assert closed < half_open < open_gate
    assert open_gate > 1e-2


def test_identity_initialized_relu_rnn_keeps_gradients_alive():
    assert time_ratio(cell="rnn", activation="relu", init="identity") > 1e-1
    assert time_ratio(cell="rnn", activation="relu") < 1e-3


def test_forget_bias_is_set_exactly_and_identity_init_is_identity():
    model = gw.build_model(gw.NetConfig(kind="rnn", cell="lstm", width=4, forget_bias=2.5), 2, 1)
    cell = model.blocks[0]
    torch.testing.assert_close(cell.bias_ih[4:8] + cell.bias_hh[4:8], torch.full((4,), 2.5))
    irnn = gw.build_model(gw.NetConfig(kind="rnn", cell="rnn", activation="relu", init="identity", width=4), 2, 1)
    torch.testing.assert_close(irnn.blocks[0].weight_hh, torch.eye(4))
    assert irnn.blocks[0].bias_hh.abs().max() == 0


@pytest.mark.parametrize("cell", gw.CELLS)
def test_time_gradients_equal_an_independent_unroll(cell):
    """Re-run the same weights through torch's fused nn.RNN/LSTM/GRU one step at a time and ask autograd."""
    cfg = gw.NetConfig(kind="rnn", cell=cell, activation="tanh", seq_len=12, width=8)
    data, x, y = batch_for(cfg, n=16)
    torch.manual_seed(0)
    model = gw.build_model(cfg, data.in_features, data.out_features)
    probe = gw.GradientProbe(model)
    loss_fn(data, model(x), y).backward()
    ours = probe.read().time_grad_norm

    ours_cell = model.blocks[0]
    fused = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](data.in_features, 8, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(fused, f"{name}_l0").copy_(getattr(ours_cell, name))
    h = torch.zeros(1, len(x), 8)
    c = torch.zeros(len(x), 8)
    watched = []
    for t in range(cfg.seq_len):
        if cell == "lstm":  # the LSTM equations by hand: the fused op hides c_t from h_t in its graph
            gates = x[:, t] @ fused.weight_ih_l0.T + fused.bias_ih_l0 + h[0] @ fused.weight_hh_l0.T + fused.bias_hh_l0
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = (torch.sigmoid(o) * torch.tanh(c))[None]
            watched.append(c)
        else:
            _, h = fused(x[:, t : t + 1], h)
            watched.append(h)
    loss = loss_fn(data, model.head(h[0]), y)
    grads = torch.autograd.grad(loss, watched)
    expected = np.array([g.double().norm().item() for g in grads])
    np.testing.assert_allclose(ours, expected, rtol=1e-4)
    assert len(ours) == 12


def test_stacked_rnn_and_layernorm_run():
    s = gw.TrainingSession(kind="rnn", cell="gru", depth=2, norm="layer", seq_len=10, width=16)
    stats = s.step(3)
    assert stats.time_grad_norm.shape == (10,)
    assert np.isfinite(stats.grad_norm).all()
    assert len(s.history.time_grad_norm) == 3


def test_lstm_learns_the_adding_problem_a_little():
    s = gw.TrainingSession(kind="rnn", cell="lstm", forget_bias=1.0, seq_len=10, width=32, optimizer="adam", lr=0.01)
    before = s.evaluate()["test_loss"]
    s.step(150)
    assert s.evaluate()["test_loss"] < 0.5 * before


def test_recall_task_and_frozen_recurrent_layer():
    s = gw.TrainingSession(kind="rnn", cell="lstm", dataset="recall", seq_len=8, width=16, depth=2, freeze=1)
    stats = s.step(2)
    assert stats.frozen[stats.names.index("blocks.0")] and not stats.frozen[stats.names.index("blocks.1")]
    assert gw.diagnose(stats).kind != "vanishing" or "step 0" in gw.diagnose(stats).message

"""GradientMonitor on users' own loops and models: frames stream from the calling thread, throttled."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import gradwidgets as gw
from gradwidgets.runtime.throttle import BudgetThrottle
from gradwidgets.testing import recording_comm


@pytest.fixture
def recorder():
    with recording_comm() as rec:
        yield rec


def train(model: nn.Module, monitor: gw.GradientMonitor, batches: int, make_batch) -> list:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = []
    for _ in range(batches):
        loss = make_batch(model)
        optimizer.zero_grad()
        loss.backward()
        seen.append(monitor.update(loss))
        optimizer.step()
    return seen


def encoder_loss(model: nn.Module) -> torch.Tensor:
    return model(torch.randn(8, 6, 16)).pow(2).mean()


def test_monitor_watches_a_transformer_encoder(recorder):
    torch.manual_seed(0)
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), num_layers=2)
    monitor = gw.GradientMonitor(model, fps=30)
    seen = train(model, monitor, 5, encoder_loss)
    assert seen[0] is not None, "the first call always draws"
    stats = monitor.stats
    assert isinstance(stats, gw.GradientStats)
    assert any(name.startswith("layers.1.") for name in stats.names)
    assert stats.step <= monitor.calls
    assert len(monitor.bars.bars.y) == len(stats.names)
    assert monitor.banner.kind in gw.DIAGNOSES


def test_monitor_watches_an_lstm(recorder):
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 8, num_layers=2, batch_first=True)
    monitor = gw.GradientMonitor(lstm)
    output, _ = lstm(torch.randn(3, 5, 4))
    output.sum().backward()
    stats = monitor.update()
    assert stats is not None and stats.names == ("",)
    assert stats.grad_norm[0] > 0
    assert monitor.error is None


def test_frames_stream_while_the_loop_runs_and_are_throttled(recorder):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    monitor = gw.GradientMonitor(model, fps=5)
    bars_before_end = []

    def batch(m):
        bars_before_end.append(len(recorder.updates(monitor.bars.bars)))
        return m(torch.randn(16, 4)).pow(2).mean()

    seen = train(model, monitor, 400, batch)
    reads = sum(s is not None for s in seen)
    assert reads == monitor.reads == monitor.frames
    assert 1 <= reads < 400 / 4, "most calls only count"
    assert bars_before_end[-1] >= 1, "frames reached the front end while the loop was still running"
    senders = {m.thread for m in recorder.updates(monitor.bars.bars)}
    assert senders == {threading.current_thread().name}, "drawn from the calling thread"
    assert monitor.calls == 400
    model(torch.randn(16, 4)).pow(2).mean().backward()
    assert monitor.update(torch.tensor(0.5), force=True) is not None
    steps = monitor.loss.lines[0].x
    assert len(steps) > 50 and steps[-1] >= 395, "every step's loss reaches the curve, not only the frames'"


def test_budget_throttle_spaces_expensive_frames():
    throttle = BudgetThrottle(fps=30, budget=0.05)
    assert throttle.due(0.0)
    throttle.spent(0.010, started=0.0)  # 10 ms at a 5% budget -> next frame 200 ms later
    assert not throttle.due(0.19) and throttle.due(0.2)
    throttle.spent(0.0001, started=1.0)  # cheap frame -> the fps cap decides
    assert not throttle.due(1.03) and throttle.due(1.0 + 1 / 30)
    with pytest.raises(ValueError, match="budget"):
        BudgetThrottle(budget=0)
    with pytest.raises(ValueError, match="fps"):
        BudgetThrottle(fps=100)


def test_monitor_refuses_what_is_not_a_model(recorder):
    with pytest.raises(ValueError, match="model"):
        gw.GradientMonitor("not a model")


def test_a_drawing_failure_is_shown_and_training_continues(recorder, monkeypatch):
    model = nn.Linear(3, 1)
    monitor = gw.GradientMonitor(model)

    def broken(*args, **kwargs):
        raise RuntimeError("cannot draw")

    monkeypatch.setattr(monitor.bars, "show", broken)
    model(torch.randn(2, 3)).sum().backward()
    assert monitor.update() is not None
    assert isinstance(monitor.error, RuntimeError)
    assert monitor.banner.kind == "error" and "cannot draw" in monitor.banner.value
    assert monitor.update(force=True) is not None, "stats keep coming"

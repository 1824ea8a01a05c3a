"""The decision boundary: the grid's numbers against plain PyTorch, what it says about the training points for a
net that learned and one that did not, that it leaves the model as it was, its throttling and its cost."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import gradwidgets as gw
from gradwidgets.apps.frames import BOUNDARY_INTERVAL, FrameBuilder
from gradwidgets.core.boundary import BOUNDARY_BUDGET, GRID_SIZE, boundary_applies, evaluate_boundary
from gradwidgets.core.data import make_dataset
from gradwidgets.testing import recording_comm, wait_until


def trained(steps: int, **settings) -> gw.TrainingSession:
    session = gw.TrainingSession(**settings)
    session.step(steps)
    return session


def grid_accuracy(session: gw.TrainingSession) -> float:
    grid = evaluate_boundary(session.model, session.data, step=session.steps)
    x, y = session.data.x_train.numpy(), session.data.y_train.numpy()
    return float((grid.predicted_at(x[:, 0], x[:, 1]) == y).mean())


def test_the_grid_is_the_models_class_one_probability_at_each_cell():
    session = trained(20, activation="relu", init="kaiming", depth=3, width=16, dataset="moons")
    grid = evaluate_boundary(session.model, session.data, step=session.steps)
    assert grid.probability.shape == (GRID_SIZE, GRID_SIZE) and grid.step == 20
    x = session.data.x_train
    assert grid.xs[0] < float(x[:, 0].min()) and grid.xs[-1] > float(x[:, 0].max()), "the grid spans the points"
    assert grid.ys[0] < float(x[:, 1].min()) and grid.ys[-1] > float(x[:, 1].max())
    for i, j in ((0, 0), (7, 31), (39, 12)):  # plain PyTorch, one point at a time
        point = torch.tensor([[grid.xs[j], grid.ys[i]]], dtype=torch.float32)
        with torch.no_grad():
            expected = float(F.softmax(session.model.eval()(point).double(), dim=1)[0, 1])
        session.model.train()
        assert grid.probability[i, j] == pytest.approx(expected, abs=1e-6)
    assert len(grid.points_x) <= 300 and set(np.unique(grid.labels)) == {0, 1}


def test_a_trained_net_separates_the_points_and_a_vanishing_one_does_not():
    learned = trained(300, activation="relu", init="kaiming", depth=4, width=32, dataset="moons", lr=0.2)
    assert grid_accuracy(learned) > 0.85, "the picture of a net that learned separates its training points"
    vanishing = trained(100, activation="sigmoid", depth=20, dataset="spiral")
    assert grid_accuracy(vanishing) < 0.62, "a vanishing net's picture is chance on the spiral"
    fixed = trained(150, activation="relu", depth=20, dataset="spiral", norm="batch")
    assert grid_accuracy(fixed) > 0.9, "the fixed net carves the spiral"


def test_evaluating_leaves_weights_statistics_gradients_and_mode_as_they_were():
    session = trained(3, activation="relu", depth=3, width=8, norm="batch", dataset="circles")
    model = session.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    assert model.training
    evaluate_boundary(model, session.data)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_only_two_feature_two_class_data_has_a_picture():
    assert all(boundary_applies(make_dataset(name, n_samples=64)) for name in ("spiral", "moons", "circles", "xor"))
    assert not boundary_applies(make_dataset("digits", n_samples=64))
    assert not boundary_applies(make_dataset("adding", n_samples=64, seq_len=5))
    session = gw.TrainingSession(depth=2, width=8, dataset="digits", n_samples=64)
    with pytest.raises(ValueError, match="'digits' has no decision boundary.*64 features"):
        evaluate_boundary(session.model, session.data)
    with pytest.raises(ValueError, match="size"):
        evaluate_boundary(gw.TrainingSession(depth=2).model, make_dataset("moons", n_samples=64), size=1)


def test_frames_carry_a_grid_at_most_every_n_steps_and_within_the_time_budget():
    session = gw.TrainingSession(activation="sigmoid", depth=12)  # the dashboard's default net
    builder = FrameBuilder(session, boundary_every=10, boundary_interval=0.0)  # the step cadence and budget alone
    assert builder.build().boundary is not None, "a new run gets its picture at once"
    assert builder.build().boundary is None, "same step: nothing new"
    steps_with_grid = []
    start = time.perf_counter()
    # at least 300 steps and 3 grids, and the last grid's time budget paid back (a grid slowed by a loaded machine
    # makes the next one wait longer: the count of grids in a fixed number of steps depends on the machine)
    for taken in range(1, 5001):
        session.step()
        frame = builder.build(with_loss=False, with_heat=False)  # as while playing
        assert frame.boundary_applies
        if frame.boundary is not None:
            steps_with_grid.append(frame.boundary.step)
        if taken >= 300 and len(steps_with_grid) >= 3 and time.monotonic() >= builder._boundary_ready:
            break
    elapsed = time.perf_counter() - start
    gaps = np.diff(steps_with_grid)
    assert len(steps_with_grid) >= 3 and gaps.min() >= 10, steps_with_grid
    share = builder.boundary_seconds / elapsed
    assert share <= BOUNDARY_BUDGET + 0.01, f"the grids took {share:.1%} of the trainer's time"
    session.step()
    assert builder.build(with_loss=True).boundary is not None, "a paused frame at a new step gets a fresh grid"
    assert FrameBuilder(session).build().boundary is None, "nobody draws it: never computed"
    paced = FrameBuilder(session, boundary_every=10)  # the default: at most one ~13 kB grid per BOUNDARY_INTERVAL
    assert paced.build().boundary is not None
    start, grids = time.monotonic(), 0
    for _ in range(200):
        session.step()
        grids += paced.build(with_loss=False, with_heat=False).boundary is not None
    assert grids <= 1 + (time.monotonic() - start) / BOUNDARY_INTERVAL, grids
    digits = gw.TrainingSession(depth=2, width=8, dataset="digits", n_samples=64)
    frame = FrameBuilder(digits, boundary_every=10).build()
    assert frame.boundary is None and not frame.boundary_applies


def test_the_playground_draws_the_boundary_beside_the_bars_only_for_2d_data():
    with recording_comm():
        pg = gw.Playground(activation="relu", init="kaiming", depth=3, width=16, dataset="moons")
        try:
            assert wait_until(lambda: pg.boundary.step == 0 and pg.boundary.grid.visible)
            assert pg._boundary_column.layout.display is None
            grid = np.asarray(pg.boundary.grid.color)
            assert grid.shape == (GRID_SIZE, GRID_SIZE) and np.all((grid >= 0) & (grid <= 1))
            drawn = sum(len(mark.x) for mark in pg.boundary.points)
            assert 200 <= drawn <= 300 and "class 1" in pg.boundary.legend.value
            pg.step(30)
            assert wait_until(lambda: pg.boundary.step == 30), pg.boundary.step
            pg.dataset = "digits"
            assert wait_until(lambda: pg._boundary_column.layout.display == "none")
            assert not pg.boundary.grid.visible
        finally:
            pg.close()
        rnn = gw.Playground(kind="rnn", seq_len=5, width=8)
        try:
            assert rnn._boundary_column is None and rnn._builder.boundary_every is None
        finally:
            rnn.close()

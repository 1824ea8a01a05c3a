"""Compare: same data and seed, lockstep training, one shared log axis, a diagnosis per run."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import gradwidgets as gw
from gradwidgets.apps.compare import describe_differences
from gradwidgets.testing import recording_comm, wait_until

SMALL = dict(batch_size=32, n_samples=256)


@pytest.fixture
def recorder():
    with recording_comm() as rec:
        yield rec


def test_sigmoid_vs_relu_in_lockstep_on_one_shared_axis(recorder):
    before = set(threading.enumerate())
    compare = gw.Compare(
        [
            gw.NetConfig(activation="sigmoid", depth=12, width=16),
            {"activation": "relu", "init": "kaiming", "depth": 12, "width": 16},
        ],
        **SMALL,
    )
    try:
        assert compare.labels == ("sigmoid, default init", "relu, kaiming init")
        assert all(bars.scale is compare.scale for bars in compare.bars), "one y scale for every run"
        data = [s.data for s in compare.sessions]
        assert data[0].name == data[1].name and bool((data[0].x_train == data[1].x_train).all())
        compare.play()
        assert wait_until(lambda: compare.sessions[0].steps > 30)
        compare.pause()
        assert compare.sessions[0].steps == compare.sessions[1].steps, "lockstep"
        assert wait_until(lambda: [b.kind for b in compare.banners] == ["vanishing", "healthy"])
        low, high = compare.scale.min, compare.scale.max
        for bars in compare.bars:
            assert bars.bars.base == low and np.all(np.asarray(bars.bars.y) >= low)
        assert 0 < low < high
    finally:
        compare.close()
    assert [t for t in set(threading.enumerate()) - before if t.is_alive()] == []


def test_a_diverging_run_stops_while_the_other_continues(recorder):
    compare = gw.Compare([{"lr": 50.0, "depth": 4, "width": 16}, {"lr": 0.1, "depth": 4, "width": 16}], **SMALL)
    try:
        assert compare.labels == ("lr=50.0", "lr=0.1")
        compare.play()
        assert wait_until(lambda: compare.sessions[0].diverged and compare.sessions[1].steps > 50)
        assert compare.playing
        stopped_at = compare.sessions[0].steps
        assert wait_until(lambda: compare.sessions[1].steps > stopped_at + 20)
        assert compare.sessions[0].steps == stopped_at
        assert wait_until(
            lambda: compare.banners[0].kind == "nonfinite" and "this run stopped" in compare.banners[0].value
        )
        compare.reset()
        assert [s.steps for s in compare.sessions] == [0, 0] and not compare.sessions[0].diverged
    finally:
        compare.close()


def test_step_and_toggle(recorder):
    compare = gw.Compare([{"residual": False}, {"residual": True}], **SMALL)
    try:
        compare.step(3)
        assert [s.steps for s in compare.sessions] == [3, 3]
        compare.toggle.value = "update_ratio"
        assert wait_until(lambda: all(b.quantity == "update_ratio" for b in compare.bars))
    finally:
        compare.close()


def test_configs_are_validated(recorder):
    with pytest.raises(ValueError, match="2 to 4"):
        gw.Compare([gw.NetConfig()])
    with pytest.raises(ValueError, match="2 to 4"):
        gw.Compare([gw.NetConfig()] * 5)
    with pytest.raises(ValueError, match=r"configs\[1\].*seed"):
        gw.Compare([{}, {"seed": 3}])
    with pytest.raises(ValueError, match="depth"):
        gw.Compare([{"depth": 0}, {}])
    with pytest.raises(ValueError, match="one dataset"):
        gw.Compare([{"kind": "mlp"}, {"kind": "rnn"}])
    with pytest.raises(ValueError, match="labels"):
        gw.Compare([{}, {}], labels=["only one"])


def test_labels_name_only_what_differs():
    assert describe_differences([{"a": 1, "b": 2}, {"a": 1, "b": 3}]) == ["b=2", "b=3"]
    assert describe_differences([{"a": 1}, {"a": 1}]) == ["run 1", "run 2"]
    assert describe_differences([{"residual": False, "norm": "none"}, {"residual": True, "norm": "layer"}]) == [
        "no norm, no skip",
        "LayerNorm, skip",
    ]

import numpy as np
import pytest

import gradwidgets as gw


def test_ring_buffer_keeps_the_newest_in_order_and_stays_bounded():
    session = gw.TrainingSession(depth=3, width=8, history_size=50, eval_every=7)
    session.step(120)
    h = session.history
    assert len(h) == 50 and h.total == 120
    np.testing.assert_array_equal(h.steps, np.arange(71, 121))
    assert h.grad_norm.shape == (50, len(session.last_stats.names))
    np.testing.assert_array_equal(h.grad_norm[-1], session.last_stats.grad_norm)
    assert h.loss[-1] == session.last_stats.loss
    assert h.test_steps[-1] == 119 and len(h.test_steps) == 120 // 7
    record = h.at(-1)
    assert record["step"] == 120
    np.testing.assert_array_equal(record["grad_norm"], h.grad_norm[-1])
    assert h.at(0)["step"] == 71
    with pytest.raises(IndexError):
        h.at(50)


def test_memory_does_not_grow_with_steps():
    session = gw.TrainingSession(depth=2, width=4, batch_size=8, history_size=100)
    session.step(100)
    size = session.history.nbytes
    session.step(400)
    assert session.history.nbytes == size


def test_history_validates_capacity():
    with pytest.raises(ValueError, match="history_size"):
        gw.History(0, ("a",))

"""A classroom tool breaks in front of forty people or not at all: rapid lifecycles, divergence, refusals."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

import gradwidgets as gw
from gradwidgets.testing import recording_comm, wait_until

SMALL = dict(depth=3, width=8, batch_size=16, n_samples=64)


def training_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gradwidgets")]


@pytest.fixture
def recorder():
    with recording_comm() as rec:
        yield rec


def test_500_rapid_play_pause_toggle_reset_close_cycles(recorder):
    """No deadlock, no leaked thread, no lost config change."""
    rng = random.Random(0)
    before = len(training_threads())
    activations = ("relu", "tanh", "sigmoid", "gelu")
    pg = gw.Playground(**SMALL)
    expected = {"activation": pg.activation, "depth": pg.depth, "lr": pg.lr}
    done = threading.Event()
    failures: list[BaseException] = []

    def cycles() -> None:
        try:
            run_cycles()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    def run_cycles() -> None:
        nonlocal pg
        for i in range(500):
            action = rng.choice(("play", "pause", "toggle", "toggle", "reset", "step"))
            if action == "play":
                pg.play()
            elif action == "pause":
                pg.pause()
            elif action == "step":
                pg.step()
            elif action == "reset":
                pg.reset()
            else:
                field = rng.choice(("activation", "depth", "lr"))
                value = {
                    "activation": rng.choice(activations),
                    "depth": rng.randint(1, 5),
                    "lr": rng.choice((0.01, 0.05, 0.1)),
                }[field]
                setattr(pg, field, value)
                expected[field] = value
            if i % 50 == 49:  # close mid-flight, then carry on with a fresh widget
                pg.play()
                pg.close()
                pg = gw.Playground(**{**SMALL, **expected})
        done.set()

    worker = threading.Thread(target=cycles, name="cycle-driver")
    worker.start()
    worker.join(240)
    assert not failures, failures
    assert done.is_set(), "the cycles deadlocked"
    config, settings = pg.session.config, pg.session.settings
    assert (config.activation, config.depth, settings.lr) == (expected["activation"], expected["depth"], expected["lr"])
    pg.play()
    assert wait_until(lambda: pg.session.steps > 3), "still trains after all that"
    pg.close()
    assert wait_until(lambda: len(training_threads()) == before), [t.name for t in training_threads()]


def test_divergence_is_contained_and_reset_recovers(recorder):
    pg = gw.Playground(depth=8, width=16, activation="relu", init="kaiming", lr=1e4, n_samples=128)
    try:
        pg.play()
        assert wait_until(lambda: not pg.playing and pg.session.steps > 0, timeout=30)
        assert pg.session.diverged or gw.diagnose(pg.session.last_stats).kind in ("exploding", "nonfinite")
        assert wait_until(lambda: pg.banner.kind in ("nonfinite", "exploding"))
        assert pg.error is None, "divergence is a diagnosis, not an exception"
        pg.reset()
        assert not pg.session.diverged and pg.session.steps == 0
        pg.lr = 0.01
        pg.step(5)
        assert wait_until(lambda: pg.session.steps == 5)
        assert not pg.session.diverged and np.isfinite(pg.session.last_stats.grad_norm).all()
    finally:
        pg.close()


def test_refused_toggles_leave_training_untouched(recorder):
    pg = gw.Playground(**SMALL)
    try:
        pg.play()
        assert wait_until(lambda: pg.session.steps > 5)
        model = pg.session.model
        for field, value in (
            ("lr", float("nan")),
            ("lr", -1.0),
            ("depth", 500),
            ("activation", "nope"),
            ("batch_size", 0),
            ("width", 10**6),
        ):
            with pytest.raises(Exception, match=field):
                setattr(pg, field, value)
        assert pg.session.model is model and pg.playing
        steps = pg.session.steps
        assert wait_until(lambda: pg.session.steps > steps + 5), "training carries on"
    finally:
        pg.close()

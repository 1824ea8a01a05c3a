"""The Playground's forward-statistics toggle (issue 14), over a recording comm (no browser)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import gradwidgets as gw
from gradwidgets.apps.forward_row import forward_summary
from gradwidgets.testing import recording_comm, wait_until

SMALL = dict(width=16, batch_size=32, n_samples=256)


@pytest.fixture
def playground():
    made: list[gw.Playground] = []

    def make(**kwargs) -> gw.Playground:
        pg = gw.Playground(**{**SMALL, **kwargs})
        made.append(pg)
        return pg

    with recording_comm():
        yield make
        for pg in made:
            pg.close()


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_toggle_on_shows_the_collapse_and_off_removes_the_hooks(playground) -> None:
    pg = playground(activation="sigmoid", depth=20)
    pg.step()
    assert pg.forward.text.value == "" and _hooks(pg.session.model) == 0  # off by default: no hooks, no cost
    pg.forward.toggle.value = True
    pg.step(2)
    assert wait_until(lambda: "batch spread" in pg.forward.text.value)
    reading = pg.forward.reading
    assert reading is not None and np.isfinite(reading.state_grad_norm).all()
    assert reading.std[reading.in_stack][-1] < 1e-6 * reading.std[reading.in_stack][0]
    assert "saturated (|z| &gt; 2): at most 0%" in pg.forward.text.value
    pg.forward.toggle.value = False
    pg.step()
    assert pg.forward.stats is None and _hooks(pg.session.model) == 0
    assert wait_until(lambda: pg.forward.text.value == "")


def test_the_hooks_follow_a_rebuilt_model(playground) -> None:
    pg = playground(activation="sigmoid", depth=4)
    pg.forward.toggle.value = True
    pg.step()
    old = pg.session.model
    pg.session.reconfigure(activation="relu", init="kaiming")
    pg.step()
    assert _hooks(old) == 0 and pg.forward.stats is not None and pg.forward.stats.model is pg.session.model
    assert wait_until(lambda: "dead units" in pg.forward.text.value)


def test_recurrent_nets_say_why_there_is_nothing_to_show(playground) -> None:
    pg = playground(kind="rnn", cell="lstm", activation="tanh", seq_len=10)
    pg.forward.toggle.value = True
    pg.step()
    assert wait_until(lambda: "need a net with activation modules" in pg.forward.text.value)


def test_summary_numbers_match_a_direct_reading() -> None:
    torch.manual_seed(0)
    model = gw.build_model(gw.NetConfig(activation="relu", depth=5, bias=False), 2, 2)
    x, y = torch.randn(64, 2), torch.randint(2, (64,))
    with gw.ActivationStats(model) as stats:
        F.cross_entropy(model(x), y).backward()
        reading = stats.read()
    text = forward_summary(reading)
    stack_spread = reading.std[reading.in_stack]
    assert f"{stack_spread[0]:.1e} → {stack_spread[-1]:.1e}" in text
    assert f"dead units: at most {np.nanmax(reading.dead[reading.in_stack]):.0%}" in text
    assert f"{reading.state_grad_ratio():.1e}" in text

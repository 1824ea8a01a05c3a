"""SignalsPanel: the instability signals' second panel draws plain arrays (no torch): log axis following the data,
the warning's threshold and block highlighted, a bounded number of points, the blocks named in the legend."""

from __future__ import annotations

import numpy as np
import pytest

from gradwidgets.testing import recording_comm
from gradwidgets.widgets.signals_panel import MAX_POINTS, SignalsPanel, block_colors, readings_arrays


@pytest.fixture
def recorder():
    with recording_comm() as rec:
        yield rec


def arrays(steps: int, blocks: int, top: float) -> dict:
    growth = np.geomspace(1.0, top, steps)[:, None] * np.linspace(0.5, 1.0, blocks)[None, :]
    return {
        "steps": np.arange(steps) * 5.0,
        "blocks": tuple(f"h.{i}" for i in range(blocks)),
        "max_logit": growth,
        "entropy": np.linspace(2.0, 0.1, steps)[:, None] * np.ones(blocks),
        "log_z": np.linspace(4.2, 5.0, steps),
        "log_z_max": np.linspace(4.5, 9.0, steps),
    }


def test_the_logit_axis_follows_the_data_in_decades_and_shows_the_threshold_only_near_it(recorder):
    panel = SignalsPanel(logit_limit=300.0)
    panel.show(**arrays(20, 3, top=8.0))  # 0.5 .. 8: one to two decades, the threshold far above
    assert (panel.scale_logit.min, panel.scale_logit.max) == (0.1, 10.0)
    assert list(panel.axis_logit.tick_values) == [0.1, 1.0, 10.0]
    assert len(panel.limit_line.y) == 0
    panel.show(**arrays(20, 3, top=120.0))  # within a decade of 300: the threshold is drawn, the axis reaches it
    assert panel.scale_logit.max == 1000.0 and list(panel.limit_line.y) == [300.0, 300.0]
    assert panel.scale_entropy.max == 2.0 and panel.scale_log_z.max == 10.0


def test_lines_are_one_per_block_light_to_dark_and_bounded_in_points(recorder):
    panel = SignalsPanel()
    data = arrays(3 * MAX_POINTS, 4, top=50.0)
    panel.show(**data)
    drawn = np.asarray(panel.logit_lines.y)
    assert drawn.shape[0] == 4 and drawn.shape[1] <= MAX_POINTS
    assert panel.logit_lines.x[-1] == data["steps"][-1]  # the newest step is always in
    np.testing.assert_allclose(drawn[:, -1], data["max_logit"][-1], rtol=1e-6)
    assert list(panel.logit_lines.colors) == block_colors(4)
    brightness = [sum(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in block_colors(4)]
    assert brightness == sorted(brightness, reverse=True)
    assert all(f">h.{i}<" in panel.legend.value for i in range(4))


def test_a_warning_highlights_its_block_and_says_what_and_where(recorder):
    panel = SignalsPanel()
    data = arrays(30, 6, top=400.0)
    panel.show(**data)
    assert len(panel.logit_warned.y) == 0 and "No instability warning" in panel.note.value
    panel.show_warning(("h.4", 145, "h.4's largest attention logit grew from 12 to 400 <fast>"))
    np.testing.assert_allclose(panel.logit_warned.y, data["max_logit"][:, 4].astype(np.float32))
    assert "Unstable at step 145" in panel.note.value and "&lt;fast&gt;" in panel.note.value
    assert "h.4 (warning)" in panel.legend.value
    panel.show_warning(None)
    assert len(panel.logit_warned.y) == 0


def test_the_cosine_chart_draws_each_block_the_edge_threshold_and_the_warned_block(recorder):
    panel = SignalsPanel(edge_cos=-0.3)
    data = arrays(30, 3, top=20.0)
    cos = np.linspace(0.1, -0.6, 30)[:, None] * np.array([0.5, 1.0, 0.8])[None, :]
    panel.show(**data, momentum_cos=cos)
    np.testing.assert_allclose(np.asarray(panel.cos_lines.y), cos.T.astype(np.float32))
    assert (panel.scale_cos.min, panel.scale_cos.max) == (-1.0, 1.0)
    assert list(panel.edge_line.y) == [-0.3, -0.3] and list(panel.edge_line.x) == [0.0, panel.scale_x.max]
    panel.show_warning(("h.1", 140, "successive gradients point against each other"))
    np.testing.assert_allclose(panel.cos_warned.y, cos[:, 1].astype(np.float32))
    panel.show(**data)  # a reader without the cosine (an older run file): no line, nothing raised
    assert np.isnan(np.asarray(panel.cos_lines.y, dtype=float)).all()


def test_the_panel_draws_the_thresholds_the_rules_use():
    from gradwidgets.core.signals import EDGE_COS, LOGIT_LIMIT

    with recording_comm():
        panel = SignalsPanel()
    assert (panel.logit_limit, panel.edge_cos) == (LOGIT_LIMIT, EDGE_COS)


def test_readings_become_arrays_and_many_blocks_get_a_shorter_legend(recorder):
    class Reading:
        def __init__(self, step: int, blocks: tuple[str, ...]) -> None:
            self.step, self.blocks = step, blocks
            self.max_logit = np.arange(len(blocks), dtype=float) + step
            self.entropy = np.ones(len(blocks))
            self.log_z, self.log_z_max = 4.0, 5.0

    blocks = tuple(f"layers.{i}" for i in range(24))
    readings = [Reading(0, ("old",)), Reading(10, blocks), Reading(20, blocks)]
    data = readings_arrays(readings)
    assert list(data["steps"]) == [10, 20] and data["max_logit"].shape == (2, 24)  # other blocks left out
    assert data["momentum_cos"].shape == (2, 24) and np.isnan(data["momentum_cos"]).all()  # readings without it
    panel = SignalsPanel()
    panel.show(**data)
    assert ">layers.0<" in panel.legend.value and ">layers.23<" in panel.legend.value
    assert ">layers.5<" not in panel.legend.value


def test_the_run_viewer_draws_a_logged_gpts_signals_and_replays_them(recorder, tmp_path):
    import sys
    from pathlib import Path

    import torch
    from torch import nn

    import gradwidgets as gw
    from gradwidgets.testing import wait_until

    sys.path.insert(0, str(Path(__file__).parent))
    from _models import TinyGPT

    torch.manual_seed(0)
    model = TinyGPT(vocab=32, width=16, heads=2, context=8, depth=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with gw.GradientLogger(model, tmp_path / "gpt.gwrun", every=5) as logger:
        for _ in range(20):
            idx = torch.randint(0, 32, (6, 9))
            loss = nn.functional.cross_entropy(model(idx[:, :-1]).reshape(-1, 32), idx[:, 1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            logger.log(loss)
            optimizer.step()
    with gw.GradientLogger(nn.Linear(2, 1), tmp_path / "mlp.gwrun") as plain:
        plain.model(torch.randn(3, 2)).sum().backward()
        plain.log()
    readings = gw.load_run(tmp_path / "gpt.gwrun").signals
    viewer = gw.RunViewer([tmp_path / "gpt.gwrun", tmp_path / "mlp.gwrun"], follow=False, interval=0.05)
    try:
        assert wait_until(lambda: viewer.shown_steps == [20, 1]), viewer.shown_steps
        panel = viewer.columns[0].signals
        assert panel is not None and viewer.columns[1].signals is None  # no panel for a run without signals
        assert panel in viewer.columns[0].children and list(panel.steps) == [1, 5, 10, 15, 20]
        np.testing.assert_allclose(np.asarray(panel.logit_lines.y)[:, -1], readings[-1].max_logit, rtol=1e-6)
        viewer.show_step(10)
        assert wait_until(lambda: viewer.shown_steps[0] == 10)
        assert wait_until(lambda: list(panel.steps) == [1, 5, 10])  # replay: the readings up to the step shown
    finally:
        viewer.close()


def test_the_playground_draws_signals_only_when_asked_and_only_for_transformers(recorder):
    import gradwidgets as gw
    from gradwidgets.testing import wait_until

    plain = gw.Playground(kind="transformer", depth=2, width=16, seq_len=6)
    pg = gw.Playground(kind="transformer", depth=2, width=16, seq_len=6, signals=True, optimizer="adam")
    try:
        assert plain.signals_panel is None  # off by default
        pg.step(21)
        drawn = lambda: np.asarray(pg.signals_panel.cos_lines.y).shape[-1]  # noqa: E731 - the last chart drawn
        assert wait_until(lambda: pg.session.steps == 21 and drawn() == 3, timeout=30)
        readings = list(pg.signals.history)
        assert [r.step for r in readings] == [0, 10, 20]  # every 10th training forward pass
        positive = np.where(readings[-1].max_logit > 0, readings[-1].max_logit, np.nan)  # a log axis: > 0 only
        np.testing.assert_allclose(np.asarray(pg.signals_panel.logit_lines.y)[:, -1], positive, rtol=1e-6)
        assert pg.signals.optimizer is pg.session.optimizer_instance  # Adam: its momentum gives the cosine
        assert np.isfinite(readings[-1].momentum_cos).all() and readings[-1].lr == pg.session.settings.lr
        np.testing.assert_allclose(np.asarray(pg.signals_panel.cos_lines.y)[:, -1], readings[-1].momentum_cos,
                                   rtol=1e-6)
        pg.reset()  # a new model: the signals follow it
        pg.step(1)
        assert wait_until(lambda: pg.session.steps == 1 and pg.signals.model is pg.session.model, timeout=30)
    finally:
        plain.close()
        pg.close()
    assert not pg.session.model._forward_pre_hooks  # close() took the hooks out
    with pytest.raises(ValueError, match="signals: only for kind='transformer'"):
        gw.Playground(kind="mlp", depth=2, signals=True)


def test_the_run_viewer_keeps_showing_the_last_recorded_warning(recorder, tmp_path):
    import gradwidgets as gw
    from gradwidgets.core.runfile import RunRecord, RunWriter
    from gradwidgets.core.signals import InstabilityReading
    from gradwidgets.testing import wait_until

    def reading(step: int, logit: float) -> InstabilityReading:
        return InstabilityReading(step, ("h.0", "h.1"), np.array([5.0, logit]), np.ones(2), 4.0, 5.0,
                                  np.full(2, np.nan), np.full(2, np.nan), float("nan"))

    unstable = gw.Diagnosis(kind="unstable", message="h.1's largest attention logit grew", fix="qk-layernorm",
                            ratio=1.0, layers=("h.1",))
    healthy = gw.Diagnosis(kind="healthy", message="fine", fix="", ratio=1.0)
    path = tmp_path / "warned.gwrun"
    with RunWriter(path) as writer:
        writer.write_header({"names": ["a"]})
        for step, logit, verdict in ((10, 10.0, healthy), (20, 400.0, unstable), (30, 500.0, healthy)):
            writer.append(RunRecord(step=step, arrays={"grad_norm": np.ones(1)}, verdict=verdict,
                                    signals=(reading(step, logit),)))
    viewer = gw.RunViewer(path, follow=False, interval=0.05)
    try:
        assert wait_until(lambda: viewer.shown_steps == [30])
        panel = viewer.columns[0].signals
        assert panel.warned_block == "h.1" and "Unstable at step 20" in panel.note.value  # growth stopped: still shown
        viewer.show_step(10)
        assert wait_until(lambda: panel.warned_block is None and list(panel.steps) == [10])  # before the warning
    finally:
        viewer.close()

"""Playground behaviour over a recording comm (no browser): throttled frames, live reconfiguration, pause,
refused values, errors and divergence shown in the widget, replay, clean close."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from traitlets import TraitError

import gradwidgets as gw
from gradwidgets.core.diagnosis import format_number
from gradwidgets.testing import recording_comm, wait_until

SMALL = dict(depth=6, width=16, batch_size=32, n_samples=256)


@pytest.fixture
def recorder():
    with recording_comm() as rec:
        yield rec


@pytest.fixture
def playgrounds(recorder):
    made: list[gw.Playground] = []

    def make(**kwargs) -> gw.Playground:
        pg = gw.Playground(**{**SMALL, **kwargs})
        made.append(pg)
        return pg

    yield make
    for pg in made:
        pg.close()


def drawn(pg: gw.Playground) -> int:
    return pg.runner.frames_rendered


def test_bars_and_verdict_at_init_without_pressing_anything(playgrounds):
    """The textbook picture is at initialization: bars, verdict and one ratio before any step."""
    pg = playgrounds(activation="sigmoid", depth=12)
    assert wait_until(lambda: len(pg.bars.bars.y) == 14 and pg.banner.kind == "vanishing")
    assert pg.session.steps == 0 and len(pg.session.history) == 0, "showing the bars trained nothing"
    peek = pg.session.peek()
    expected = gw.diagnose(peek, config=pg.session.config)
    assert np.all(np.isfinite(pg.bars.bars.y)) and pg.bars.bars.base > 0
    ratio = format_number(expected.ratio)
    assert f"<b class='gw-ratio'>{ratio}</b>" in pg.banner.value, "the banner marks the diagnosis' ratio"
    assert f">{ratio}</b>" in pg.activation_plot.theory.value, "the readout prints the same text"
    assert "At initialization" in pg.banner.value
    assert "14 bars = input + 12 hidden + head" in pg.bars.key.value
    assert "step 0" in pg.controls.transport.status.value
    assert not pg.loss.axis_x.visible and not pg.heatmap.axis_row.visible, "empty charts show no placeholder ticks"


def test_a_structural_change_says_it_restarted(playgrounds):
    pg = playgrounds(activation="sigmoid")
    pg.step(3)
    pg.activation = "tanh"
    assert wait_until(lambda: "restarted: activation changed" in pg.controls.transport.status.value)
    assert "step 0" in pg.controls.transport.status.value
    assert pg.loss.note == "restarted"  # the title stays short; the status line says why
    pg.step(2)
    assert wait_until(lambda: pg.loss.figure.title == "Loss · restarted")
    pg.lr = 0.05  # not structural: the run goes on, nothing restarts
    pg.step()
    assert wait_until(lambda: "step 3" in pg.controls.transport.status.value)
    pg.reset()
    assert wait_until(lambda: "restarted: reset" in pg.controls.transport.status.value)


def test_help_lists_valid_values_first():
    doc = gw.Playground.__doc__
    assert doc.startswith("Valid values:")
    first = doc.split("\n\n")[0]
    for value in ("sigmoid", "relu", "kaiming", "batch", "adam", "spiral"):
        assert value in first


def test_step_trains_once_and_shows_the_diagnosis(playgrounds):
    pg = playgrounds(activation="sigmoid", depth=20)
    assert pg.session.steps == 0
    pg.step()
    assert pg.session.steps == 1
    assert wait_until(lambda: pg.banner.kind == "vanishing")
    assert "Vanishing" in pg.banner.value
    assert len(pg.bars.bars.y) == len(pg.session.last_stats.names)
    assert np.all(np.isfinite(pg.bars.bars.y)) and pg.bars.bars.base > 0


def test_frames_are_throttled_while_training_runs_fast(playgrounds, recorder):
    pg = playgrounds(fps=10)
    start = time.monotonic()
    pg.play()
    assert wait_until(lambda: pg.session.steps > 200 and time.monotonic() - start > 1.0)
    pg.pause()
    elapsed = time.monotonic() - start + 0.3
    time.sleep(0.3)
    bar_messages = len(recorder.updates(pg.bars.bars, since=start))
    assert 1 <= bar_messages <= 10 * elapsed + 3
    assert bar_messages <= drawn(pg) + 1, "one message per mark per frame"
    assert pg.session.steps > 5 * bar_messages, "frame rate is independent of the step rate"


def test_a_control_change_while_playing_reaches_the_session_and_keeps_playing(playgrounds):
    pg = playgrounds(activation="sigmoid")
    pg.play()
    assert wait_until(lambda: pg.session.steps > 20)
    pg.controls.inputs["activation"].value = "relu"  # as the browser would
    assert pg.session.config.activation == "relu" and pg.activation == "relu"
    assert pg.playing
    restarted = pg.session.steps
    assert wait_until(lambda: pg.session.steps > restarted + 20), "structural change: rebuilt and still training"
    pg.lr = 0.05
    assert pg.session.settings.lr == 0.05
    assert pg.session.optimizer_instance.param_groups[0]["lr"] == 0.05
    pg.depth = 3
    layers = 5  # input layer, 3 hidden, head
    assert wait_until(lambda: pg.session.last_stats is not None and len(pg.session.last_stats.names) == layers)
    assert wait_until(lambda: len(pg.bars.bars.y) == layers)


def test_pause_stops_steps(playgrounds):
    pg = playgrounds()
    pg.play()
    assert wait_until(lambda: pg.session.steps > 10)
    pg.pause()
    paused_at = pg.session.steps
    time.sleep(0.3)
    assert pg.session.steps == paused_at and not pg.playing
    assert wait_until(lambda: "paused" in pg.controls.transport.status.value)


def test_close_leaves_no_thread(recorder):
    before = set(threading.enumerate())
    pg = gw.Playground(**SMALL)
    pg.play()
    assert wait_until(lambda: pg.session.steps > 5)
    pg.close()
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert left == []
    assert pg.comm is None and pg.bars.bars.comm is None, "every widget of the app is closed"


def test_bad_values_are_refused_and_nothing_changes(playgrounds):
    pg = playgrounds()
    config, settings = pg.session.config, pg.session.settings
    pg.step(2)
    with pytest.raises(TraitError, match="depth"):
        pg.depth = 0
    with pytest.raises(TraitError, match=r"activation must be one of \["):
        pg.activation = "softmax"
    with pytest.raises(TraitError, match="dataset"):
        pg.dataset = "adding"  # a sequence task for an MLP
    with pytest.raises(TraitError, match="lr"):
        pg.lr = -1.0
    with pytest.raises(TraitError):
        pg.depth = "deep"
    assert pg.session.config == config and pg.session.settings == settings
    assert pg.session.steps == 2, "a refused change does not rebuild the model"
    assert (pg.depth, pg.activation, pg.dataset, pg.lr) == (config.depth, config.activation, "spiral", settings.lr)


def test_a_refusal_from_the_ui_reverts_the_input_and_says_why(playgrounds):
    pg = playgrounds(kind="transformer", depth=1, width=16, heads=4, seq_len=6)
    pg.controls.inputs["width"].value = 2  # not a multiple of heads
    assert pg.session.config.width == 16 and pg.width == 16
    assert pg.controls.inputs["width"].value == 16
    assert "width" in pg.controls.message.value


def test_errors_in_the_training_thread_show_in_the_widget(playgrounds, monkeypatch):
    pg = playgrounds()
    step = pg.session.step

    def broken(n=1):
        raise RuntimeError("simulated failure in the training step")

    monkeypatch.setattr(pg.session, "step", broken)
    pg.play()
    assert wait_until(lambda: pg.banner.kind == "error")
    assert "simulated failure" in pg.banner.value and "RuntimeError" in pg.banner.value
    assert not pg.playing and isinstance(pg.error, RuntimeError)
    monkeypatch.setattr(pg.session, "step", step)
    pg.play()
    assert wait_until(lambda: pg.session.steps > 5 and pg.banner.kind != "error")


def test_divergence_pauses_the_playground_and_reset_recovers(playgrounds):
    pg = playgrounds(activation="relu", lr=50.0)
    pg.play()
    assert wait_until(lambda: not pg.playing)
    assert pg.session.diverged
    assert wait_until(lambda: pg.banner.kind == "nonfinite" and "Paused automatically" in pg.banner.value)
    pg.reset()
    assert pg.session.steps == 0 and not pg.session.diverged
    pg.lr = 0.1
    pg.step(3)
    assert wait_until(lambda: pg.banner.kind not in ("nonfinite", "waiting"))


def test_history_scrubber_replays_a_paused_run(playgrounds):
    pg = playgrounds()
    pg.step(6)
    assert wait_until(lambda: not pg.scrubber.disabled and pg.scrubber.max == 6)
    assert pg.scrubber.min == 1
    pg.scrubber.value = 2
    assert wait_until(lambda: "Replaying step 2" in pg.banner.value)
    expected = pg.session.history.at(1)["grad_norm"]
    assert wait_until(lambda: np.allclose(pg.bars.bars.y, expected.astype(np.float32), rtol=1e-6))
    pg.play()
    assert wait_until(lambda: pg.scrubber.disabled and "Replaying" not in pg.banner.value)


def test_speed_trait_limits_the_runner(playgrounds):
    pg = playgrounds()
    pg.speed = 10.0
    assert pg.runner.max_steps_per_second == 10.0
    pg.speed = None
    assert pg.runner.max_steps_per_second is None


def test_recurrent_configs_get_time_bars(playgrounds):
    pg = playgrounds(kind="rnn", depth=1, width=16, seq_len=12)
    assert pg.time_bars is not None
    assert pg.controls._choices["activation"] == ("tanh", "relu")
    pg.step()
    assert wait_until(lambda: len(pg.time_bars.bars.y) == 12)


def test_transformer_configs_train(playgrounds):
    pg = playgrounds(kind="transformer", depth=2, width=16, seq_len=6)
    pg.step(2)
    assert wait_until(lambda: pg.banner.kind not in ("waiting", "error"))
    assert pg.time_bars is None


def test_constructor_validates_fields(recorder):
    with pytest.raises(ValueError, match="depth"):
        gw.Playground(depth=0)
    with pytest.raises(ValueError, match="unknown"):
        gw.Playground(colour="red")
    with pytest.raises(ValueError, match="fps"):
        gw.Playground(fps=120, **SMALL)
    assert not [t for t in threading.enumerate() if t.name.startswith("gradwidgets-playground")]


def test_every_single_step_reaches_the_loss_curve_and_heatmap(playgrounds):
    """Paused frames carry the slow views: quick single steps (faster than their cadence while playing) each
    show up in the loss curve and the heatmap, because no later frame would bring them."""
    pg = playgrounds()
    for steps in (1, 2, 3, 4):
        pg.step()
        assert wait_until(lambda steps=steps: len(pg.loss.lines[0].x) == steps), (steps, pg.loss.lines[0].x)
        if steps >= 2:  # the heatmap needs two columns (bqplot refuses a 1-column grid)
            assert wait_until(lambda steps=steps: len(pg.heatmap.heat.column) == steps), pg.heatmap.heat.column


def test_the_quantity_toggle_redraws_on_the_render_thread_not_the_kernel_thread(playgrounds, recorder):
    pg = playgrounds()
    pg.step(2)
    assert wait_until(lambda: drawn(pg) >= 1)
    time.sleep(0.3)  # the frames of the steps are drawn
    start = time.monotonic()
    pg.bars.toggle.value = "update_ratio"  # a click arrives on the kernel thread (this one)
    label = gw.widgets.bars.QUANTITIES["update_ratio"]
    assert wait_until(lambda: pg.bars.chart.axis_y.label == label and recorder.updates(pg.bars.bars, since=start))
    time.sleep(0.2)
    writers = {m.thread for w in (pg.bars.bars, pg.bars.chart.axis_y) for m in recorder.updates(w, since=start)}
    assert writers == {"gradwidgets-playground-renderer"}
    ratio = pg.session.last_stats.update_ratio
    np.testing.assert_allclose(np.asarray(pg.bars.bars.y)[ratio > 0], ratio[ratio > 0], rtol=1e-6)


# ---------------------------------------------------------------- the Explain tab's presenter script, step by step


def presenter_playground(query: str) -> gw.Playground:
    """The Playground exactly as the dashboard opens it from a link (``Dashboard`` builds it the same way)."""
    from gradwidgets.dashboard.page import opening_settings
    from gradwidgets.dashboard.presets import parse_query

    preset = parse_query(query)
    assert preset.ok, preset.problems
    return gw.Playground(**opening_settings(preset))


def shown(pg: gw.Playground, steps: int, timeout: float = 180.0) -> tuple[str, float]:
    """Wait until the page shows step ``steps``; the banner's verdict and its marked ratio at that moment."""
    import re

    assert wait_until(lambda: pg.session.steps == steps, timeout=timeout), pg.session.steps
    assert wait_until(lambda: f"step {steps}" in pg.controls.transport.status.value, timeout=timeout)
    found = re.search(r"<b class='gw-ratio'>([^<]+)</b>", pg.banner.value)
    return pg.banner.kind, float(found.group(1)) if found else float("nan")


def recent_loss(pg: gw.Playground, n: int = 20) -> float:
    return float(np.mean(pg.session.history.loss[-n:]))


def test_script_step_1_and_2_sigmoid_then_relu_then_kaiming(recorder):
    from gradwidgets.dashboard.page import EXPLANATION

    assert "vanishing, ratio about\n5×10<sup>-17</sup>" in EXPLANATION
    pg = presenter_playground("activation=sigmoid&depth=20")
    try:
        assert wait_until(lambda: pg.banner.kind == "vanishing" and "gw-ratio" in pg.banner.value)
        kind, ratio = shown(pg, 0)
        assert kind == "vanishing" and 1e-17 < ratio < 1e-16, ratio  # "about 5×10^-17, at initialization"
        pg.step(30)
        kind, ratio = shown(pg, 30)
        assert kind == "vanishing" and ratio < 1e-15 and 0.66 < recent_loss(pg) < 0.72  # "stays there", ln 2
        assert wait_until(lambda: pg.boundary.step == 30)
        shade = np.asarray(pg.boundary.grid.color)
        assert shade.max() - shade.min() < 0.02, "the decision boundary stays one flat shade"
        pg.activation = "relu"
        pg.step(10)
        kind, ratio = shown(pg, 10)
        assert kind == "vanishing" and 1e-8 < ratio < 1e-6, ratio  # "still vanishing, about 10^-7"
        pg.init = "kaiming"
        pg.step(100)
        kind, ratio = shown(pg, 100)
        assert kind == "healthy" and 0.1 < ratio < 10, ratio  # "level, ratio near 1"
        assert recent_loss(pg) < 0.66, "the loss starts to fall"
    finally:
        pg.close()


def test_script_step_3_batch_norm_then_relu_60_then_skip(recorder):
    from gradwidgets.core.boundary import evaluate_boundary
    from gradwidgets.dashboard.page import EXPLANATION

    for promise in ("between about 0.4 and 2", "exploding</i>, ratio about 4×10<sup>5</sup>", "about 200, healthy"):
        assert promise in EXPLANATION.replace("\n", " ")
    pg = presenter_playground("activation=sigmoid&depth=20&norm=batch")  # &play=1: trains at once
    try:
        kind, ratio = shown(pg, 0)
        assert kind == "healthy" and 8 < ratio < 10, ratio  # "it was 9 at initialization"
        for steps in (10, 30, 100):  # what the page shows by the time it has loaded and any time after
            pg.step(steps - pg.session.steps)
            kind, ratio = shown(pg, steps)
            assert kind == "healthy" and 0.3 < ratio < 2.5, (steps, ratio)
        pg.pause()
        pg.activation = "relu"
        pg.depth = 60
        assert wait_until(lambda: pg.session.config.depth == 60 and pg.banner.kind == "exploding")
        kind, ratio = shown(pg, 0)
        assert kind == "exploding" and 1e5 < ratio < 1e6, ratio
        pg.step()
        pg.step()
        kind, ratio = shown(pg, 2)
        assert kind == "healthy" and 50 < ratio < 1000, ratio  # "after one update ... about 200, healthy"
        pg.step(98)
        kind, ratio = shown(pg, 100)
        assert kind == "healthy" and 1 <= ratio <= 10, ratio  # "settles between 1 and 10"
        assert 0.66 < recent_loss(pg) < 0.75, "yet the loss stays at 0.69"
        pg.residual = True
        pg.step(100)
        kind, ratio = shown(pg, 100)
        assert kind == "healthy" and 10 <= ratio <= 50, ratio
        assert recent_loss(pg, 10) < 0.1, "the loss falls below 0.1 within about 100 steps"
        assert wait_until(lambda: pg.boundary.step == 100)
        grid = evaluate_boundary(pg.session.model, pg.session.data, step=100)
        assert np.allclose(np.asarray(pg.boundary.grid.color), grid.probability, atol=1e-6), "the page shows it"
        x, y = pg.session.data.x_train.numpy(), pg.session.data.y_train.numpy()
        assert (grid.predicted_at(x[:, 0], x[:, 1]) == y).mean() > 0.9, "the boundary carves the spiral"
    finally:
        pg.close()


def test_script_step_4_lstm_forget_bias_from_the_slider(recorder):
    from gradwidgets.dashboard.page import EXPLANATION

    assert "<code>forget bias</code> slider to 3" in EXPLANATION
    pg = presenter_playground("kind=rnn&cell=lstm&activation=tanh&forget_bias=0&seq_len=50")
    try:
        slider = pg.controls.inputs["forget_bias"]
        assert slider.layout.display != "none" and not slider.disabled
        pg.step(10)
        kind, ratio = shown(pg, 10)
        assert kind == "vanishing" and ratio < 1e-8, ratio  # "about 10^-10" through time
        slider.value = 3.0  # as the browser would
        assert pg.session.config.forget_bias == 3.0 and pg.session.steps == 0, "the run restarts"
        pg.step(30)
        kind, ratio = shown(pg, 30)
        assert kind == "healthy" and 1e-3 < ratio < 1e-2, ratio  # "about 2×10^-3, healthy"
    finally:
        pg.close()


def test_the_controls_a_recurrent_net_needs_and_only_those(playgrounds):
    from gradwidgets.dashboard.presets import PRESET_FIELDS

    rnn = playgrounds(kind="rnn", cell="lstm", seq_len=12, depth=1)
    inputs = rnn.controls.inputs
    hidden = {name for name, box in inputs.items() if box.layout.display == "none"}
    assert hidden == {"residual"}, "no skip connections in a recurrent net"
    assert inputs["activation"].disabled, "an LSTM's gates set its nonlinearities"
    assert inputs["depth"].description == "layers", "stacked recurrent layers"
    for name in ("seq_len", "forget_bias"):  # the spans a shared link may ask for
        assert (inputs[name].min, inputs[name].max) == (PRESET_FIELDS[name].low, PRESET_FIELDS[name].high)
    rnn.seq_len = 16
    assert rnn.session.config.seq_len == 16 and rnn.session.data.x_train.shape[1] == 16
    rnn.cell = "gru"
    assert rnn.session.config.cell == "gru" and inputs["forget_bias"].disabled, "forget bias: LSTM only"
    rnn.cell = "rnn"
    assert not inputs["activation"].disabled
    with pytest.raises(TraitError, match="seq_len"):
        rnn.seq_len = 0
    rnn.forget_bias = 20.0  # valid from code (validation.LIMITS): the slider widens to show it
    assert rnn.session.config.forget_bias == 20.0 and inputs["forget_bias"].value == 20.0
    mlp = playgrounds()
    hidden = {name for name, box in mlp.controls.inputs.items() if box.layout.display == "none"}
    assert hidden == {"cell", "seq_len", "forget_bias"}


def test_theory_line_shows_the_product_that_predicts_not_max_slope(playgrounds):
    """Issue 22 (14): the readout's prediction is (mean slope x weight gain)^(depth-1) at the current weights, which
    lands near the measured ratio of a plain sigmoid net; max f'^(depth-1) is labelled as the slope alone."""
    from gradwidgets.core.theory import predict_ratio

    pg = playgrounds(activation="sigmoid", depth=10, width=64)
    assert wait_until(lambda: "Predicted, mean slope" in pg.activation_plot.theory.value)
    expected = predict_ratio(pg.session.model, pg.session.data.x_train[:256])
    text = pg.activation_plot.theory.value
    assert f"<b>{format_number(expected.ratio)}</b>" in text
    assert f"{expected.mean_slope:.3g} × {expected.weight_gain:.3g}" in text
    measured = gw.diagnose(pg.session.peek(), config=pg.session.config).ratio
    assert 0.2 < expected.ratio / measured < 5, (expected.ratio, measured)
    assert "Largest slope alone" in text and "not a bound" in text
    skip = playgrounds(activation="sigmoid", depth=10, residual=True)
    assert wait_until(lambda: "No prediction: skip connections" in skip.activation_plot.theory.value)
    assert "Predicted" not in skip.activation_plot.theory.value

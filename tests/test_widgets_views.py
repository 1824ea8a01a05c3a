"""The thin views, without a browser: what they send over a recording comm for given numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from traitlets import TraitError

import gradwidgets as gw
from gradwidgets.core.diagnosis import format_number
from gradwidgets.core.theory import activation_curve
from gradwidgets.testing import recording_comm
from gradwidgets.widgets import ActivationPlot, Controls, DiagnosisBanner, GradientBars, GradientHeatmap, LossCurve
from gradwidgets.widgets.bars import TimeBars, log_ticks
from gradwidgets.widgets.heatmap import MAX_COLUMNS
from gradwidgets.widgets.log_range import LogRange, clamp_to_range
from gradwidgets.widgets.loss_curve import MAX_POINTS, downsample
from gradwidgets.widgets.style import KIND_COLORS, kind_text


def _luminance(color: str) -> float:
    channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.fixture
def recorder():
    with recording_comm() as rec:
        yield rec


@pytest.fixture(scope="module")
def sigmoid_stats():
    session = gw.TrainingSession(activation="sigmoid", depth=12, width=16)
    session.step(2)
    return session.last_stats, gw.diagnose(session.last_stats, config=session.config)


def with_values(stats, **arrays):
    import dataclasses

    return dataclasses.replace(stats, **arrays)


# ---------------------------------------------------------------------- log range


def test_log_range_is_fixed_per_run_and_widens_only_when_values_leave_it():
    r = LogRange()
    assert r.fit(np.array([1e-5, 1e-2]))
    assert r.bounds == (1e-6, 1e-1)
    assert not r.fit(np.array([3e-6, 5e-2])), "values inside: no re-range, no message"
    assert r.fit(np.array([1e3]))
    assert r.bounds == (1e-6, 1e4)
    assert not r.fit(np.array([0.0, np.nan, np.inf, -1.0])), "bad values never move the range"
    r.reset()
    assert r.low is None


def test_clamp_puts_zero_nan_and_inf_on_the_floor_and_flags_them():
    drawn, bad = clamp_to_range(np.array([1e-3, 0.0, np.nan, np.inf, 1e-12]), 1e-6, 1.0)
    assert np.all(np.isfinite(drawn)) and np.all(drawn >= 1e-6)
    assert bad.tolist() == [False, True, True, True, True]


def test_log_ticks_are_powers_of_ten_and_few():
    ticks = log_ticks(1e-24, 1e0)
    assert len(ticks) <= 9
    assert np.allclose(np.log10(ticks), np.round(np.log10(ticks)))


# ---------------------------------------------------------------------- bars


def test_bars_have_positive_base_and_finite_heights_even_for_zero_and_nan(recorder, sigmoid_stats):
    stats, diagnosis = sigmoid_stats
    grad = stats.grad_norm.copy()
    grad[0], grad[1] = 0.0, np.nan
    view = GradientBars()
    view.show(with_values(stats, grad_norm=grad), diagnosis)
    chart = view.chart
    assert chart.bars.base > 0, "Bars on a LogScale need a positive base (base 0 draws NaN heights)"
    assert chart.bars.base == chart.scale_y.min
    assert np.all(np.isfinite(chart.bars.y)) and np.all(chart.bars.y >= chart.scale_y.min)
    assert list(chart.bad_labels.text) == ["0", "NaN"]
    assert list(chart.bad_labels.x) == [1, 2]
    assert 0 < chart.scale_y.min < chart.scale_y.max


def test_one_message_per_mark_per_frame_and_no_rescale_when_values_stay_inside(recorder, sigmoid_stats):
    stats, diagnosis = sigmoid_stats
    view = GradientBars()
    view.show(stats, diagnosis)
    recorder.clear()
    view.show(with_values(stats, grad_norm=stats.grad_norm * 1.01), diagnosis)
    assert len(recorder.updates(view.bars)) == 1
    assert recorder.updates(view.scale) == [], "a value inside the range must not re-range the axis"
    view.show(with_values(stats, grad_norm=stats.grad_norm * 1e6), diagnosis)
    assert len(recorder.updates(view.scale)) == 1


def test_bars_are_coloured_by_diagnosis(recorder, sigmoid_stats):
    stats, diagnosis = sigmoid_stats
    assert diagnosis.kind == "vanishing" and diagnosis.layers
    view = GradientBars()
    view.show(stats, diagnosis)
    colors = list(view.bars.colors)
    named = [i for i, n in enumerate(stats.names) if n in diagnosis.layers]
    assert all(colors[i] == KIND_COLORS["vanishing"] for i in named)
    assert any(c != KIND_COLORS["vanishing"] for c in colors), "only the layers concerned stand out"


def test_hover_tooltip_names_the_layer_with_exact_numbers(recorder, sigmoid_stats):
    stats, diagnosis = sigmoid_stats
    view = GradientBars()
    view.show(stats, diagnosis)
    view.bars._handle_custom_msgs(None, {"event": "hover", "point": {"x": 2, "y": 1.0, "index": 1}})
    text = view.hover_box.value
    assert stats.names[1] in text
    assert f"{stats.grad_norm[1]:.3e}" in text or f"{stats.grad_norm[1]:.4g}" in text
    assert "mean |g|" in text and "max |g|" in text


def test_toggle_switches_to_update_ratio(recorder, sigmoid_stats):
    stats, diagnosis = sigmoid_stats
    view = GradientBars()
    view.show(stats, diagnosis)
    view.toggle.value = "update_ratio"
    assert view.quantity == "update_ratio"
    assert "update ratio" in view.chart.axis_y.label
    expected, _ = clamp_to_range(stats.update_ratio, *view.chart.bounds)
    assert np.allclose(view.bars.y, expected.astype(np.float32))


def test_time_bars_draw_one_bar_per_time_step(recorder):
    view = TimeBars()
    view.show(np.array([1e-9, 1e-6, 1e-3, 0.1]), "vanishing", "h")
    assert len(view.bars.y) == 4 and view.bars.base > 0
    assert view.bars.colors[0] == KIND_COLORS["vanishing"]
    view.show(None)  # non-recurrent stats: nothing to draw, no error


# ---------------------------------------------------------------------- heatmap, loss, banner, activation


def test_heatmap_sends_a_bounded_window_in_log10(recorder):
    view = GradientHeatmap()
    steps = np.arange(1, 1001)
    values = np.tile(np.logspace(-8, 0, 6), (1000, 1))
    values[:, 0] = 0.0
    view.show(steps, values)
    color = np.asarray(view.heat.color)
    assert color.shape[0] == 6 and color.shape[1] <= MAX_COLUMNS
    assert np.all(np.isfinite(color)), "zeros are clamped to the floor, not -inf"
    assert view.scale_color.min <= -8 and view.scale_color.max >= 0


def test_loss_curve_downsamples_to_a_bounded_number_of_points(recorder):
    x, y = downsample(np.arange(10_000), np.linspace(1, 0, 10_000))
    assert len(x) <= MAX_POINTS + 1
    view = LossCurve()
    view.show([np.arange(5000)], [np.full(5000, 0.5)], np.arange(0, 5000, 10), np.full(500, 0.6))
    assert len(view.lines[0].x) <= MAX_POINTS + 1 and len(view.test.x) <= MAX_POINTS
    with pytest.raises(ValueError, match="labels"):
        LossCurve(labels=())


def test_banner_is_coloured_by_kind_and_says_what_to_try(recorder, sigmoid_stats):
    _, diagnosis = sigmoid_stats
    banner = DiagnosisBanner()
    ratio = format_number(diagnosis.ratio)
    banner.show(diagnosis, ratio_text=ratio)
    assert banner.kind == "vanishing"
    assert kind_text("vanishing") in banner.value and "Try:" in banner.value
    assert diagnosis.headline in banner.value
    assert f"<b class='gw-ratio'>{ratio}</b>" in banner.value, "the ratio is marked where the message prints it"
    assert "#" not in banner.value.split("<div", 2)[1], "no hard-coded colour: the theme's variables"


def test_theme_colours_of_verdict_text_pass_wcag_aa_on_their_backgrounds():
    from gradwidgets.widgets import style

    for text, background in ((style._KIND_TEXT_LIGHT, style._KIND_BACKGROUND_LIGHT),
                             (style._KIND_TEXT_DARK, style._KIND_BACKGROUND_DARK)):
        for kind, color in text.items():
            assert contrast(color, background[kind]) >= 4.5, (kind, color, background[kind])
            assert f"--gw-{kind}: {color}" in style.CSS


def test_activation_plot_shows_sigmoids_quarter_and_the_bound(recorder):
    curve = activation_curve("sigmoid")
    assert math.isclose(float(curve.df.max()), 0.25, rel_tol=1e-3)
    view = ActivationPlot()
    view.show_curve(curve.label, curve.x, curve.f, curve.df, curve.max_derivative)
    assert "max f′ = 0.25" in view.legend.value, "named in the legend under the plot, not written over the lines"
    view.show_ratio(0.25, 20, format_number(gw.theoretical_bound("sigmoid", 20)), format_number(3e-9))
    assert "0.25<sup>19</sup>" in view.theory.value and "3.6e-12" in view.theory.value
    assert "<b class='gw-ratio' style='color:var(--gw-healthy)'>3.0e-09</b>" in view.theory.value
    assert "Predicted" not in view.theory.value and "not a bound" in view.theory.value
    view.show_ratio(0.25, 10, "3.8e-06", "2.9e-08", predicted=(0.245, 0.577, "2.9e-08"))
    assert "(0.245 × 0.577)<sup>9</sup> = <b>2.9e-08</b>" in view.theory.value


# ---------------------------------------------------------------------- controls


CHOICES = {
    "activation": ("relu", "sigmoid"),
    "norm": ("none", "batch"),
    "init": ("default",),
    "optimizer": ("sgd", "adam"),
    "dataset": ("spiral", "moons"),
}


def make_controls(apply):
    values = gw.TrainingSession(depth=2).describe()
    return Controls(values=values, choices=CHOICES, apply=apply)


def test_controls_refuse_values_outside_the_choices_naming_the_field(recorder):
    applied = []
    controls = make_controls(applied.append)
    with pytest.raises(TraitError, match=r"activation must be one of \['relu', 'sigmoid'\]"):
        controls.activation = "swish"
    assert controls.activation == "relu" and applied == []
    controls.activation = "sigmoid"
    assert applied == [{"activation": "sigmoid"}]
    assert controls.inputs["activation"].value == "sigmoid"


def test_a_refusal_by_the_session_keeps_trait_and_input_as_they_were(recorder):
    def apply(changes):
        raise ValueError(f"depth must be an integer in [1, 200], got {changes['depth']!r}")

    controls = make_controls(apply)
    with pytest.raises(TraitError, match="depth"):
        controls.depth = 500
    assert controls.depth == 2
    controls.inputs["depth"].value = 7  # as if from the browser
    assert controls.depth == 2 and controls.inputs["depth"].value == 2
    assert "Refused" in controls.message.value and "depth" in controls.message.value


def test_speed_is_validated(recorder):
    controls = make_controls(lambda changes: None)
    controls.speed = 10.0
    assert controls.inputs["speed"].value == 10.0
    controls.inputs["speed"].value = math.inf
    assert controls.speed is None
    with pytest.raises(TraitError, match="speed"):
        controls.speed = -1.0


# ---------------------------------------------------------------------- first impression


def test_round_ticks_never_repeat_once_formatted():
    from gradwidgets.widgets.figures import nice_ticks

    for low, high in [(0, 10), (0, 2), (1, 3), (3096, 4104), (0, 1), (-0.05, 1), (-0.1, 2), (0, 5e6)]:
        integer = high - low >= 2 and float(low).is_integer()
        ticks = nice_ticks(low, high, integer=integer)
        shown = [f"{t:.0f}" if integer else f"{t:.3g}" for t in ticks]
        assert 2 <= len(ticks) <= 7, (low, high, ticks)
        assert len(set(shown)) == len(shown), (low, high, shown)
        assert ticks[0] >= low - 1e-9 and ticks[-1] <= high + 1e-9


def test_loss_curve_empty_state_has_no_axes_and_a_flat_loss_gets_round_ticks(recorder):
    curve = LossCurve()
    assert not curve.axis_x.visible and not curve.axis_y.visible and "none yet" in curve.figure.title
    steps = np.arange(1, 301)
    curve.show([steps], [np.full(300, 0.6931)])
    assert curve.axis_x.visible and curve.figure.title == "Loss"
    assert curve.scale_y.min < 0 < 0.6931 < curve.scale_y.max == 0.8, "0 to a round step, not 0.6931..0.6932"
    assert [f"{t:.3g}" for t in curve.axis_y.tick_values] == ["0", "0.2", "0.4", "0.6", "0.8"]
    assert curve.scale_x.min <= 1 and curve.scale_x.max >= 300
    assert "train" in curve.legend.value and "test" in curve.legend.value, "the legend sits under the plot"
    assert curve.key_row.layout.visibility == "visible"
    curve.set_note("restarted: depth changed")
    assert curve.figure.title == "Loss · restarted: depth changed"
    curve.clear()
    assert not curve.axis_y.visible and len(curve.lines[0].x) == 0
    assert curve.legend.value == "" and curve.key_row.layout.visibility == "hidden", "no key over an empty chart"


def test_loss_axis_follows_a_drop_instead_of_only_growing(recorder):
    """A GPT-like run starts at 23; once the window holds only 1.5 -> 0.6, the axis ends near 1.5, not at 50."""
    curve = LossCurve(show_test=False)
    assert curve.legend.value == "" and curve.key_row.layout.visibility == "hidden"
    early = np.linspace(23.0, 2.0, 100)
    curve.show([np.arange(1, 101)], [early])
    assert curve.scale_y.max == 26.0 and curve.y_range == (curve.scale_y.min, 26.0), "23 plus headroom"
    late = np.linspace(1.5, 0.6, 400)
    curve.show([np.arange(101, 501)], [late])
    low, high = curve.scale_y.min, curve.scale_y.max
    assert 1.5 <= high <= 2.0, f"the axis follows the data down (top {high})"
    assert -0.1 <= low < 0, "zero stays on the linear axis (a flat loss reads flat)"
    drop_share = (1.5 - 0.6) / (high - low)
    assert drop_share > 0.4, f"the drop fills {drop_share:.0%} of the plot"
    assert len(curve.axis_y.tick_values) >= 3
    # noise inside the range moves nothing (no scale message for every frame)
    curve.show([np.arange(101, 501)], [late * 1.05])
    assert (curve.scale_y.min, curve.scale_y.max) == (low, high)
    # the loss rises again: the axis grows with it
    curve.show([np.arange(101, 601)], [np.concatenate([late, np.full(100, 4.2)])])
    assert curve.scale_y.max >= 4.2


def test_loss_axis_log_toggle_spans_the_decades_of_the_data(recorder):
    from gradwidgets.widgets.loss_curve import linear_loss_range, log_loss_range

    assert linear_loss_range(0.6, 1.5) == pytest.approx((-0.08, 1.6))
    assert log_loss_range(0.6, 23.0) == (0.1, 100.0) and log_loss_range(0.5, 0.6) == (0.1, 1.0)
    curve = LossCurve()
    steps = np.arange(1, 151)  # no more points than are drawn: none averaged away
    loss = np.geomspace(23.0, 0.6, 150)
    loss[-1] = 0.0  # a zero cannot sit on a log axis: it is left undrawn there, drawn on the linear one
    curve.show([steps], [loss])
    assert curve.axis_y.scale is curve.scale_y and curve.lines[0].scales["y"] is curve.scale_y
    curve.log_toggle.value = True  # the box under the plot
    assert curve.log and curve.axis_y.scale is curve.scale_y_log and curve.lines[0].scales["y"] is curve.scale_y_log
    assert (curve.scale_y_log.min, curve.scale_y_log.max) == (0.1, 100.0)
    assert [f"{t:g}" for t in curve.axis_y.tick_values] == ["0.1", "1", "10", "100"]
    drawn = np.asarray(curve.lines[0].y)
    assert np.isnan(drawn[-1]) and np.all(drawn[:-1] > 0)
    curve.show([steps[-100:]], [np.linspace(0.9, 0.5, 100)])  # two decades emptied: the log axis narrows
    assert (curve.scale_y_log.min, curve.scale_y_log.max) == (0.1, 1.0)
    assert [f"{t:g}" for t in curve.axis_y.tick_values] == ["0.1", "0.2", "0.5", "1"]
    curve.log = False
    assert curve.axis_y.scale is curve.scale_y and curve.scale_y.max == 1.0
    assert np.all(np.isfinite(np.asarray(curve.lines[0].y)))
    with pytest.raises(ValueError, match="log must be True or False"):
        curve.log = "yes"
    assert LossCurve(log=True).axis_y.scale is not None


def test_heatmap_shows_axes_only_with_a_grid(recorder, sigmoid_stats):
    stats, _ = sigmoid_stats
    view = GradientHeatmap()
    assert not view.axis_row.visible and not view.axis_color.visible
    view.show(np.arange(1, 11), np.tile(stats.grad_norm, (10, 1)))
    assert view.axis_row.visible and view.axis_column.visible and view.heat.visible
    shown = [f"{t:.0f}" for t in view.axis_column.tick_values]
    assert len(set(shown)) == len(shown)
    view.clear()
    assert not view.axis_row.visible and not view.heat.visible


def test_bar_key_counts_layers_by_role(recorder, sigmoid_stats):
    from gradwidgets.widgets.bars import bar_count_text

    stats, diagnosis = sigmoid_stats
    assert bar_count_text(stats.roles) == "14 bars = input + 12 hidden + head"
    assert bar_count_text(("embedding", "hidden", "norm", "hidden", "norm", "head")) == (
        "6 bars = input + 2 hidden + 2 norm + head"
    )
    view = GradientBars()
    view.show(stats, diagnosis, ratio_text="5.3e-10")
    assert "14 bars = input + 12 hidden + head" in view.key.value
    for word in ("input", "hidden", "head", "vanishing", "exploding"):
        assert word in view.key.value
    view._hovered = 3
    view._write_tooltip()
    assert "first/last layer" in view.hover_box.value and "5.3e-10" in view.hover_box.value


def test_dashboard_opens_on_the_classic_case_and_accepts_tab_explain():
    from gradwidgets.dashboard.page import opening_settings
    from gradwidgets.dashboard.presets import parse_query

    assert opening_settings(parse_query("")) == {"activation": "sigmoid", "depth": 12}
    assert opening_settings(parse_query("activation=relu")) == {"activation": "relu", "depth": 12}
    assert opening_settings(parse_query("kind=rnn&cell=lstm")) == {"kind": "rnn", "cell": "lstm"}
    preset = parse_query("tab=explain")
    assert preset.ok and preset.dashboard == {"tab": "explain"}


def test_loss_curve_without_test_line_leaves_nothing_open_when_its_tree_closes():
    from gradwidgets.apps.lifecycle import close_tree, walk_widgets

    with recording_comm():
        view = LossCurve(show_test=False)
        made = list(walk_widgets(view))
        assert view.test is None and len(view.figure.marks) == 1
        view.show([np.arange(5)], [np.ones(5)], np.arange(5), np.ones(5))  # a test series is ignored, not drawn
        close_tree(view)
        assert all(widget.comm is None for widget in made)


def test_a_shared_log_axis_ranges_every_chart_on_it_together():
    from gradwidgets.widgets.shared_axis import SharedLogAxis

    axis = SharedLogAxis()
    charts = [GradientBars(scale=axis.scale, show_toggle=False) for _ in range(2)]
    assert all(chart.scale is axis.scale for chart in charts)
    assert axis.fit(charts, [np.array([1e-6, 1e-3]), np.array([2.0])])
    assert axis.bounds == (1e-7, 1e2) and (axis.scale.min, axis.scale.max) == (1e-7, 1e2)
    for chart in charts:
        np.testing.assert_array_equal(chart.chart.axis_y.tick_values, log_ticks(1e-7, 1e2))
    assert not axis.fit(charts, [np.array([1e-5, 3.0])]), "values inside the range keep it"
    assert not axis.fit(charts, []) and not axis.fit(charts, [np.array([0.0, np.nan])])
    axis.reset()
    assert axis.fit(charts, [np.array([1e3])]) and axis.bounds == (1e2, 1e4)

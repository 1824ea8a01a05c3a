"""Blocks first in the views (issue 23): bars, heatmap, monitor and RunViewer start with one bar per block, named on
the axis, with a toggle that expands them; log axes follow the data; the colour bar ticks evenly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _models import TinyGPT
from torch import nn

import gradwidgets as gw
from gradwidgets.core.blocks import group_columns, group_stats
from gradwidgets.core.diagnosis import Diagnosis
from gradwidgets.testing import recording_comm, wait_until
from gradwidgets.widgets import GradientBars, GradientHeatmap
from gradwidgets.widgets.heatmap import color_ticks
from gradwidgets.widgets.log_range import SHRINK_AFTER, LogRange
from gradwidgets.widgets.style import KIND_COLORS

BLOCK_NAMES = ["embeddings", *(f"h.{i}" for i in range(12)), "final norm"]


@pytest.fixture
def recorder():
    with recording_comm() as rec:
        yield rec


def gpt_step(model: nn.Module, optimizer: torch.optim.Optimizer, vocab: int = 32) -> torch.Tensor:
    ids = torch.randint(0, vocab, (2, 8))
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(ids).reshape(-1, vocab), ids.reshape(-1))
    loss.backward()
    return loss


@pytest.fixture(scope="module")
def gpt_stats() -> gw.GradientStats:
    torch.manual_seed(0)
    model = TinyGPT(vocab=32, width=16, heads=2, context=8, depth=12)
    probe = gw.GradientProbe(model)
    gpt_step(model, torch.optim.SGD(model.parameters(), lr=0.1))
    stats = probe.read()
    probe.close()
    return stats


# ------------------------------------------------------------------------------------------------------ bars


def test_bars_start_with_one_named_bar_per_block_and_expand(recorder, gpt_stats) -> None:
    bars = GradientBars(grouper=group_stats)
    bars.show(gpt_stats)
    assert list(bars.bars.x) == BLOCK_NAMES
    assert bars.chart.axis_x.num_ticks == len(BLOCK_NAMES)  # every name shows, none skipped
    assert bars.chart.axis_x.label.startswith("block")
    assert bars.detail_toggle.layout.display == ""
    np.testing.assert_allclose(bars.bars.y[1:13], group_stats(gpt_stats).grad_norm[1:13].astype(np.float32))
    assert "14 bars = embeddings + 12 blocks + final norm (75 layers)" in bars.key.value
    bars.detail = "kinds"  # 12 x (norm, attention, mlp) + 2: too many names: numbered
    assert len(bars.bars.x) == 38 and list(bars.bars.x[:3]) == [1, 2, 3]
    assert bars.chart.axis_x.label.startswith("layer")
    bars.detail_toggle.value = "rows"
    assert len(bars.bars.x) == len(gpt_stats) == 75
    np.testing.assert_array_equal(bars.bars.y, np.clip(gpt_stats.grad_norm, *bars.chart.bounds).astype(np.float32))
    assert bars.detail_toggle.layout.display == "", "the toggle stays to come back to blocks"


def test_a_verdict_on_a_layer_colours_its_block(recorder, gpt_stats) -> None:
    bars = GradientBars(grouper=group_stats)
    verdict = Diagnosis("exploding", "h.7's MLP explodes", "", 1.0, layers=("h.7.mlp.0",))
    bars.show(gpt_stats, verdict)
    colors = list(bars.bars.colors)
    assert colors[BLOCK_NAMES.index("h.7")] == KIND_COLORS["exploding"]
    assert colors.count(KIND_COLORS["exploding"]) == 1


def test_without_a_grouper_or_blocks_the_bars_stay_numbered_rows(recorder, gpt_stats) -> None:
    plain = GradientBars()
    plain.show(gpt_stats)
    assert len(plain.bars.x) == 75 and plain.detail_toggle.layout.display == "none"
    session = gw.TrainingSession(depth=4, width=8)
    session.step(1)
    mlp = GradientBars(grouper=group_stats)
    mlp.show(session.last_stats)
    assert mlp.detail_toggle.layout.display == "none" and len(mlp.bars.x) == len(session.last_stats)


def test_log_axis_follows_the_data_back_after_an_outlier() -> None:
    r = LogRange()
    r.fit(np.array([0.1, 3e4]))  # one early outlier
    assert r.bounds == (1e-2, 1e6)  # the axis
    for _ in range(SHRINK_AFTER - 1):
        assert not r.fit(np.array([0.08, 0.2]))
    assert r.fit(np.array([0.09, 0.3]))
    assert r.bounds == (1e-3, 1e1)  # a decade of margin around the data, not six empty ones
    for _ in range(3 * SHRINK_AFTER):
        assert not r.fit(np.zeros(4)), "an all-zero frame never moves the axis"
    assert np.all(np.isfinite(r.bounds)) and r.bounds == (1e-3, 1e1)
    assert r.fit(np.array([50.0])) and r.bounds == (1e-3, 1e3), "a value above widens at once"


# ---------------------------------------------------------------------------------------------------- heatmap


def test_heatmap_rows_carry_block_names_and_its_colour_bar_even_ticks(recorder, gpt_stats) -> None:
    view = GradientHeatmap()
    assert not view.axis_row.visible and not view.axis_color.visible and len(view.row_names.text) == 0
    grouped = group_stats(gpt_stats)
    history = np.tile(gpt_stats.grad_norm, (10, 1)) * np.linspace(1, 2, 10)[:, None]
    view.show(np.arange(1, 11), group_columns(history, grouped), grouped.names)
    assert list(view.row_names.text) == BLOCK_NAMES
    assert len(view.axis_row.tick_values) == 0 and not view.axis_row.visible, "names replace the row numbers"
    assert view.figure.layout.height == f"{14 * 18 + 140}px", "each name gets a line of its own"
    assert np.asarray(view.heat.color).shape[0] == 14 and np.all(np.isfinite(view.heat.color))
    low, high, count = view.scale_color.min, view.scale_color.max, view.axis_color.num_ticks
    step = (high - low) / (count - 1)
    assert float(step).is_integer() and step >= 1, (low, high, count)
    view.show(np.arange(1, 11), history)  # every row: too many names, numbers instead
    assert len(view.row_names.text) == 0 and len(view.axis_row.tick_values) > 0 and view.axis_row.visible
    assert view.figure.layout.height == "320px"
    view.clear()
    assert not view.axis_row.visible and len(view.row_names.text) == 0


def test_an_all_zero_window_draws_finite_colours(recorder) -> None:
    view = GradientHeatmap()
    view.show(np.arange(1, 6), np.zeros((5, 3)))
    assert view.heat.visible is False or np.all(np.isfinite(view.heat.color))
    assert np.isfinite(view.scale_color.min) and np.isfinite(view.scale_color.max)


@pytest.mark.parametrize(("low", "high"), [(-4, 1), (-3, 1), (-7, -1), (-2, -1), (-10, 1), (-30, 0)])
def test_color_ticks_are_whole_decades_at_an_even_step(low: int, high: int) -> None:
    lo, hi, count = color_ticks(low, high)
    assert lo <= low and hi == high and 2 <= count <= 5
    assert (hi - lo) % (count - 1) == 0


def test_group_columns_pools_each_steps_rows(gpt_stats) -> None:
    grouped = group_stats(gpt_stats)
    history = np.stack([gpt_stats.grad_norm, 2 * gpt_stats.grad_norm])
    pooled = group_columns(history, grouped)
    np.testing.assert_allclose(pooled[0], grouped.grad_norm, rtol=1e-12)
    np.testing.assert_allclose(pooled[1], 2 * grouped.grad_norm, rtol=1e-12)
    assert group_columns(history, gpt_stats) is not None and group_columns(history, gpt_stats).shape == (2, 75)


# ------------------------------------------------------------------------------------------------------- apps


def test_monitor_shows_blocks_of_a_gpt(recorder) -> None:
    torch.manual_seed(0)
    model = TinyGPT(vocab=32, width=16, heads=2, context=8, depth=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = gw.GradientMonitor(model, fps=30, budget=1.0)
    try:
        loss = gpt_step(model, optimizer)
        monitor.update(loss, force=True)
        assert monitor.flush()
        assert list(monitor.bars.bars.x) == ["embeddings", "h.0", "h.1", "h.2", "final norm"]
        monitor.bars.detail = "rows"
        assert wait_until(lambda: len(monitor.bars.bars.x) == len(monitor.stats))
    finally:
        monitor.close()


def test_run_viewer_groups_bars_and_heatmap_by_block(recorder, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyGPT(vocab=32, width=16, heads=2, context=8, depth=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "gpt.gwrun"
    with gw.GradientLogger(model, path, every=1) as logger:
        for _ in range(4):
            logger.log(gpt_step(model, optimizer))
            optimizer.step()
    viewer = gw.RunViewer(path, interval=0.05, follow=False)
    try:
        column = viewer.columns[0]
        names = ["embeddings", "h.0", "h.1", "h.2", "final norm"]
        assert wait_until(lambda: list(column.bars.bars.x) == names), column.bars.bars.x
        assert wait_until(lambda: list(column.heatmap.row_names.text) == names)
        run = gw.load_run(path)
        np.testing.assert_allclose(column.bars.shown.grad_norm, group_stats(run.stats(-1)).grad_norm, rtol=1e-12)
        column.bars.detail = "kinds"
        assert wait_until(lambda: "h.0 attention" in list(column.heatmap.row_names.text))
        assert list(column.bars.bars.x)[:4] == ["embeddings", "h.0 norm", "h.0 attention", "h.0 mlp"]
    finally:
        viewer.close()

"""Saving from the apps: history as a run file and CSV, bars as PNG; and the RunViewer following a file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradwidgets as gw
from gradwidgets.testing import recording_comm, wait_until

SMALL = {"depth": 4, "width": 8, "n_samples": 128, "batch_size": 32, "fps": 30.0}


@pytest.fixture
def recorder():
    with recording_comm() as rec:
        yield rec


def test_playground_saves_its_history_as_a_run_and_csv(recorder, tmp_path: Path) -> None:
    pg = gw.Playground(activation="sigmoid", **SMALL)
    try:
        with pytest.raises(ValueError, match="nothing to save yet"):
            pg.save_run(tmp_path / "empty.gwrun")
        pg.step(7)
        assert wait_until(lambda: pg.session.steps == 7)
        pg.save_run(tmp_path / "pg.gwrun")
        pg.save_csv(tmp_path / "pg.csv")
        history, latest = pg.session.history, pg.session.last_stats
        run = gw.load_run(tmp_path / "pg.gwrun")
        assert run.names == latest.names and run.steps.tolist() == history.steps.tolist() == list(range(1, 8))
        np.testing.assert_array_equal(run.grad_norm, history.grad_norm)
        np.testing.assert_array_equal(run.loss, history.loss)
        assert run.verdicts[-1]["kind"] == gw.diagnose(latest, config=pg.session.config).kind
        assert run.meta["config"]["activation"] == "sigmoid"
        with open(tmp_path / "pg.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 7 * len(latest.names)
        last = rows[-1]
        assert last["step"] == "7" and last["layer"] == latest.names[-1]
        assert float(last["grad_norm"]) == pytest.approx(history.grad_norm[-1, -1], rel=1e-12)
    finally:
        pg.close()


def test_png_is_asked_of_the_browser_and_written_when_it_arrives(recorder, tmp_path: Path) -> None:
    pg = gw.Playground(**SMALL)
    try:
        target = pg.save_png(tmp_path / "bars.png")
        figure = pg.bars.figure
        asked = [m for m in recorder.snapshot() if m.comm_id == figure.model_id
                 and m.data.get("method") == "custom" and m.data.get("content", {}).get("type") == "upload_png"]
        assert len(asked) == 1, "the figure should ask the front end for its PNG, once"
        assert not target.exists()
        png = b"\x89PNG\r\n\x1a\nfake-image-bytes"
        figure._handle_custom_msgs(None, {"event": "upload_png"}, [memoryview(png)])  # the front end answers
        assert target.read_bytes() == png
        with pytest.raises(FileNotFoundError):
            pg.save_png(tmp_path / "missing" / "bars.png")
    finally:
        pg.close()


def test_compare_saves_one_run_per_config_that_watch_shows_side_by_side(recorder, tmp_path: Path) -> None:
    cmp = gw.Compare([{"activation": "sigmoid", "depth": 4, "width": 8}, {"activation": "relu", "depth": 4,
                      "width": 8}], n_samples=128, batch_size=32)
    try:
        cmp.step(3)
        assert wait_until(lambda: all(s.steps == 3 for s in cmp.sessions))
        paths = cmp.save_run(tmp_path / "runs")
        assert [p.name for p in paths] == ["sigmoid.gwrun", "relu.gwrun"]
        for path, session in zip(paths, cmp.sessions, strict=True):
            np.testing.assert_array_equal(gw.load_run(path).grad_norm, session.history.grad_norm)
        cmp.save_csv(tmp_path / "cmp.csv")
        with open(tmp_path / "cmp.csv") as handle:
            runs = {row["run"] for row in csv.DictReader(handle)}
        assert runs == {"sigmoid", "relu"}
        viewer = gw.RunViewer(tmp_path / "runs")
        try:
            assert wait_until(lambda: viewer.shown_steps == [3, 3])
            assert len(viewer.columns) == 2
        finally:
            viewer.close()
    finally:
        cmp.close()


def test_monitor_saves_its_latest_reading_and_losses(recorder, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))
    monitor = gw.GradientMonitor(model)
    try:
        for _ in range(5):
            model.zero_grad()
            loss = model(torch.randn(4, 3)).pow(2).mean()
            loss.backward()
            monitor.update(loss, force=True)
        run = gw.load_run(monitor.save_run(tmp_path / "m.gwrun"))
        np.testing.assert_array_equal(run.grad_norm[-1], monitor.stats.grad_norm)
        assert run.loss_steps.tolist() == [1, 2, 3, 4, 5]
        monitor.save_csv(tmp_path / "m.csv")
        with open(tmp_path / "m.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["layer"] for r in rows] == ["0", "2"]
    finally:
        monitor.close()


def test_run_viewer_follows_a_growing_file_and_replays(recorder, tmp_path: Path) -> None:
    path = tmp_path / "live.gwrun"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Linear(6, 1))
    logger = gw.GradientLogger(model, path, every=1)
    viewer = gw.RunViewer(path, interval=0.05)
    try:
        assert viewer.shown_steps == [None]  # nothing written yet: it waits
        for step in range(1, 6):
            model.zero_grad()
            (model(torch.randn(4, 3)) * step).pow(2).mean().backward()
            logger.log()
            assert wait_until(lambda s=step: viewer.shown_steps == [s]), viewer.shown_steps
        run = gw.load_run(path)
        np.testing.assert_array_equal(viewer.columns[0].bars._stats.grad_norm, run.grad_norm[-1])
        viewer.show_step(2)
        assert wait_until(lambda: viewer.shown_steps == [2])
        np.testing.assert_array_equal(viewer.columns[0].bars._stats.grad_norm, run.grad_norm[1])
        model.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        logger.log()  # step 6 arrives while replaying: the view stays on step 2
        assert wait_until(lambda: viewer.scrubber.max == 6)
        assert viewer.shown_steps == [2]
        viewer.follow_toggle.value = True
        assert wait_until(lambda: viewer.shown_steps == [6])
    finally:
        logger.close()
        viewer.close()
    assert not viewer._thread.is_alive()


def _browser_reads_in_any_order(recorder, slider) -> list[tuple[int, int, int]]:
    """Replay the slider's update messages as a browser does, applying each message's keys one at a time in every
    possible order; fail if the value is ever outside the range at some point (the browser's slider would clamp
    it and send the clamped number back as a user's drag). Returns (min, max, value) after each message."""
    from itertools import permutations

    state = {"min": 0, "max": 0, "value": 0}
    seen = []
    for message in recorder.updates(slider):
        changes = {k: v for k, v in message.data["state"].items() if k in state}
        for order in permutations(changes):
            trial = dict(state)
            for key in order:
                trial[key] = changes[key]
                assert trial["min"] <= trial["value"] <= trial["max"], (state, changes, order)
        state.update(changes)
        seen.append((state["min"], state["max"], state["value"]))
    return seen


def test_scrubber_moves_never_let_a_browser_clamp_its_value(recorder) -> None:
    from ipywidgets import IntSlider

    from gradwidgets.widgets.slider import move_slider

    slider = IntSlider(value=0, min=0, max=0)
    move_slider(slider, 1, 5, 5)  # following: the range grows with the value at its end
    move_slider(slider, 1, 9, 9)
    move_slider(slider, 1, 12)  # replaying: the value stays, the range grows
    move_slider(slider, 20, 30, 30)  # the file was replaced by a later run: a range above the old one
    move_slider(slider, 2, 4)  # and one below it: the value is kept inside
    move_slider(slider, 2, 4, 3)
    move_slider(slider, 2, 4, 3)  # nothing changed: nothing sent
    assert _browser_reads_in_any_order(recorder, slider)[-1] == (2, 4, 3)
    assert (slider.min, slider.max, slider.value) == (2, 4, 3)


def test_run_viewer_following_sends_scrubber_states_a_browser_cannot_misread(recorder, tmp_path: Path) -> None:
    """The watch page froze on an old step in about half of the kernels: the scrubber's value arrived before its
    new maximum, the browser clamped it and sent it back as a drag, and the viewer stopped following."""
    path = tmp_path / "live.gwrun"
    model = nn.Sequential(nn.Linear(3, 6), nn.Linear(6, 1))
    logger = gw.GradientLogger(model, path, every=1)
    viewer = gw.RunViewer(path, interval=0.02)
    try:
        for step in range(1, 9):
            model.zero_grad()
            model(torch.randn(4, 3)).pow(2).mean().backward()
            logger.log()
            assert wait_until(lambda s=step: viewer.shown_steps == [s]), viewer.shown_steps
        seen = _browser_reads_in_any_order(recorder, viewer.scrubber)
        assert seen[-1] == (1, 8, 8) and viewer.follow_toggle.value
    finally:
        logger.close()
        viewer.close()

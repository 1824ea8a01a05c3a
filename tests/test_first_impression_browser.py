"""The first screen a new user sees, measured in a real browser at projector size (1280x720), without pressing
anything: Voila light and dark (``gradwidgets dashboard --theme dark``), and a Playground in JupyterLab Dark.

What must hold at load: the bars are there (the at-initialization reading), the banner's ratio is the readout's,
no axis repeats a tick label, every text inside the widgets is at >= 4.5:1 contrast against what is behind it,
no two text boxes overlap, and controls, verdict and bars fit on the first screen. After training a little the
same holds with the loss and heatmap drawn. A structural change says so; a widget whose kernel is gone says so.

Screenshots: ``artifacts/screenshots/first-*.png`` for people to look at; the light and dark first screens while
training are copied to ``docs/`` (the README shows the light one).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _browser import Page
from _page_checks import axes, low_contrast, overlapping, repeated_ticks, texts
from _servers import (
    ARTIFACTS,
    NOTEBOOKS,
    ROOT,
    SCREENSHOTS,
    jupyter_app,
    kernel_processes,
    server_environment,
    serving,
    voila_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWPORT = {"width": 1280, "height": 720}
DOCS = ROOT / "docs"
DEFAULT_BARS = 12 + 2  # the dashboard opens on sigmoid, depth 12: input + 12 hidden + head
CLIPPED_JS = """(needle) => {
    const all = Array.from(document.querySelectorAll('.gw-app *')).filter(e => e.textContent.includes(needle));
    const el = all[all.length - 1];
    if (!el) return 'not found';
    const box = el.getBoundingClientRect();
    for (let up = el.parentElement; up; up = up.parentElement) {
        const style = getComputedStyle(up);
        if (style.overflowY !== 'visible' && box.bottom > up.getBoundingClientRect().bottom + 1) return 'clipped';
    }
    return box.bottom <= window.innerHeight ? 'shown' : 'below the fold';
}"""
RATIOS_JS = """() => Array.from(document.querySelectorAll('.gw-app .gw-ratio')).map(e => ({
    text: e.textContent.trim(), banner: !!e.closest('.gw-banner')}))"""


MEASURED: dict[str, dict] = {}
"""Per page and stage: texts measured and the lowest contrast found (written to artifacts/ for the issue note)."""


def teardown_module() -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "first-impression.json").write_text(json.dumps(MEASURED, indent=2))


@pytest.fixture(scope="module", params=["light", "dark"])
def voila(request: Any) -> Iterator[Any]:
    srv = voila_server(NOTEBOOKS / "dashboard.ipynb", log_name=f"voila-first-{request.param}.log", theme=request.param)
    srv.theme = request.param
    with serving(srv):
        yield srv


@contextlib.contextmanager
def opened(browser: Any, server: Any, query: str = "", bars: int | None = DEFAULT_BARS) -> Iterator[Any]:
    """The dashboard at projector size; with ``bars``, once that many bars are drawn (no button pressed)."""
    tab = Page(browser, server, query, viewport=VIEWPORT, wait_for_bars=bars is not None)
    try:
        if bars:
            tab.wait_for_bars(count=bars, timeout=30)
        yield tab
    finally:
        tab.close()


def only_in(server: Any, theme: str, why: str) -> None:
    """Behaviour (not colour) is checked in one theme only: the runs are slow."""
    if server.theme != theme:
        pytest.skip(why)


def look(tab: Any, name: str, where: str) -> list[dict]:
    """Screenshot first (to see a failure), then contrast, overlaps and ticks, then page errors."""
    shot(tab, name)
    found = assert_legible(tab.page, where)
    tab.assert_no_errors()
    return found


def kill_kernels(server: Any) -> None:
    """SIGKILL the kernels under ``server`` (a process this test started), as when a kernel crashes."""
    kernels = kernel_processes(server.process.pid)
    assert kernels, "no kernel process under the server"
    for kernel in kernels:
        os.kill(kernel.pid, signal.SIGKILL)


def shot(tab: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    tab.page.screenshot(path=str(path))
    return path


def assert_legible(page: Any, where: str) -> list[dict]:
    """Contrast, overlaps and repeated ticks of everything inside the widgets; returns the texts measured."""
    found = texts(page)
    lowest = min(found, key=lambda t: t["contrast"]) if found else None
    MEASURED[where] = {
        "texts": len(found),
        "lowest_contrast": round(lowest["contrast"], 2) if lowest else None,
        "lowest_text": lowest["text"][:40] if lowest else None,
    }
    assert len(found) > 30, f"{where}: too few texts measured ({len(found)}): is the app on the page?"
    dim = [(t["text"][:30], round(t["contrast"], 2), t["color"], t["background"]) for t in low_contrast(found)]
    assert not dim, f"{where}: text below 4.5:1 contrast: {dim[:8]}"
    clashes = overlapping(found)
    assert not clashes, f"{where}: overlapping texts: {clashes[:8]}"
    repeated = repeated_ticks(axes(page))
    assert not repeated, f"{where}: an axis repeats a tick label: {repeated}"
    return found


def assert_one_ratio(page: Any, where: str) -> str:
    """The banner and the theory readout print the same ratio (same frame, same formatter)."""
    marks = page.evaluate(RATIOS_JS)
    banner = [m["text"] for m in marks if m["banner"]]
    readout = [m["text"] for m in marks if not m["banner"]]
    assert banner and readout, f"{where}: ratio not marked in both banner and readout: {marks}"
    assert banner == readout[:1] * len(banner) and len(set(readout)) == 1, f"{where}: {banner} vs {readout}"
    return banner[0]


def figure(page: Any, title: str) -> Any:
    """The bqplot figure whose title starts with ``title``."""
    return page.locator(".bqplot.figure:visible", has=page.locator("text.mainheading", has_text=title)).first


def bottom(locator: Any) -> float:
    box = locator.bounding_box()
    assert box is not None
    return box["y"] + box["height"]


def wait_text(page: Any, selector: str, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = " | ".join(page.locator(selector).all_inner_texts())
        if text in seen:
            return seen
        page.wait_for_timeout(250)
    raise AssertionError(f"{text!r} never appeared in {selector}: {seen!r}")


def test_first_screen_at_load_and_after_training(voila: Any, browser: Any) -> None:
    theme = voila.theme
    with opened(browser, voila) as tab:
        # Without pressing anything: the at-initialization bars, the verdict, the same ratio twice.
        heights = tab.heights()
        assert "step 0" in tab.page.locator(".gw-status").inner_text()
        assert tab.control("dropdown", "activation").locator("select").input_value() == "sigmoid"
        assert "Vanishing gradients" in tab.page.locator(".gw-banner").inner_text()
        assert "14 bars = input + 12 hidden + head" in tab.text()
        assert heights[1] < heights[-2], "the vanishing staircase: the first hidden layer's bar is the shortest"
        ratio = assert_one_ratio(tab.page, f"{theme} at load")
        assert ratio.endswith(("e-09", "e-10", "e-11")), ratio
        # The first screen holds the controls, the verdict, the bars with their whole key (down to "exploding"),
        # the decision boundary and the loss (issue 22), even under the tallest verdict (at initialization).
        assert bottom(tab.bars_figure()) <= VIEWPORT["height"]
        assert bottom(tab.page.locator(".gw-banner")) <= VIEWPORT["height"]
        assert bottom(tab.control("text", "seed")) <= VIEWPORT["height"]
        bars_key = tab.page.locator(".gw-key", has_text="bars =")
        assert "exploding" in bars_key.inner_text() and bottom(bars_key) <= VIEWPORT["height"]
        boundary = figure(tab.page, "Decision boundary")
        boundary.locator("rect").first.wait_for(state="attached", timeout=30_000)
        loss = figure(tab.page, "Loss")
        assert bottom(boundary) <= VIEWPORT["height"] and bottom(loss) <= VIEWPORT["height"]
        assert not tab.page.locator(".gw-loss-key").is_visible(), "no train/test key over an empty loss chart"
        assert tab.page.evaluate("() => document.documentElement.scrollWidth") <= VIEWPORT["width"]
        shot(tab, f"first-{theme}-at-load")
        assert_legible(tab.page, f"{theme} at load")

        tab.button("Play").click()
        tab.wait_for_change(heights)
        tab.page.wait_for_timeout(3000)
        docs_shot = shot(tab, f"first-{theme}-training")
        # Playing: the short verdict leaves no reserved gap above the charts, the loss has its key, and the
        # disabled replay slider shows no number (it used to read 0 at step 1014).
        banner_box = tab.page.locator(".gw-banner").bounding_box()
        gap = loss.bounding_box()["y"] - (banner_box["y"] + banner_box["height"])
        assert 0 <= gap <= 12, f"{gap:.0f} px between the verdict and the charts"
        assert tab.page.locator(".gw-loss-key").is_visible() and bottom(loss) <= VIEWPORT["height"]
        replay = tab.page.locator(".widget-slider", has_text="replay step")
        assert not replay.locator(".widget-readout").is_visible(), "no step number on the disabled replay slider"
        tab.button("Pause").click()
        status = wait_text(tab.page, ".gw-status", "paused")
        tab.page.wait_for_timeout(1500)  # the paused frame: loss, heatmap and text drawn from it
        shown_step = replay.locator(".widget-readout").inner_text().strip()
        assert f"step {shown_step} " in status + " ", (shown_step, status)
        tab.page.set_viewport_size({"width": 1280, "height": 1240})
        tab.page.wait_for_timeout(800)
        shot(tab, f"first-{theme}-whole-page")
        assert tab.page.evaluate(CLIPPED_JS, "Measured first/last") == "shown"
        found = assert_legible(tab.page, f"{theme} after training")
        assert any(t["text"] == "step" for t in found), "the loss and heatmap axes are drawn once there are steps"
        assert_one_ratio(tab.page, f"{theme} after training")
        tab.assert_no_errors()
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(docs_shot, DOCS / ("dashboard.png" if theme == "light" else "dashboard-dark.png"))


def test_switching_the_activation_says_it_restarted(voila: Any, browser: Any) -> None:
    only_in(voila, "light", "behaviour, not colour: checked once")
    with opened(browser, voila) as tab:
        tab.button("Step").click()
        wait_text(tab.page, ".gw-status", "step 1")
        tab.control("dropdown", "activation").locator("select").select_option("tanh")
        status = wait_text(tab.page, ".gw-status", "restarted: activation changed")
        assert "step 0" in status
        tab.wait_for_bars(count=DEFAULT_BARS, timeout=30)  # the new net's at-init reading, at once
        tab.button("Step").click()
        tab.page.locator("text.mainheading", has_text="Loss · restarted").wait_for(timeout=30_000)
        tab.page.wait_for_timeout(1000)  # axis transitions (250 ms) settle
        look(tab, "first-restarted", "after a restart")


def test_recurrent_net_shows_time_steps_on_the_first_screen(voila: Any, browser: Any) -> None:
    only_in(voila, "dark", "layout: checked once (in the dark theme)")
    with opened(browser, voila, "kind=rnn&cell=lstm&activation=tanh&forget_bias=0&seq_len=30", bars=2) as tab:
        chart = tab.page.locator(".bqplot:visible", has=tab.page.locator("text", has_text="time step (first → last)"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and chart.locator(".bargroup rect").count() < 30:
            tab.page.wait_for_timeout(200)
        assert chart.locator(".bargroup rect").count() == 30, "one bar per time step, at load"
        assert bottom(chart) <= VIEWPORT["height"], "the per-time-step chart is on the first screen"
        look(tab, "first-rnn", "rnn at load")
        assert_one_ratio(tab.page, "rnn at load")


def test_explain_and_compare_links(voila: Any, browser: Any) -> None:
    only_in(voila, "light", "links: checked once")
    with opened(browser, voila, "tab=explain", bars=None) as tab:
        assert "could not be used" not in tab.text()
        assert tab.page.locator(".lm-TabBar-tab.lm-mod-current").inner_text().strip() == "Explain"
        tab.page.get_by_text("What the bars show").wait_for(timeout=10_000)
    with opened(browser, voila, "tab=compare", bars=None) as tab:
        tab.bars_figure(1).wait_for(timeout=60_000)
        for index in (0, 1):
            tab.wait_for_bars(index)  # both runs' at-init readings, no Play pressed
        assert "step 0" in tab.page.locator(".gw-status:visible").inner_text()
        look(tab, "first-compare", "compare at load")


def test_a_widget_whose_kernel_died_says_disconnected(voila: Any, browser: Any) -> None:
    only_in(voila, "light", "behaviour, not colour: checked once")
    with opened(browser, voila) as tab:
        tab.button("Play").click()
        wait_text(tab.page, ".gw-status", "training")
        kill_kernels(voila)
        tab.page.locator(".gw-status .gw-state-lost").wait_for(state="visible", timeout=30_000)
        assert not tab.page.locator(".gw-status .gw-state-live").is_visible()
        assert "disconnected" in tab.page.locator(".gw-status").inner_text()
        shot(tab, "first-disconnected")


# ---------------------------------------------------------------------- JupyterLab Dark


PLAYGROUND_NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "playground",
            "metadata": {},
            "outputs": [],
            "source": 'import gradwidgets as gw\npg = gw.Playground(activation="sigmoid", depth=12)\npg',
        }
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.fixture(scope="module")
def lab_dark(tmp_path_factory: Any) -> Iterator[Any]:
    """JupyterLab with the JupyterLab Dark theme chosen in its (temporary) user settings."""
    folder = tmp_path_factory.mktemp("lab")
    settings = folder / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "themes.jupyterlab-settings").write_text(json.dumps({"theme": "JupyterLab Dark"}))
    notification = folder / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    (folder / "root").mkdir()
    (folder / "root" / "playground.ipynb").write_text(json.dumps(PLAYGROUND_NOTEBOOK))
    env = server_environment(
        {"JUPYTERLAB_SETTINGS_DIR": str(folder / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(folder / "ws")}
    )
    with serving(jupyter_app("jupyterlab", folder / "root", "jupyterlab-dark-test.log", env=env)) as srv:
        yield srv


def test_playground_in_jupyterlab_dark(lab_dark: Any, browser: Any) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{lab_dark.url}lab/tree/playground.ipynb?token={lab_dark.token}", timeout=120_000)
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
        assert page.evaluate("() => document.body.dataset.jpThemeLight") == "false", "JupyterLab Dark is on"
        # The kernel is up (status bar "Python 3 (ipykernel) | Idle"): the cell will run when asked.
        page.wait_for_function("() => document.body.innerText.includes('| Idle')", timeout=120_000)
        page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
        page.keyboard.press("Shift+Enter")
        page.locator(".gw-app .bargroup rect").first.wait_for(timeout=120_000)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and page.locator(".gw-app .bargroup rect").count() < DEFAULT_BARS:
            page.wait_for_timeout(200)
        assert page.locator(".gw-app .bargroup rect").count() == DEFAULT_BARS, "bars at once, no Play pressed"
        page.locator(".gw-app .gw-banner .gw-ratio").wait_for(timeout=30_000)
        page.wait_for_timeout(1500)
        assert_one_ratio(page, "JupyterLab Dark at load")
        assert_legible(page, "JupyterLab Dark at load")
        page.locator(".gw-app .gw-banner").click()  # make the output's cell the active one: clicks then reach it
        page.locator(".gw-app button", has_text="Play").first.click()
        wait_text(page, ".gw-app .gw-status", "training")
        page.wait_for_timeout(3000)
        page.locator(".gw-app button", has_text="Pause").first.click()
        wait_text(page, ".gw-app .gw-status", "paused")
        page.wait_for_timeout(1500)
        assert_legible(page, "JupyterLab Dark after training")
        assert_one_ratio(page, "JupyterLab Dark after training")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "first-jupyterlab-dark.png"))
        shutil.copyfile(SCREENSHOTS / "first-jupyterlab-dark.png", DOCS / "jupyterlab-dark.png")

        # The kernel dies (the server restarts it): the widget must stop claiming to train. (A restart through
        # the REST API does not tell the page; JupyterLab's own Restart and a dying kernel do.)
        page.locator(".gw-app button", has_text="Play").first.click()
        wait_text(page, ".gw-app .gw-status", "training")
        kill_kernels(lab_dark)
        page.locator(".gw-app .gw-status .gw-state-lost").wait_for(state="visible", timeout=30_000)
        assert not page.locator(".gw-app .gw-status .gw-state-live").is_visible()
        page.screenshot(path=str(SCREENSHOTS / "first-jupyterlab-disconnected.png"))
        assert not errors, errors[:5]
    finally:
        page.close()

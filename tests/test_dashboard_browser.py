"""The dashboard as a person sees it: a real Voila server, real headless Chromium (playwright), real training.

What must hold: the page paints, a URL preset is honoured (and a bad one explained, not crashed on), the
gradient bars get finite heights, move while training and change after the activation is switched, the
Compare tab trains too, and the page throws no errors. Screenshots land in ``artifacts/screenshots/`` for
people to look at; timings in ``artifacts/timings-dashboard.json``.

Skips (with the reason) only when no Chromium is installed; CI installs Debian's.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _browser import Page
from _servers import (
    ARTIFACTS,
    NOTEBOOKS,
    ROOT,
    SCREENSHOTS,
    jupyter_app,
    serving,
    voila_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with serving(voila_server(NOTEBOOKS / "dashboard.ipynb", log_name="voila-browser-test.log")) as srv:
        TIMINGS["voila_listening_s"] = round(srv.listening_seconds, 2)
        yield srv


def teardown_module() -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "timings-dashboard.json").write_text(json.dumps(TIMINGS, indent=2))


def test_preset_link_trains_and_reacts_to_the_activation(server: Any, browser: Any) -> None:
    tab = Page(browser, server, "activation=sigmoid&depth=12")
    try:
        TIMINGS["first_paint_s"] = round(tab.first_paint, 2)
        # The preset is honoured: notice, controls and the activation plot all say sigmoid, depth 12.
        assert "Scenario from the link: activation=sigmoid, depth=12" in tab.text()
        assert tab.control("dropdown", "activation").locator("select").input_value() == "sigmoid"
        assert tab.control("slider", "depth").locator(".widget-readout").inner_text().strip() == "12"
        tab.screenshot("dashboard-1-preset")

        started = time.monotonic()
        tab.button("Play").click()
        first = tab.wait_for_bars(count=12 + 2)  # input layer, 12 hidden layers, head
        TIMINGS["play_to_first_bars_s"] = round(time.monotonic() - started, 2)
        moved = tab.wait_for_change(first)
        assert all(math.isfinite(h) for h in moved)
        tab.page.wait_for_timeout(1500)
        tab.screenshot("dashboard-2-sigmoid-training")
        sigmoid = tab.heights()
        assert "Vanishing" in tab.text()

        tab.control("dropdown", "activation").locator("select").select_option("relu")
        tab.control("dropdown", "init").locator("select").select_option("kaiming")
        tab.page.locator("text.mainheading", has_text="Activation: relu").wait_for(timeout=30_000)
        relu = tab.wait_for_change(sigmoid)
        tab.page.wait_for_timeout(2000)
        relu = tab.wait_for_bars(count=12 + 2)
        tab.screenshot("dashboard-3-relu-he-training")
        # Sigmoid's bars fall off a cliff towards the input side; ReLU + He keeps them level.
        spread = lambda hs: max(hs[1:-1]) - min(hs[1:-1])  # noqa: E731 - hidden layers only
        assert spread(relu) < 0.5 * spread(sigmoid), (sigmoid, relu)
        tab.button("Pause").click()

        # A typical projector: 1280 x 720. Nothing may stick out sideways; the bars must be on the first screen.
        tab.page.set_viewport_size({"width": 1280, "height": 720})
        tab.page.wait_for_timeout(1000)
        scroll_width, inner_width = tab.page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
        assert scroll_width <= inner_width, "the page overflows horizontally at 1280 px"
        box = tab.bars_figure().bounding_box()
        assert box is not None and box["y"] < 720 and box["x"] + box["width"] <= 1280
        tab.page.screenshot(path=str(SCREENSHOTS / "dashboard-0-projector-1280x720.png"))
        tab.assert_no_errors()
    finally:
        tab.close()


def test_bad_link_is_explained_and_the_dashboard_still_works(server: Any, browser: Any) -> None:
    tab = Page(browser, server, "depth=9999&activation=__import__('os')&foo=1&lr=nan&width=32")
    try:
        text = tab.text()
        assert "could not be used" in text
        assert "depth should be a whole number from 1 to 60" in text
        assert "Unknown setting 'foo'" in text
        assert "Scenario from the link: width=32" in text
        # The dashboard's own opening scenario (sigmoid, depth 12) for what the link did not set.
        assert tab.control("dropdown", "activation").locator("select").input_value() == "sigmoid"
        tab.button("Step").click()
        tab.wait_for_bars()
        tab.screenshot("dashboard-4-bad-link")
        tab.assert_no_errors()
    finally:
        tab.close()


def test_compare_tab_trains_side_by_side(server: Any, browser: Any) -> None:
    tab = Page(browser, server, "tab=compare&play=1")  # play=1: training starts without a click
    try:
        tab.bars_figure(1).wait_for(timeout=60_000)  # two runs, two charts
        first = [tab.wait_for_bars(index) for index in (0, 1)]
        tab.wait_for_change(first[0], 0)
        tab.page.wait_for_timeout(1500)
        tab.screenshot("dashboard-5-compare")
        tab.page.get_by_role("tab", name="Explain").click()
        tab.page.get_by_text("What the bars show").wait_for()
        tab.screenshot("dashboard-6-explain")
        tab.assert_no_errors()
    finally:
        tab.close()


@pytest.fixture(scope="module")
def jupyter_server() -> Iterator[Any]:
    """A Jupyter server over the repository, as Binder runs one: Voila is reached as a server extension."""
    with serving(jupyter_app("jupyter_server", ROOT, "jupyter-server-test.log")) as srv:
        yield srv


def test_binder_lab_link_opens_the_first_tutorial(jupyter_server: Any) -> None:
    """README's JupyterLab badge: ``urlpath=lab/tree/notebooks/01_what_vanishes.ipynb``."""
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip("JupyterLab is not installed (Binder has it; pip install jupyterlab to check this link)")
    status, body = jupyter_server.get(f"lab/tree/notebooks/01_what_vanishes.ipynb?token={jupyter_server.token}")
    assert status == 200 and "JupyterLab" in body


def test_binder_voila_link_opens_the_dashboard_with_a_preset(jupyter_server: Any, browser: Any) -> None:
    """README's dashboard badge: ``urlpath=voila/render/notebooks/dashboard.ipynb``, Voila as a server extension,
    with a preset carried through (the server's own ``token`` parameter is not reported as a bad setting)."""
    url = f"voila/render/notebooks/dashboard.ipynb?token={jupyter_server.token}&activation=tanh&depth=7"
    tab = Page(browser, jupyter_server, path=url)
    try:
        assert "Scenario from the link: activation=tanh, depth=7" in tab.text()
        assert "could not be used" not in tab.text()
        tab.button("Step").click()
        tab.wait_for_bars(count=7 + 2)
        tab.screenshot("dashboard-7-binder-path")
        tab.assert_no_errors()
    finally:
        tab.close()

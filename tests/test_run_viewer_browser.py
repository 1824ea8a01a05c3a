"""``gw.RunViewer`` on a folder of four runs in Voila at 1280x720, light and dark: every chart title reads whole.

Four runs side by side give each column about 310 px. The heatmap's title named its run ("sigmoid-depth20: gradient
norm over recent records"), wider than the column: the page cut both ends off ("oid-depth20: gradient norm over
recer"). One of the runs has a single record, so its heatmap shows the "none yet" title, which must fit too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _servers import ROOT, SCREENSHOTS, serving, voila_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RUNS = {"sigmoid-depth20": 30, "relu-kaiming": 30, "tanh-xavier": 30, "just-started": 1}
"""Run names (as long as people name them) and their record counts."""
TITLE_BOXES_JS = """
() => Array.from(document.querySelectorAll('.gw-app .bqplot')).map(figure => {
    const svg = figure.querySelector('svg.svg-figure') || figure.querySelector('svg');
    const title = figure.querySelector('text.mainheading');
    const box = r => ({left: r.left, right: r.right, top: r.top, bottom: r.bottom});
    const visible = n => n.getBoundingClientRect().width > 0 && getComputedStyle(n).display !== 'none';
    return {
        title: title ? title.textContent : '',
        titleBox: title ? box(title.getBoundingClientRect()) : null,
        svgBox: box(svg.getBoundingClientRect()),
        ticks: Array.from(figure.querySelectorAll('.tick text')).filter(visible)
            .map(t => ({text: t.textContent, ...box(t.getBoundingClientRect())})),
    };
})
"""


def write_run(path: Path, records: int) -> None:
    import torch
    from torch import nn

    import gradwidgets as gw

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(6)], nn.Linear(16, 1))
    x = torch.randn(32, 16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with gw.GradientLogger(model, path, every=1) as logger:
        for step in range(1, records + 1):
            optimizer.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            logger.log(loss, step=step)
            optimizer.step()


def viewer_notebook(folder: Path, runs: Path) -> Path:
    cells = [f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport gradwidgets as gw",
             f"viewer = gw.RunViewer({str(runs)!r})\nviewer"]
    notebook = {
        "cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": cell}
                  for cell in cells],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = folder / "viewer.ipynb"
    path.write_text(json.dumps(notebook))
    return path


def overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_four_runs_side_by_side_show_every_title_whole(theme: str, tmp_path: Path, browser: Any) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    for name, records in RUNS.items():
        write_run(runs / f"{name}.gwrun", records)
    server = voila_server(viewer_notebook(tmp_path, runs), theme=theme, log_name=f"run-viewer-{theme}.log")
    with serving(server, timeout=120):
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            page.goto(server.url, timeout=180_000)
            page.wait_for_function(
                "() => document.querySelectorAll('.gw-app text.mainheading').length >= 9", timeout=180_000
            )
            page.wait_for_timeout(2000)  # axis transitions settle
            figures = page.evaluate(TITLE_BOXES_JS)
            heatmaps = page.locator(".bqplot", has=page.locator("text.mainheading", has_text="none yet"))
            heatmaps.first.evaluate("el => el.scrollIntoView({block: 'center'})")
            page.wait_for_timeout(500)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"run-viewer-four-{theme}.png"))
        finally:
            page.close()
    titles = [f["title"] for f in figures]
    assert titles.count("Training loss") == 1 and sum("none yet" in t for t in titles) == 1, titles
    assert all(name in titles for name in RUNS), titles  # the bar charts name their runs
    for figure in figures:
        title, box, svg = figure["title"], figure["titleBox"], figure["svgBox"]
        assert box is not None and box["right"] > box["left"], figure
        inside = box["left"] >= svg["left"] - 1 and box["right"] <= svg["right"] + 1
        assert inside, f"{title!r} is cut off: text {box['left']:.0f}-{box['right']:.0f} px, chart {svg}"
        crossed = [tick["text"] for tick in figure["ticks"] if overlaps(box, tick)]
        assert not crossed, f"{title!r} overlaps the ticks {crossed}"
    assert not errors, errors[:5]

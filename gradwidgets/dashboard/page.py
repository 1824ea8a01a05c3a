"""The Voila dashboard that ``notebooks/dashboard.ipynb`` (and ``gradwidgets dashboard``) shows.

One call, :func:`app`, builds the whole page, so the notebook holds a single line of code and the CLI can
recreate it when the package is installed without the repository (:func:`dashboard_notebook`). The page:

* a header, and a notice when the URL preset something (or asked for something it could not do);
* a **Playground** tab with every control, preset from the URL query (``?activation=sigmoid&depth=20``);
* a **Compare** tab with ready-made side-by-side scenarios, built only when first opened (time to first paint
  is dominated by imports and by what the notebook builds before Voila shows anything);
* an **Explain** tab: how to read the bars and the banner, and where the fixes come from.

Only one of Playground and Compare trains at a time: switching tabs pauses the other, so a classroom server's
cores go to what people are looking at. Nothing here executes text from the URL: :mod:`gradwidgets.dashboard.presets`
parses it into validated values.
"""

from __future__ import annotations

import html
import os
from typing import Any

from .presets import Preset, describe_settings, parse_query, preheated, query_from_request

__all__ = ["COMPARISONS", "Dashboard", "app", "dashboard_notebook", "limit_threads"]

COMPARISONS: dict[str, list[dict[str, Any]]] = {
    "Sigmoid vs ReLU + He init (20 layers)": [
        {"activation": "sigmoid", "depth": 20},
        {"activation": "relu", "depth": 20, "init": "kaiming"},
    ],
    "ReLU, 20 layers: PyTorch default vs He init": [
        {"activation": "relu", "depth": 20},
        {"activation": "relu", "depth": 20, "init": "kaiming"},
    ],
    "The fixes: plain, residual, batch norm, layer norm (sigmoid, 20 layers)": [
        {"activation": "sigmoid", "depth": 20},
        {"activation": "sigmoid", "depth": 20, "residual": True},
        {"activation": "sigmoid", "depth": 20, "norm": "batch"},
        {"activation": "sigmoid", "depth": 20, "norm": "layer"},
    ],
    "Transformer, 12 blocks: with vs without residual + LayerNorm": [
        {"kind": "transformer", "activation": "gelu", "depth": 12, "residual": True, "norm": "layer"},
        {"kind": "transformer", "activation": "gelu", "depth": 12, "residual": False, "norm": "none"},
    ],
}
"""Ready-made side-by-side scenarios for the Compare tab (each is one teaching claim, live). Recurrent nets are not
among them: Compare draws per-layer bars, and a recurrent net's story is per *time step*, which the Playground
draws (``?kind=rnn&cell=lstm&activation=tanh&seq_len=50``)."""

CSS = """
<style>
.gw-dashboard { font-size: 18px; line-height: 1.4; }
.gw-dashboard h1 { font-size: 30px; margin: 4px 0 2px 0; }
.gw-dashboard .gw-lead { font-size: 18px; color: #333; margin: 0 0 6px 0; }
.gw-dashboard .gw-notice { border-radius: 6px; padding: 8px 12px; margin: 4px 0; font-size: 17px; }
.gw-dashboard .gw-notice-ok { background: #e8f0fe; border: 1px solid #8ab4f8; }
.gw-dashboard .gw-notice-warn { background: #fff3e0; border: 1px solid #f0a050; }
.gw-dashboard .gw-explain { max-width: 1100px; font-size: 18px; }
.gw-dashboard .gw-explain h2 { font-size: 22px; margin: 14px 0 4px 0; }
.gw-dashboard .gw-explain li { margin: 3px 0; }
.gw-dashboard .lm-TabBar { min-height: 40px !important; }
.gw-dashboard .lm-TabBar-tab {
    font-size: 20px !important; min-width: 180px !important; height: 38px !important; line-height: 38px !important;
    flex-basis: 180px !important;
}
.gw-dashboard .lm-TabBar-tabLabel { line-height: 38px !important; }
.gw-dashboard .gw-explain code { white-space: nowrap; font-size: 17px; }
.gw-dashboard .widget-dropdown select { font-size: 17px; height: 34px; }
.gw-dashboard .widget-label { font-size: 17px; }
</style>
"""
"""Bigger type for projectors, scoped to the dashboard (the apps bring their own ``gw-app`` styles)."""

EXPLANATION = """
<div class="gw-explain">
<h2>What the bars show</h2>
<p>One bar per layer, input side on the left. Its height is the size (L2 norm) of the gradient that reached that
layer at the latest training step, on a <b>log scale</b>: each grid line is ten times the one below. Level bars
mean every layer learns at a similar pace; a staircase falling to the left means the first layers receive a tiny
share of the signal and barely change.</p>
<h2>Why gradients vanish</h2>
<p>Backpropagation applies the chain rule, which <b>multiplies</b> one factor per layer. Sigmoid's slope is at
most 1/4, so twenty sigmoid layers can shrink the gradient by more than a factor of 10<sup>15</sup>. Factors above
one compound the other way, and the gradients explode to inf/NaN.</p>
<h2>The banner</h2>
<p>It compares the first layer's gradient with the last one's (<i>ratio</i>) and names the problem:
<b>vanishing</b> (ratio below 10<sup>-3</sup>), <b>exploding</b>, <b>dead</b> (units that never pass a signal, or
layers that never moved), <b>frozen</b> (switched off on purpose, as in fine-tuning: not a problem) or
<b>healthy</b>, with a fix to try.</p>
<h2>The fixes, and where they come from</h2>
<ul>
<li><b>ReLU</b>-family activations: slope exactly 1 where active, but at depth they need <b>He initialization</b>
(He et al. 2015); Xavier initialization suits tanh (Glorot &amp; Bengio 2010).</li>
<li><b>Residual connections</b> (He et al. 2016): an identity path that carries the gradient past each layer.</li>
<li><b>Batch normalization</b> (Ioffe &amp; Szegedy 2015) and <b>layer normalization</b> (Ba et al. 2016): keep
every layer's inputs at a scale where the activation still has slope.</li>
<li>Through time: <b>LSTM</b> with an open forget gate (Hochreiter &amp; Schmidhuber 1997), GRU, or a ReLU RNN
started at the identity (IRNN, Le, Jaitly &amp; Hinton 2015). The problem was first analysed by Hochreiter
(1991).</li>
</ul>
<h2>Share a scenario</h2>
<p>Add settings to the page address; everyone who opens the link starts from the same net:</p>
<ul>
<li><code>?activation=sigmoid&amp;depth=20</code>: the classic vanishing case;</li>
<li><code>?activation=sigmoid&amp;depth=20&amp;norm=batch&amp;play=1</code>: the same, fixed, already training;</li>
<li><code>?kind=rnn&amp;cell=lstm&amp;activation=tanh&amp;forget_bias=3&amp;seq_len=50</code>: through time, one
bar per time step (try <code>forget_bias=0</code>);</li>
<li><code>?tab=compare</code>: open the Compare tab.</li>
</ul>
</div>
"""


def limit_threads(threads: int = 1) -> None:
    """One intra-op torch thread for this kernel. Every Voila visitor gets a kernel of their own, and small nets
    train faster on one thread than on several fighting each other (design.md measured ~6x); the CLI also sets
    ``OMP_NUM_THREADS=1`` for the server, which kernels inherit."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def preset_notice(preset: Preset) -> str:
    """HTML for what the URL preset (escaped: the values come from the link)."""
    parts = []
    if preset.settings:
        parts.append(
            "<div class='gw-notice gw-notice-ok'>Scenario from the link: <b>"
            + html.escape(describe_settings(preset.settings))
            + "</b></div>"
        )
    if preset.problems:
        items = "".join(f"<li>{html.escape(problem)}</li>" for problem in preset.problems)
        parts.append(
            "<div class='gw-notice gw-notice-warn'>Some settings in the link could not be used; "
            f"the dashboard uses its defaults for them:<ul>{items}</ul></div>"
        )
    return "".join(parts)


class Dashboard:
    """The page: header, notices, and the Playground / Compare / Explain tabs (``.widget`` is the root)."""

    def __init__(self, preset: Preset) -> None:
        import ipywidgets as widgets

        from ..apps.playground import Playground

        self.preset = preset
        autoplay = bool(preset.dashboard.get("play", False))
        self.playground = Playground(**preset.settings)
        self.compare: Any = None
        self.comparison = widgets.Dropdown(
            options=list(COMPARISONS),
            value=next(iter(COMPARISONS)),
            description="Compare",
            layout=widgets.Layout(width="760px"),
            style={"description_width": "90px"},
        )
        self.compare_box = widgets.VBox([], layout=widgets.Layout(width="100%"))
        compare_tab = widgets.VBox(
            [
                widgets.HTML(
                    "<div class='gw-lead'>Same data, same seed, trained in lockstep; the bars share one log "
                    "axis, so equal heights mean equal gradients.</div>"
                ),
                self.comparison,
                self.compare_box,
            ],
            layout=widgets.Layout(width="100%"),
        )
        self.tabs = widgets.Tab(
            children=[self.playground, compare_tab, widgets.HTML(EXPLANATION)],
            layout=widgets.Layout(width="100%"),
        )
        for index, title in enumerate(("Playground", "Compare", "Explain")):
            self.tabs.set_title(index, title)
        header = widgets.HTML(
            CSS
            + "<h1>Vanishing &amp; exploding gradients, live</h1>"
            + "<div class='gw-lead'>Each bar is one layer's gradient, on a log scale. Press ▶ Play, then change "
            + "the activation, depth, initialization, skip connections or normalization while it trains.</div>"
            + preset_notice(preset)
        )
        self.widget = widgets.VBox([header, self.tabs], layout=widgets.Layout(width="100%", padding="0 8px"))
        self.widget.add_class("gw-dashboard")
        self.comparison.observe(self._comparison_changed, "value")
        self.tabs.observe(self._tab_changed, "selected_index")
        if preset.dashboard.get("tab") == "compare":
            self.tabs.selected_index = 1  # builds the comparison through _tab_changed
            if autoplay and self.compare is not None:
                self.compare.play()
        elif autoplay:
            self.playground.play()

    def _build_compare(self) -> None:
        from ..apps.compare import Compare

        if self.compare is not None:
            self.compare.close()
        self.compare = Compare(COMPARISONS[self.comparison.value])
        self.compare_box.children = [self.compare]

    def _comparison_changed(self, change: dict) -> None:
        if self.compare is not None:
            self._build_compare()

    def _tab_changed(self, change: dict) -> None:
        if change["new"] == 1:
            self.playground.pause()
            if self.compare is None:
                self._build_compare()
        elif self.compare is not None:
            self.compare.pause()

    def close(self) -> None:
        """Stop every training thread and close every widget of the page: a widget left open that refers to a
        closed one (the tabs to the Playground) keeps a Voila page at "Loading widget..." for good."""
        from ..apps.lifecycle import close_tree

        self.playground.close()
        if self.compare is not None:
            self.compare.close()
        close_tree(self.widget)


def app(query: str | None = None, display: bool = True) -> Dashboard:
    """Build (and display) the dashboard. ``query`` defaults to the page's URL query, which Voila passes to the
    kernel as ``QUERY_STRING``.

    In Voila's preheated pool this runs before anyone asked for the page: it builds a default dashboard (the
    imports and the first torch step are most of the time to first paint), then waits for the visitor through
    Voila's request hook, and keeps that dashboard when the link presets nothing (else builds the asked one,
    ~0.1 s once warm)."""
    limit_threads()
    warm = Dashboard(Preset()) if query is None and preheated() else None
    preset = parse_query(query_from_request() if query is None else query)
    if warm is not None and preset == Preset():
        dashboard = warm
    else:
        if warm is not None:
            warm.close()
        dashboard = Dashboard(preset)
    if display:
        from IPython.display import display as show

        show(dashboard.widget)
    return dashboard


DASHBOARD_SOURCE = (
    "# The gradwidgets dashboard: `gradwidgets dashboard` serves it with Voila.\n"
    "# Preset a scenario from the page's URL, e.g. ?activation=sigmoid&depth=20\n"
    "from gradwidgets.dashboard import app\n"
    "\n"
    "dashboard = app()"
)
"""The notebook's only cell. ``notebooks/dashboard.ipynb`` holds exactly this (a test checks)."""


def dashboard_notebook() -> Any:
    """The dashboard notebook as an ``nbformat`` object, for installs that lack the repository's ``notebooks/``."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    cell = nbformat.v4.new_code_cell(DASHBOARD_SOURCE)
    cell["id"] = "dashboard-app"
    notebook.cells = [cell]
    return notebook

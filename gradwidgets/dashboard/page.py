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

__all__ = ["COMPARISONS", "DEFAULT_SCENARIO", "TABS", "Dashboard", "app", "dashboard_notebook", "limit_threads"]

DEFAULT_SCENARIO: dict[str, Any] = {"activation": "sigmoid", "depth": 12}
"""What the dashboard opens on without a preset: the classic vanishing staircase (the README image), at
initialization, before anyone presses Play. Every other scenario is a link (``?activation=relu``) or a click away."""
TABS = ("playground", "compare", "explain")


def opening_settings(preset: Preset) -> dict[str, Any]:
    """The preset's settings over :data:`DEFAULT_SCENARIO`; a preset for another kind of net keeps its own defaults."""
    if preset.settings.get("kind", "mlp") != "mlp":
        return dict(preset.settings)
    return {**DEFAULT_SCENARIO, **preset.settings}

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
.gw-dashboard { font-size: 18px; line-height: 1.4; color: var(--jp-ui-font-color1, rgba(0, 0, 0, 0.87)); }
.gw-dashboard h1 { font-size: 26px; margin: 2px 0 0 0; color: var(--jp-ui-font-color1, rgba(0, 0, 0, 0.87)); }
.gw-dashboard .gw-lead { font-size: 17px; color: var(--jp-ui-font-color1, rgba(0, 0, 0, 0.87)); margin: 0 0 4px 0; }
.gw-dashboard .gw-notice {
    border-radius: 6px; padding: 4px 12px; margin: 2px 0; font-size: 16px;
    background: var(--jp-layout-color1, #ffffff); color: var(--jp-ui-font-color1, rgba(0, 0, 0, 0.87));
}
.gw-dashboard .gw-notice ul { margin: 2px 0; }
.gw-dashboard .gw-notice-ok { border: 1px solid var(--jp-brand-color1, #1976d2); }
.gw-dashboard .gw-notice-warn { border: 2px solid var(--jp-warn-color1, #f57c00); }
.gw-dashboard .gw-explain { max-width: 1100px; font-size: 18px; }
.gw-dashboard .gw-explain h2 { font-size: 22px; margin: 14px 0 4px 0; }
.gw-dashboard .gw-explain li { margin: 3px 0; }
.gw-dashboard .lm-TabBar { min-height: 36px !important; }
.gw-dashboard .lm-TabBar-tab {
    font-size: 19px !important; min-width: 170px !important; height: 34px !important; line-height: 34px !important;
    flex-basis: 170px !important; color: var(--jp-ui-font-color1, rgba(0, 0, 0, 0.87)) !important;
}
.gw-dashboard .lm-TabBar-tabLabel { line-height: 34px !important; }
.gw-dashboard .gw-explain code { white-space: nowrap; font-size: 17px; }
.gw-dashboard .widget-dropdown select { font-size: 17px; height: 34px; }
.gw-dashboard .widget-label { font-size: 17px; }
</style>
"""
"""Bigger type for projectors, scoped to the dashboard (the apps bring their own ``gw-app`` styles)."""

EXPLANATION = """
<div class="gw-explain">
<h2>What the bars show</h2>
<p>One bar per layer, input side on the left. Its height is the size (L2 norm) of that layer's <b>parameter
gradient</b> (weights and biases together) at the latest training step, on a <b>log scale</b>: each grid line is ten
times the one below. A weight gradient is the backward signal arriving at the layer times the layer's input, so a
bar reflects both directions: the gradient with respect to the hidden state, dL/dh, and the size of the
activations. (The notebooks read dL/dh and the activations separately with <code>gw.ActivationStats</code>.)</p>
<h2>The decision boundary</h2>
<p>For the two-feature datasets (spiral, moons, circles, xor, gaussian) the Playground shades the plane by the
net's probability of class 1 and draws the training points over it, refreshed every few steps. A vanishing net
leaves it one flat shade; a net whose gradients reach its first layers bends it around the points.</p>
<h2>Reading the heights</h2>
<p>The absolute height depends on the loss, the batch and the learning task; compare the bars <i>with each other</i>.
Level bars: every layer gets a similar share. A staircase falling to the left: the first layers get a tiny share
and barely change (vanishing). A staircase rising to the left: the first layers get <i>more</i> than the last.
The banner's <i>ratio</i> is first layer ÷ last layer. Below 10<sup>-3</sup> is vanishing. Above 10<sup>3</sup> is
exploding: the early layers' steps are much too large while the late ones barely move. ReLU + BatchNorm reads about
70 at depth 20 and 4×10<sup>5</sup> at depth 60 at initialization, and 1 to 10 at both depths once it has trained
a few dozen steps. Sigmoid + BatchNorm reads about 9 at depth 20 at initialization and 0.4 to 2 while it trains.
A model with an encoder and a decoder gets one ratio per stack. Under SGD a healthy ratio is necessary, not sufficient
(Adam divides each weight's step by its own gradient's size, so its raw ratio does not set the step sizes): a
transformer with LayerNorm but no skip connections reads about 1 at the start and does not learn; the banner says so
once the loss has stayed put (or the ratio falls) for 20 reads.</p>
<h2>Why gradients vanish</h2>
<p>Backpropagation applies the chain rule, which <b>multiplies</b> one factor per layer: the activation's slope
<i>times</i> the weights' scale. In a 20-layer sigmoid net with PyTorch's default weights, the slope (at most 1/4)
accounts for about 10<sup>11</sup> of the shrink and the weights (about √(1/3) per layer) for about 10<sup>5</sup>
more: the measured first/last ratio is about 5×10<sup>-17</sup>. No unit in that net is saturated. Sigmoid's outputs
also average 0.5 instead of 0, but the slope costs far more than the offset. At depth 20 with Xavier weights the
ratio is about 7×10<sup>-13</sup>; cancel the slope (weights ×4) and it is about 10<sup>-4</sup>: the slope cost
about 8 orders of magnitude. Remove the offset as well and it reaches 0.2 to 0.5: the offset cost about 4 more,
mostly because with weights ×4 it pushes half of the units into saturation, which centring prevents.
Factors above one compound the other way, and the gradients explode.</p>
<h2>The theory line</h2>
<p>The chain rule multiplies, per layer, the slope the units actually have (averaged over units and batch) by the
factor the weights scale the signal by. In a plain net (no normalization, no skip) that product, raised to
depth−1, predicts the measured ratio: sigmoid at depth 10 with default weights, 0.141 per layer predicted and 0.148
measured. The activation's <i>largest</i> slope alone, max f′<sup>depth−1</sup>, predicts nothing: it is neither a
bound nor an estimate. Default weights shrink the signal further (ReLU: 1, measured 10<sup>-7</sup> at depth 20),
normalization can grow it (sigmoid + BatchNorm: 4×10<sup>-12</sup>, measured about 9), and GELU's slope peaks above
1 (10 at depth 20).</p>
<h2>The banner</h2>
<p>It compares the first layer's gradient with the last one's (<i>ratio</i>) and names the problem:
<b>vanishing</b> (ratio below 10<sup>-3</sup>), <b>exploding</b> (ratio above 10<sup>3</sup>), <b>dead</b> (a
layer with no gradient at all, or 90% of its units passing none), <b>frozen</b> (switched off on purpose, as in
fine-tuning: not a problem; a zero-initialised adapter or residual branch is not dead either) or <b>healthy</b>, with
a fix to try. In your own loop it also names reads that cannot be judged (between micro-batches, with the AMP loss
scale still in) and, given the optimizer, a learning rate too small or diverging and layers whose Adam step is
limited by eps.</p>
<h2>The fixes, and where they come from</h2>
<ul>
<li><b>ReLU</b>-family activations: slope exactly 1 where active, but at depth they need <b>He initialization</b>
(He et al. 2015); Xavier initialization suits tanh (Glorot &amp; Bengio 2010).</li>
<li><b>Residual connections</b> (He et al. 2016) were introduced against <i>degradation</i>: deeper plain nets
training worse than shallower ones. He et al. measured healthy gradient norms in their BatchNorm plain nets and
judged vanishing an unlikely cause. The argument that the identity path carries the gradient past every block is
their follow-up (He et al. 2016b, "Identity Mappings in Deep Residual Networks"); why BatchNorm and skips together
make depth trainable is later work (Yang et al. 2019; De &amp; Smith 2020). Without normalization the forward
signal grows at every block (ReLU + He: about 3×10<sup>4</sup> at depth 20).</li>
<li><b>Batch normalization</b> (Ioffe &amp; Szegedy 2015) and <b>layer normalization</b> (Ba et al. 2016): their
backward pass divides by the same standard deviation that shrank the forward signal; placed before the linear map
they also remove sigmoid's mean. After the linear map, sigmoid(norm(Wx)), the two differ: BatchNorm there (Ioffe
&amp; Szegedy's placement) keeps the ratio healthy, because it removes each unit's offset shared across the batch;
LayerNorm, which normalizes each example on its own, cannot, and the net still vanishes.</li>
<li>Through time: the <b>LSTM</b> (Hochreiter &amp; Schmidhuber 1997) with its <b>forget gate</b> open (the gate is
from Gers, Schmidhuber &amp; Cummins 2000), the GRU, or a ReLU RNN started at the identity (IRNN, Le, Jaitly &amp;
Hinton 2015). Exploding through time needs the recurrent matrix's largest singular value above 1/γ, γ the
activation's largest slope (1 for tanh): necessary, not sufficient; below it the gradient must vanish. The spectral
radius tells the same only for normal matrices (Bengio, Simard &amp; Frasconi 1994; Pascanu, Mikolov &amp; Bengio
2013, who also proposed gradient clipping). The problem was first analysed by Hochreiter (1991).</li>
</ul>
<h2>A 5-minute presenter script</h2>
<p>Each step says what the page shows at the moment you click (the numbers are the dashboard's defaults: spiral,
SGD, learning rate 0.1, width 64, seed 0).</p>
<ol>
<li><b>0:00 Predict.</b> Open <code>?activation=sigmoid&amp;depth=20</code>. Ask the room: how much smaller is the
first layer's gradient than the last one's? Collect guesses, then read the banner: vanishing, ratio about
5×10<sup>-17</sup>, at initialization. Press Play: it stays there, the loss stays at 0.69, chance level, and the
decision boundary stays one flat shade. Point at the staircase.</li>
<li><b>1:00 The factor.</b> Each layer multiplies by slope × weight scale, about 0.15 here, with no unit saturated.
Switch the activation to <code>relu</code>: still vanishing, ratio about 10<sup>-7</sup> (the default weights
roughly halve the gradient per layer). Set init to <code>kaiming</code>: the bars level out, healthy, ratio near 1,
and the loss starts to fall.</li>
<li><b>2:00 Normalization.</b> Open <code>?activation=sigmoid&amp;depth=20&amp;norm=batch&amp;play=1</code>: it is
already training, the bars are level and the banner says healthy, with a ratio that wanders between about 0.4 and 2
(it was 9 at initialization, before the first step). Press Pause, set the activation to <code>relu</code> and the
depth to 60: at initialization the bars rise to the left, <i>exploding</i>, ratio about 4×10<sup>5</sup>. Press Step
twice: after one update BatchNorm has rescaled the layers and the ratio reads about 200, healthy. Press Play: it
settles between 1 and 10, yet the loss stays at 0.69: a healthy ratio is necessary, not sufficient. Tick
<code>skip connections</code>: within about 100 steps the loss falls below 0.1 and the decision boundary carves the
spiral, the ratio healthy at 10 to 50.
BatchNorm makes each layer scale-invariant, so a smaller init or learning rate would not have helped.</li>
<li><b>3:00 Through time.</b> Open
<code>?kind=rnn&amp;cell=lstm&amp;activation=tanh&amp;forget_bias=0&amp;seq_len=50</code> and press Play: one bar per
time step, falling to the left, vanishing, a ratio through time of about 10<sup>-10</sup>. Move the
<code>forget bias</code> slider to 3: the run restarts; after a loss spike in the first ten steps (the banner may
say diverging for a moment) the ratio reads about 2×10<sup>-3</sup>, healthy: the gradient reaches step 0 ten
million times stronger.</li>
<li><b>4:00 Compare and wrap up.</b> Open <code>?tab=compare</code> and play. Takeaways: the gradient is a product
of slope × weight scale per layer; fix the factor (init, normalization, skip paths, gates), not the learning rate;
read the activations beside the bars.</li>
</ol>
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
        self.playground = Playground(**opening_settings(preset))
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
        for index, name in enumerate(TABS):
            self.tabs.set_title(index, name.capitalize())
        header = widgets.HTML(
            CSS
            + "<h1>Vanishing &amp; exploding gradients, live</h1>"
            + "<div class='gw-lead'>Each bar is one layer's gradient, on a log scale. Press ▶ Play, then change "
            + "the settings while it trains.</div>"
            + preset_notice(preset)
        )
        self.widget = widgets.VBox([header, self.tabs], layout=widgets.Layout(width="100%", padding="0 8px"))
        self.widget.add_class("gw-dashboard")
        self.comparison.observe(self._comparison_changed, "value")
        self.tabs.observe(self._tab_changed, "selected_index")
        tab = preset.dashboard.get("tab", "playground")
        if tab == "compare":
            self.tabs.selected_index = 1  # builds the comparison through _tab_changed
            if autoplay and self.compare is not None:
                self.compare.play_when_watched()
        else:
            self.tabs.selected_index = TABS.index(tab)
            if autoplay:
                self.playground.play_when_watched()

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

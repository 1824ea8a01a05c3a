"""Layer 4a, views: thin bqplot/ipywidgets views (bars, loss curve, heatmap, activation plot, banner,
controls, transport) that draw plain numpy arrays. They never import torch nor the core: the apps in
:mod:`gradwidgets.apps` compute and hand them the numbers.
"""

from __future__ import annotations

from .activation_plot import ActivationPlot
from .banner import DiagnosisBanner
from .bars import GradientBars, TimeBars
from .controls import Controls
from .heatmap import GradientHeatmap
from .loss_curve import LossCurve

__all__ = [
    "ActivationPlot",
    "Controls",
    "DiagnosisBanner",
    "GradientBars",
    "GradientHeatmap",
    "LossCurve",
    "TimeBars",
]

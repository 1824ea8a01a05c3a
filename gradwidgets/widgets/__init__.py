"""The widget layer: thin views (bars, loss curve, heatmap, activation plot, banner, controls) and the apps
that compose them (``Playground``, ``Compare``, ``GradientMonitor``).

Views only draw plain arrays and never do torch math; apps wire a ``TrainingSession`` (or a user's model)
to them through :class:`gradwidgets.runner.Runner` or, for the monitor, the caller's own thread.
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
    "Compare",
    "Controls",
    "DiagnosisBanner",
    "GradientBars",
    "GradientHeatmap",
    "GradientMonitor",
    "LossCurve",
    "Playground",
    "TimeBars",
]

_APPS = {"Playground": ".playground", "Compare": ".compare", "GradientMonitor": ".monitor"}


def __getattr__(name: str):
    if name in _APPS:
        import importlib

        return getattr(importlib.import_module(_APPS[name], __name__), name)
    raise AttributeError(f"module 'gradwidgets.widgets' has no attribute {name!r}")

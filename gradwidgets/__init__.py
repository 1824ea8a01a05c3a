"""gradwidgets: see, measure and fix vanishing and exploding gradients, live, in Jupyter.

Layers, each importing only those before it: ``nets`` (configs and models) -> ``core`` (data, probe,
diagnosis, history, session) -> ``runtime`` (background training) and ``widgets`` (views) -> ``apps``
(Playground, Compare, GradientMonitor) -> ``dashboard`` (Voila page, URL presets, CLI).

The torch core (``NetConfig``, ``build_model``, ``GradientProbe``, ``diagnose``, ``TrainingSession``) imports
no widget code; the widgets (``Playground``, ``Compare``, ``GradientMonitor``) load on first use, so
``import gradwidgets`` stays cheap for scripts and tests that only train.
"""

from __future__ import annotations

from typing import Any

from .core import (
    DATASETS,
    DIAGNOSES,
    OPTIMIZERS,
    ActivationReading,
    ActivationStats,
    Dataset,
    Diagnosis,
    DistributionProbe,
    GradientLogger,
    GradientProbe,
    GradientStats,
    History,
    InstabilitySignals,
    TrainingSession,
    diagnose,
    load_run,
    make_dataset,
)
from .nets import ACTIVATIONS, CELLS, INITS, KINDS, NORMS, NetConfig, build_model, theoretical_bound

__version__ = "0.1.0"

_WIDGETS = {
    "Playground": "gradwidgets.apps.playground",
    "Compare": "gradwidgets.apps.compare",
    "Distributions": "gradwidgets.apps.distributions",
    "GradientMonitor": "gradwidgets.apps.monitor",
    "RunViewer": "gradwidgets.apps.run_viewer",
}

__all__ = [
    "ACTIVATIONS",
    "CELLS",
    "DATASETS",
    "DIAGNOSES",
    "INITS",
    "KINDS",
    "NORMS",
    "OPTIMIZERS",
    "ActivationReading",
    "ActivationStats",
    "Compare",
    "Dataset",
    "Diagnosis",
    "DistributionProbe",
    "Distributions",
    "GradientLogger",
    "GradientMonitor",
    "GradientProbe",
    "GradientStats",
    "History",
    "InstabilitySignals",
    "NetConfig",
    "Playground",
    "RunViewer",
    "TrainingSession",
    "build_model",
    "diagnose",
    "load_run",
    "make_dataset",
    "theoretical_bound",
]


def __getattr__(name: str) -> Any:
    if name in _WIDGETS:
        import importlib

        return getattr(importlib.import_module(_WIDGETS[name]), name)
    raise AttributeError(f"module 'gradwidgets' has no attribute {name!r}")

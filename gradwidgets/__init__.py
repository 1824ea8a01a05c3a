"""gradwidgets: see, measure and fix vanishing and exploding gradients, live, in Jupyter.

The torch core (``NetConfig``, ``build_model``, ``GradientProbe``, ``diagnose``, ``TrainingSession``) imports
no widget code; the widgets (``Playground``, ``Compare``, ``GradientMonitor``) load on first use, so
``import gradwidgets`` stays cheap for scripts and tests that only train.
"""

from __future__ import annotations

from typing import Any

from .activations import ACTIVATIONS, theoretical_bound
from .data import DATASETS, Dataset, make_dataset
from .diagnosis import DIAGNOSES, Diagnosis, diagnose
from .history import History
from .nets import CELLS, INITS, KINDS, NORMS, NetConfig, build_model
from .probe import GradientProbe, GradientStats
from .session import OPTIMIZERS, TrainingSession

__version__ = "0.1.0"

_WIDGETS = {
    "Playground": "gradwidgets.widgets.playground",
    "Compare": "gradwidgets.widgets.compare",
    "GradientMonitor": "gradwidgets.widgets.monitor",
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
    "Compare",
    "Dataset",
    "Diagnosis",
    "GradientMonitor",
    "GradientProbe",
    "GradientStats",
    "History",
    "NetConfig",
    "Playground",
    "TrainingSession",
    "build_model",
    "diagnose",
    "make_dataset",
    "theoretical_bound",
]


def __getattr__(name: str) -> Any:
    if name in _WIDGETS:
        import importlib

        return getattr(importlib.import_module(_WIDGETS[name]), name)
    raise AttributeError(f"module 'gradwidgets' has no attribute {name!r}")

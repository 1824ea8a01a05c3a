"""Layer 2, core: data, the gradient probe, verdicts, history and the training session.

Plain torch + numpy + scikit-learn, usable from scripts and tests without any widget library (an
import-linter contract in the test suite keeps ipywidgets, bqplot and voila out).
"""

from __future__ import annotations

from .activation_stats import ActivationReading, ActivationStats
from .data import DATASETS, SEQUENCE_DATASETS, Dataset, make_dataset
from .diagnosis import DIAGNOSES, Diagnosis, diagnose, format_number
from .history import History
from .probe import GradientProbe, GradientStats, layer_layout
from .session import OPTIMIZERS, SessionSettings, TrainingSession

__all__ = [
    "ActivationReading",
    "ActivationStats",
    "DATASETS",
    "DIAGNOSES",
    "OPTIMIZERS",
    "SEQUENCE_DATASETS",
    "Dataset",
    "Diagnosis",
    "GradientProbe",
    "GradientStats",
    "History",
    "SessionSettings",
    "TrainingSession",
    "diagnose",
    "format_number",
    "layer_layout",
    "make_dataset",
]

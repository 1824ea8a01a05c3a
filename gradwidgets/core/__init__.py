"""Layer 2, core: data, the gradient probe, verdicts, history and the training session.

Plain torch + numpy + scikit-learn, usable from scripts and tests without any widget library (an
import-linter contract in the test suite keeps ipywidgets, bqplot and voila out).
"""

from __future__ import annotations

from .activation_stats import ActivationReading, ActivationStats
from .data import DATASETS, SEQUENCE_DATASETS, Dataset, make_dataset
from .diagnosis import DIAGNOSES, Diagnosis, diagnose, format_number
from .distributions import DistributionProbe, DistributionReading
from .history import History
from .logger import GradientLogger
from .probe import GradientProbe
from .runfile import Run, RunFileError, RunFileLockedError, RunFileVersionError, load_run
from .session import OPTIMIZERS, SessionSettings, TrainingSession
from .signals import InstabilitySignals
from .stats import GradientStats

__all__ = [
    "ActivationReading",
    "ActivationStats",
    "DATASETS",
    "DIAGNOSES",
    "OPTIMIZERS",
    "SEQUENCE_DATASETS",
    "Dataset",
    "Diagnosis",
    "DistributionProbe",
    "DistributionReading",
    "GradientLogger",
    "GradientProbe",
    "GradientStats",
    "History",
    "InstabilitySignals",
    "Run",
    "RunFileError",
    "RunFileLockedError",
    "RunFileVersionError",
    "SessionSettings",
    "TrainingSession",
    "diagnose",
    "format_number",
    "load_run",
    "make_dataset",
]

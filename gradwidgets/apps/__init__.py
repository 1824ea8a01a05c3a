"""Layer 4b, apps: the widgets people use, each wiring the core to the views.

``Playground`` and ``Compare`` train a :class:`~gradwidgets.core.session.TrainingSession` through a
:class:`~gradwidgets.runtime.Runner`; ``GradientMonitor`` reads a user's own model from the user's loop.
``frames`` turns session state into the plain arrays the views draw; ``lifecycle`` closes what an app made.
"""

from __future__ import annotations

from .compare import Compare
from .monitor import GradientMonitor
from .playground import Playground

__all__ = ["Compare", "GradientMonitor", "Playground"]

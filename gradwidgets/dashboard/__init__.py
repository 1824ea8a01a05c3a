"""Layer 5, dashboard: the Voila page (:func:`app`), its URL presets, and the ``gradwidgets`` command."""

from __future__ import annotations

from .page import COMPARISONS, DASHBOARD_SOURCE, Dashboard, app, dashboard_notebook, limit_threads, preset_notice

__all__ = [
    "COMPARISONS",
    "DASHBOARD_SOURCE",
    "Dashboard",
    "app",
    "dashboard_notebook",
    "limit_threads",
    "preset_notice",
]

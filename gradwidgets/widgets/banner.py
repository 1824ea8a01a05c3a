"""``DiagnosisBanner``: the verdict in plain words (headline, what is happening, what to try), coloured by kind."""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets

from .style import KIND_BACKGROUNDS, KIND_COLORS

__all__ = ["DiagnosisBanner"]


class DiagnosisBanner(widgets.HTML):
    """An HTML box. ``show(diagnosis)`` for a ``Diagnosis``; ``show_text`` for errors and notices.

    ``kind`` (read-only for users) is the kind currently shown: ``"healthy"``, ``"vanishing"``, ...,
    ``"error"`` or ``"waiting"``.
    """

    def __init__(self, compact: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.compact = compact
        self.kind = "waiting"
        self.headline = ""
        self._lock = threading.Lock()
        self.layout.width = "100%"
        self.show_text("waiting", "Press ▶ Play or Step to start training", "")

    def show(self, diagnosis: Any, note: str = "") -> None:
        """Show a ``Diagnosis`` (anything with kind, headline, message, fix); ``note`` is added in bold."""
        fix = diagnosis.fix if diagnosis.kind != "healthy" else ""
        self.show_text(diagnosis.kind, diagnosis.headline, diagnosis.message, fix, note)

    def show_text(self, kind: str, headline: str, message: str, fix: str = "", note: str = "") -> None:
        """Any verdict, e.g. ``("error", "Training stopped: ValueError", "the message", "what to do")``."""
        color = KIND_COLORS.get(kind, KIND_COLORS["waiting"])
        background = KIND_BACKGROUNDS.get(kind, KIND_BACKGROUNDS["waiting"])
        size = (18, 15) if self.compact else (26, 18)
        parts = [
            f"<div style='font-size:{size[0]}px;font-weight:bold;color:{color}'>{html.escape(headline)}</div>",
            f"<div style='font-size:{size[1]}px;color:#222;margin-top:2px'>{html.escape(message)}</div>",
        ]
        if fix:
            parts.append(
                f"<div style='font-size:{size[1]}px;color:#222;margin-top:4px'><b>Try:</b> {html.escape(fix)}</div>"
            )
        if note:
            parts.append(
                f"<div style='font-size:{size[1]}px;color:{color};margin-top:4px'><b>{html.escape(note)}</b></div>"
            )
        value = (
            f"<div style='border-left:8px solid {color};background:{background};padding:8px 14px;"
            f"border-radius:4px;line-height:1.3'>{''.join(parts)}</div>"
        )
        with self._lock:
            self.kind, self.headline = kind, headline
            if value != self.value:
                self.value = value

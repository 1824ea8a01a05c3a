"""``DiagnosisBanner``: the verdict in plain words (headline, what is happening, what to try), coloured by kind."""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets

from .style import kind_background, kind_text

__all__ = ["DiagnosisBanner"]


class DiagnosisBanner(widgets.HTML):
    """An HTML box. ``show(diagnosis)`` for a ``Diagnosis``; ``show_text`` for errors and notices.

    ``kind`` (read-only for users) is the kind currently shown: ``"healthy"``, ``"vanishing"``, ...,
    ``"error"`` or ``"waiting"``. Colours are theme variables (legible on light and dark pages); the box keeps a
    minimum height so that a shorter message does not pull the charts below it up and down while training.
    """

    value: str  # the HTML widget's traitlet (ipywidgets has no type information)

    def __init__(self, compact: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.compact = compact
        self.kind = "waiting"
        self.headline = ""
        self._lock = threading.Lock()
        self.layout.width = "100%"
        self.layout.min_height = "96px" if compact else "150px"  # the at-init verdict with its note: no jump on Play
        self.show_text("waiting", "Press ▶ Play or Step to start training", "")

    def show(self, diagnosis: Any, note: str = "", ratio_text: str = "") -> None:
        """Show a ``Diagnosis`` (anything with kind, headline, message, fix); ``note`` is added in bold.

        ``ratio_text`` is the ratio as the message prints it: it is marked (``class='gw-ratio'``) so that a
        reader, or a test, finds the number the readout and the bars' tooltip repeat.
        """
        fix = diagnosis.fix if diagnosis.kind != "healthy" else ""
        self.show_text(diagnosis.kind, diagnosis.headline, diagnosis.message, fix, note, ratio_text)

    def show_text(
        self, kind: str, headline: str, message: str, fix: str = "", note: str = "", ratio_text: str = ""
    ) -> None:
        """Any verdict, e.g. ``("error", "Training stopped: ValueError", "the message", "what to do")``."""
        color, background = kind_text(kind), kind_background(kind)
        size = (18, 15) if self.compact else (22, 16)
        body = html.escape(message)
        marked = html.escape(ratio_text)
        if marked and marked in body:
            body = body.replace(marked, f"<b class='gw-ratio'>{marked}</b>", 1)
        parts = [
            f"<div style='font-size:{size[0]}px;font-weight:bold;color:{color}'>{html.escape(headline)}</div>",
            f"<div style='font-size:{size[1]}px;margin-top:2px'>{body}</div>",
        ]
        if fix:
            parts.append(f"<div style='font-size:{size[1]}px;margin-top:3px'><b>Try:</b> {html.escape(fix)}</div>")
        if note:
            parts.append(
                f"<div style='font-size:{size[1]}px;color:{color};margin-top:3px'><b>{html.escape(note)}</b></div>"
            )
        markup: str = (
            f"<div class='gw-text gw-banner' style='border-left:8px solid {color};background:{background};"
            f"padding:6px 12px;border-radius:4px;line-height:1.3'>{''.join(parts)}</div>"
        )
        with self._lock:
            self.kind, self.headline = kind, headline
            if markup != self.value:
                self.value = markup

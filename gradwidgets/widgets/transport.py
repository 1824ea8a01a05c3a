"""``Transport``: play, pause, step and reset buttons with a status line; the apps wire the buttons."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

__all__ = ["Transport"]


def _button(description: str, icon: str, style: str = "") -> widgets.Button:
    # FontAwesome icons (shipped with ipywidgets) rather than emoji: projector fonts lack many symbols.
    return widgets.Button(
        description=description, icon=icon, button_style=style, layout=widgets.Layout(width="auto", height="40px")
    )


class Transport(widgets.VBox):
    """Four big buttons in a 2x2 grid and ``status`` (an HTML line the app's render path writes)."""

    def __init__(self, **kwargs: Any) -> None:
        self.play_button = _button("Play", "play", "success")
        self.pause_button = _button("Pause", "pause", "warning")
        self.step_button = _button("Step", "step-forward")
        self.reset_button = _button("Reset", "refresh", "danger")
        self.status = widgets.HTML("", layout=widgets.Layout(width="100%"))
        grid = widgets.GridBox(
            [self.play_button, self.pause_button, self.step_button, self.reset_button],
            layout=widgets.Layout(grid_template_columns="1fr 1fr", grid_gap="6px", width="100%"),
        )
        kwargs.setdefault("layout", widgets.Layout(width="100%"))
        super().__init__([grid, self.status], **kwargs)

    def wire(
        self,
        play: Callable[[], None],
        pause: Callable[[], None],
        step: Callable[[], None],
        reset: Callable[[], None],
    ) -> None:
        """Connect the buttons to the app's methods."""
        self.play_button.on_click(lambda _: play())
        self.pause_button.on_click(lambda _: pause())
        self.step_button.on_click(lambda _: step())
        self.reset_button.on_click(lambda _: reset())

    def show_status(self, steps: int, playing: bool, rate: float = 0.0, extra: str = "") -> None:
        state = "<span style='color:#1a7f37'>training</span>" if playing else "paused"
        speed = f" · {rate:.0f} steps/s" if playing and rate else ""
        self.status.value = (
            f"<div style='font-size:17px;padding:4px 0'><b>step {steps}</b>{speed} · {state}{extra}</div>"
        )

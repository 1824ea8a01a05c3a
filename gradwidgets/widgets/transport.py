"""``Transport``: play, pause, step and reset buttons with a status line; the apps wire the buttons."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from .style import kind_text

__all__ = ["Transport"]


def _button(description: str, icon: str, style: str = "") -> widgets.Button:
    # FontAwesome icons (shipped with ipywidgets) rather than emoji: projector fonts lack many symbols.
    return widgets.Button(
        description=description, icon=icon, button_style=style, layout=widgets.Layout(width="auto", height="36px")
    )


class Transport(widgets.VBox):
    """Four buttons in a 2x2 grid and ``status`` (an HTML line the app's render path writes).

    The status says "training" only while the widget is connected: when the kernel is gone (restarted, shut
    down), ipywidgets marks every view ``jupyter-widgets-disconnected`` and the app's CSS swaps the state for
    "disconnected" (and stops the buttons from sending into a dead connection).
    """

    def __init__(self, **kwargs: Any) -> None:
        self.play_button = _button("Play", "play", "success")
        self.pause_button = _button("Pause", "pause", "warning")
        self.step_button = _button("Step", "step-forward")
        self.reset_button = _button("Reset", "refresh", "danger")
        # Two lines reserved: a longer status ("restarted: ...", a five-digit step) must not push the controls down.
        self.status = widgets.HTML("", layout=widgets.Layout(width="100%", min_height="52px"))
        grid = widgets.GridBox(
            [self.play_button, self.pause_button, self.step_button, self.reset_button],
            layout=widgets.Layout(grid_template_columns="1fr 1fr", grid_gap="4px", width="100%"),
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
        """``step N · speed · training|paused``, then ``extra`` (HTML, e.g. why the run restarted)."""
        state = f"<span style='color:{kind_text('healthy')}'>training</span>" if playing else "paused"
        speed = f" · {rate:.0f} steps/s" if playing and rate else ""
        self.status.value = (
            f"<div class='gw-text gw-status' style='font-size:16px;padding:2px 0'><b>step {steps}</b>"
            f"<span class='gw-state-live'>{speed} · {state}</span>"
            "<span class='gw-state-lost'> · <b>disconnected</b>: the kernel is gone; reload the page or run the "
            "cell again</span>"
            f"{extra}</div>"
        )

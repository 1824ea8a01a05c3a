"""Closing an app's widgets: every model it created (boxes, figures, marks, scales, layouts) gets its comm
closed, so a closed app leaves no live widget models behind in the kernel or the front end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ipywidgets as widgets

from ..runtime.runner import Runner

__all__ = ["RunnerApp", "close_tree", "walk_widgets"]


def walk_widgets(root: widgets.Widget) -> Iterator[widgets.Widget]:
    """``root`` and every widget reachable through its synced traits (children, marks, scales, tooltip, ...)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        yield widget
        for name in widget.keys:
            value = getattr(widget, name, None)
            values = (
                value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            )
            stack.extend(v for v in values if isinstance(v, widgets.Widget))


def close_tree(root: widgets.Widget, keep: tuple[widgets.Widget, ...] = ()) -> None:
    """Close ``root`` and everything under it, except the widgets in ``keep`` (e.g. a scale shared elsewhere)."""
    kept = {id(w) for w in keep}
    for widget in list(walk_widgets(root)):
        if id(widget) not in kept:
            widgets.Widget.close(widget)  # the base close: an app's own close() is what called us


class RunnerApp:
    """What every training app (Playground, Compare) does with its :class:`~gradwidgets.runtime.runner.Runner`
    attribute ``runner``: start it wired to the app's transport buttons, report whether it plays, surface its
    error, and close threads before widgets.

    An app provides ``_train_step`` (trainer thread), ``_snapshot`` (trainer thread, between steps),
    ``_render`` (render thread, the only chart writer), ``_show_error`` and the four transport actions.
    """

    runner: Any

    def _start_runner(self, transport: Any, *, name: str, fps: float, speed: float | None, torch_threads: int) -> None:
        """Create the runner, wire ``transport``'s buttons to play/pause/step/reset and draw the first frame."""
        self.runner = Runner(
            self._train_step,  # type: ignore[attr-defined]
            self._snapshot,  # type: ignore[attr-defined]
            self._render,  # type: ignore[attr-defined]
            self._show_error,  # type: ignore[attr-defined]
            fps=fps,
            max_steps_per_second=speed,
            torch_threads=torch_threads,
            name=name,
        )
        transport.wire(self.play, self.pause, self.step, self.reset)  # type: ignore[attr-defined]
        self.runner.request_frame()

    def pause(self) -> None:
        """Stop after the current step and redraw (a paused app shows its latest state)."""
        self.runner.pause()
        self.runner.request_frame()

    def close(self) -> None:
        """Stop and join the training threads, then close every widget of the app."""
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.close()
        close_tree(self)  # type: ignore[arg-type]

    @property
    def playing(self) -> bool:
        return self.runner.playing

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped training, if any (also shown in the banner)."""
        return self.runner.error

"""What every training app shares: its runner's wiring, pausing when nobody watches, and closing.

Closing an app's widgets: every model it created (boxes, figures, marks, scales, layouts) gets its comm
closed, so a closed app leaves no live widget models behind in the kernel or the front end.

Nobody watching, nothing trains: a :class:`~gradwidgets.widgets.heartbeat.Heartbeat` in the app beats every
5 s from each visible view. A playing app whose beats stop for ``watch_timeout`` seconds (25 s) pauses and says
"paused: nobody was watching" to whoever looks next. Before the first beat (page still loading, or no front end
at all) the allowance is ``first_watch_timeout`` (60 s). A page that asks to train at once (the dashboard's
``?play=1``) calls :meth:`RunnerApp.play_when_watched`: training starts with the first beat, so a ``curl`` of
the page never trains and a loading page's first paint does not share the CPU with training.

Controls are held to the class's limits: an app with ``controls`` and a ``session`` refuses, with a message under
the controls, a value from the page that leaves :data:`~gradwidgets.nets.cost.CLASS_LIMITS` or the kernel's memory
budget (the same check as a shared link's), whatever range the page claims its slider has.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

import ipywidgets as widgets

from ..nets.cost import check_class_change
from ..runtime.runner import Runner
from ..widgets.heartbeat import Heartbeat
from ..widgets.transport import Transport

logger = logging.getLogger(__name__)

WATCH_TIMEOUT = 25.0
"""Seconds without a beat after which a playing app pauses (beats come every 5 s from each visible view)."""
FIRST_WATCH_TIMEOUT = 60.0
"""Seconds a playing app waits for its first beat ever (page load on a busy class server)."""
UNWATCHED_NOTICE = (
    "<div class='gw-unwatched' style='background:#fff3e0;color:#3d2600;border:1px solid #f0a050;border-radius:6px;"
    "padding:6px 12px;margin:4px 0;font-size:17px'>⏸ <b>paused: nobody was watching</b> (no open page for "
    "{seconds:.0f} s, so this kernel stopped training to leave the machine to others). Press ▶ Play to go on."
    "</div>"
)

__all__ = ["FIRST_WATCH_TIMEOUT", "WATCH_TIMEOUT", "RunnerApp", "close_tree", "walk_widgets"]


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


class RunnerApp(widgets.VBox):
    """What every training app (Playground, Compare) does with its :class:`~gradwidgets.runtime.runner.Runner`
    attribute ``runner``: start it wired to the app's transport buttons, report whether it plays, surface its
    error, and close threads before widgets.

    An app provides the abstract methods below: ``_train_step`` and ``_snapshot`` (trainer thread),
    ``_render`` and ``_show_error`` (render thread) and the transport actions ``play``, ``step``, ``reset``.
    (Abstract by contract: traitlets' metaclass is not ``ABCMeta``, so a missing one raises when called.)

    It also watches for viewers (module docstring): ``heartbeat`` and ``unwatched_notice`` are put first among
    the app's children; ``watch_timeout`` / ``first_watch_timeout`` (seconds, ``None`` to never pause) may be
    set on an instance; ``paused_unwatched`` says whether the last pause was for want of viewers.
    """

    runner: Runner[Any]
    children: tuple[widgets.Widget, ...]  # (the VBox's trait, typed here for the checker)
    watch_timeout: float | None = WATCH_TIMEOUT
    first_watch_timeout: float | None = FIRST_WATCH_TIMEOUT
    paused_unwatched = False

    # ------------------------------------------------------------------ what an app provides

    @abstractmethod
    def _train_step(self) -> bool:
        """One training step (trainer thread); False pauses the runner (divergence)."""
        raise NotImplementedError

    @abstractmethod
    def _snapshot(self) -> Any:
        """A frame of the current state (trainer thread, between two steps)."""
        raise NotImplementedError

    @abstractmethod
    def _render(self, frame: Any) -> None:
        """Draw a frame (render thread)."""
        raise NotImplementedError

    @abstractmethod
    def _show_error(self, error: BaseException) -> None:
        """Show the error that stopped training (render thread)."""
        raise NotImplementedError

    @abstractmethod
    def play(self) -> None:
        """Train continuously in the background."""
        raise NotImplementedError

    @abstractmethod
    def step(self, n: int = 1) -> None:
        """Pause, then train exactly ``n`` steps."""
        raise NotImplementedError

    @abstractmethod
    def reset(self) -> None:
        """Fresh weights, step 0."""
        raise NotImplementedError

    def _start_runner(
        self, transport: Transport, *, name: str, fps: float, speed: float | None, torch_threads: int | None
    ) -> None:
        """Create the runner, wire ``transport``'s buttons to play/pause/step/reset and draw the first frame."""
        self.runner = Runner(
            self._train_step,
            self._snapshot,
            self._render,
            self._show_error,
            fps=fps,
            max_steps_per_second=speed,
            torch_threads=torch_threads,
            name=name,
        )
        transport.wire(self.play, self.pause, self.step, self.reset)
        self.runner.request_frame()
        self._start_watching(name)
        self._hold_controls_to_class_limits()

    def _hold_controls_to_class_limits(self) -> None:
        controls, session = getattr(self, "controls", None), getattr(self, "session", None)
        if controls is not None and session is not None:
            controls.guard = lambda changes: check_class_change(session.describe(), changes)

    # ------------------------------------------------------------------ nobody watching, nothing trains

    def _start_watching(self, name: str) -> None:
        self.heartbeat = Heartbeat()
        self.unwatched_notice = widgets.HTML("", layout=widgets.Layout(width="100%"))
        self.last_beat: float | None = None
        self._play_on_beat = False
        self._playing_since: float | None = None
        self._watch_stop = threading.Event()
        self.heartbeat.on_beat(self._beat)
        self.children = (self.unwatched_notice, self.heartbeat, *self.children)
        self._watchdog = threading.Thread(target=self._watch_loop, name=f"{name}-watchdog", daemon=True)
        self._watchdog.start()

    def _beat(self) -> None:
        """A front-end view is visible (kernel main thread)."""
        self.last_beat = time.monotonic()
        if self._play_on_beat:
            self._play_on_beat = False
            self.play()

    def play_when_watched(self) -> None:
        """Start training at the first heartbeat: as soon as a front end shows the app (at once if one did)."""
        if self.last_beat is not None:
            self.play()
        else:
            self._play_on_beat = True

    def _watch_loop(self, period: float = 1.0) -> None:
        while not self._watch_stop.wait(period):
            try:
                self._check_watchers(time.monotonic())
            except Exception:  # noqa: BLE001 - logged; the watchdog must outlive one bad check
                logger.exception("gradwidgets watchdog check failed")

    def _check_watchers(self, now: float) -> None:
        """Pause a playing app that nobody has seen for too long; clear the notice once it plays again."""
        runner = self.runner
        if not runner.playing or runner.closed:
            self._playing_since = None
            return
        if self._playing_since is None:
            self._playing_since = now
        if self.paused_unwatched:
            self.paused_unwatched = False
            self.unwatched_notice.value = ""
        if self.last_beat is not None and self.last_beat >= self._playing_since - (self.watch_timeout or 0):
            timeout, since = self.watch_timeout, self.last_beat
        else:
            timeout, since = self.first_watch_timeout, self._playing_since
        if timeout is None or now - since <= timeout:
            return
        logger.info("gradwidgets: nobody watched for %.0f s; pausing training", now - since)
        self.paused_unwatched = True
        self.unwatched_notice.value = UNWATCHED_NOTICE.format(seconds=now - since)
        self._playing_since = None
        self.pause()

    def pause(self) -> None:
        """Stop after the current step and redraw (a paused app shows its latest state)."""
        self._play_on_beat = False
        self.runner.pause()
        self.runner.request_frame()

    def close(self) -> None:
        """Stop and join the training threads, then close every widget of the app."""
        stop = getattr(self, "_watch_stop", None)
        if stop is not None:
            stop.set()
            if self._watchdog is not threading.current_thread():
                self._watchdog.join(5)
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.close()
        close_tree(self)

    @property
    def playing(self) -> bool:
        return self.runner.playing

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped training, if any (also shown in the banner)."""
        return self.runner.error

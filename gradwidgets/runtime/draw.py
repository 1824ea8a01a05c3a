"""``DrawThread``: a latest-frame mailbox and the thread that draws from it; the one drawing loop of the package.

Whoever produces frames (the Runner's trainer, the monitor's ``update()``) calls :meth:`DrawThread.post` and
returns at once; the draw thread takes the newest frame and calls ``draw(frame)``. Frames posted while it is
busy replace each other, so a slow front end costs frames, never the producer's time.

Errors never die in the thread: an exception in ``draw`` goes to ``on_draw_failure`` (if given) and then to
``on_error``, and errors from other threads can be handed over with :meth:`report`, so that ``on_error`` (which
shows them in a widget) always runs on the draw thread. An exception in ``on_error`` itself is logged.

With ``idle_exit`` the thread ends after that many seconds with nothing to do (the next ``post`` starts a new
one), so a finished monitor keeps no thread alive; ``on_idle`` is called every ``poll`` seconds meanwhile and
returns True while it still expects work (the monitor reads a step its loop left unread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["DrawThread"]

logger = logging.getLogger(__name__)

Frame = TypeVar("Frame")


class _Empty:
    """The mailbox holds no frame (``None`` may be a frame)."""


_EMPTY = _Empty()


class DrawThread(Generic[Frame]):
    """Draw the newest posted frame on one background thread.

    ``draw(frame)`` runs on the draw thread only; ``on_error(exc)`` too. ``idle_exit=None`` keeps the thread
    until :meth:`close` (started by :meth:`start` or the first ``post``); a number of seconds lets it end when
    idle. ``poll`` is how often an idle thread wakes to call ``on_idle`` (``None``: only when woken).
    """

    def __init__(
        self,
        draw: Callable[[Frame], None],
        *,
        name: str,
        on_error: Callable[[BaseException], None] | None = None,
        on_draw_failure: Callable[[BaseException], None] | None = None,
        on_idle: Callable[[], bool] | None = None,
        idle_exit: float | None = None,
        poll: float | None = None,
    ) -> None:
        self._draw = draw
        self._on_error = on_error
        self._on_draw_failure = on_draw_failure
        self._on_idle = on_idle
        self._idle_exit = idle_exit
        self._poll = poll
        self.name = name
        self._cond = threading.Condition()
        self._slot: Frame | _Empty = _EMPTY
        self._errors: list[BaseException] = []
        self._drawing = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.frames_drawn = 0
        """Frames ``draw`` returned from without raising."""

    # ------------------------------------------------------------------ any thread

    def start(self) -> None:
        """Start the thread now (else the first ``post`` or ``report`` starts it)."""
        with self._cond:
            self._ensure_thread()

    def post(self, frame: Frame) -> None:
        """Hand over ``frame``, replacing one not drawn yet. Never blocks on drawing."""
        with self._cond:
            if self._closed:
                return
            self._slot = frame
            self._ensure_thread()
            self._cond.notify_all()

    def report(self, error: BaseException) -> None:
        """Have ``on_error(error)`` called on the draw thread (an error from another thread, to show it)."""
        with self._cond:
            if self._closed:
                return
            self._errors.append(error)
            self._ensure_thread()
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        """A frame or an error waits, or is being drawn."""
        with self._cond:
            return self._drawing or not isinstance(self._slot, _Empty) or bool(self._errors)

    @property
    def thread(self) -> threading.Thread | None:
        """The running draw thread, if any."""
        return self._thread

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_until(self, done: Callable[[], bool], timeout: float, slice_seconds: float = 0.05) -> bool:
        """Wait until ``done()`` (checked after each frame and every ``slice_seconds``); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, slice_seconds))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (after the frame it is drawing) and join it. Idempotent; frames still waiting are dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and threading is not None and thread is not threading.current_thread():
            thread.join(timeout)  # (``threading`` is None when a widget is collected at interpreter exit)

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ the draw thread

    def _loop(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._cond:
                if isinstance(self._slot, _Empty) and not self._errors and not self._closed:
                    self._cond.wait(self._poll)
                if self._closed:
                    self._thread = None
                    return
                frame, self._slot = self._slot, _EMPTY
                errors, self._errors = self._errors, []
                nothing = isinstance(frame, _Empty) and not errors
                if nothing and self._idle_exit is not None and time.monotonic() - idle_since > self._idle_exit:
                    self._thread = None  # the next post() starts another
                    return
                self._drawing = not nothing
            try:
                if not isinstance(frame, _Empty):
                    idle_since = time.monotonic()
                    self._draw_one(frame)
                for error in errors:
                    self._show(error)
                if nothing and self._on_idle is not None and self._call_on_idle():
                    idle_since = time.monotonic()
            finally:
                with self._cond:
                    self._drawing = False
                    self._cond.notify_all()

    def _draw_one(self, frame: Frame) -> None:
        try:
            self._draw(frame)
            self.frames_drawn += 1
        except BaseException as exc:  # noqa: BLE001 - shown by on_error; a bad frame must not kill the thread
            if self._on_draw_failure is not None:
                try:
                    self._on_draw_failure(exc)
                except Exception:  # noqa: BLE001 - logged; the error itself is still shown below
                    logger.exception("%s: handling a drawing failure failed", self.name)
            self._show(exc)

    def _call_on_idle(self) -> bool:
        assert self._on_idle is not None
        try:
            return bool(self._on_idle())
        except BaseException as exc:  # noqa: BLE001 - shown like a drawing error
            self._show(exc)
            return False

    def _show(self, error: BaseException) -> None:
        if self._on_error is None:
            logger.error("error in the gradwidgets thread %s", self.name, exc_info=error)
            return
        try:
            self._on_error(error)
        except Exception:  # noqa: BLE001 - nothing left to show it with
            logger.exception("%s could not show an error; the error was: %r", self.name, error)

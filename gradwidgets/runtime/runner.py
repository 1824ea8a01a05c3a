"""``Runner``: train in a background thread and hand the latest frame to a renderer, at most ``fps`` times a second.

Two daemon threads, so the kernel stays free for widget callbacks (a looping cell would block them):

* the **trainer** calls ``step()`` while playing (or for queued single steps) and, at most ``fps`` times a
  second, ``snapshot()`` to build a frame *between* two steps, so a frame never sees a half-made step;
* the **renderer** (a :class:`~gradwidgets.runtime.draw.DrawThread`) takes the newest frame from its one-slot
  mailbox and calls ``render(frame)``. Frames that arrive while it is busy replace each other, so a slow front
  end costs frames, never training speed.

The frame rate is independent of the step rate: fast training does not mean more messages.

Errors never die in a thread: an exception in ``step``, ``snapshot`` or ``render`` is stored in
:attr:`Runner.error`, the runner pauses, and ``on_error(exc)`` is called on the render thread so the widget can
show it. ``play()`` clears the error and carries on.

Torch threads: torch's intra-op thread count is a per-thread setting (OpenMP), and the trainer sets its own
to ``torch_threads`` (default 1) without touching the kernel's main thread. Measured on this 2-core machine,
a depth-20, width-64 MLP stepped ~95 steps/s in a thread with torch's default 2 threads and ~285 steps/s with
1 (the main thread: ~280 either way); at width 256 and more the two settings were within noise of each other.
One thread also keeps several Voila kernels on one machine from oversubscribing it.

Priority (:mod:`.priority`): the trainer thread lowers its own priority to ``GRADWIDGETS_TRAINER_NICE`` (default
10, 0 turns it off), so a control click and the drawing run before this kernel's training; on a class server the
kernel's whole session also takes that niceness while it plays, so a late student's page and everyone's clicks run
before every kernel's steps (issue 21).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import torch

from ..validation import LIMITS, check_integer, check_limit
from .draw import DrawThread
from .priority import (
    DEFAULT_TRAINER_NICE,
    TRAINER_NICE_ENV,
    lower_this_threads_priority,
    trainer_nice,
    training_priority,
)

__all__ = ["DEFAULT_FPS", "DEFAULT_TRAINER_NICE", "MAX_FPS", "TRAINER_NICE_ENV", "Runner", "trainer_nice"]

logger = logging.getLogger(__name__)

MAX_FPS = LIMITS["fps"].high
"""More frames than this only cost messages: eyes and projectors do not see them."""
DEFAULT_FPS = 10.0
"""Frames per second unless asked otherwise. The bars tween between frames (bqplot's animation), so 10 frames
a second look continuous, and every frame costs each viewer's browser a few widget messages (~0.7 kB on the
wire for the bars alone, most of it Jupyter's envelope): at 10 a page stays under 20 kB/s, which a class of
20+ on one server and its network can carry."""
WAIT_TIMEOUT = 60.0
"""How long ``pause()`` and ``step()`` wait for the trainer before giving up (a step should take ms)."""

Frame = TypeVar("Frame")


class Runner(Generic[Frame]):
    """Play/pause/step a training function in a background thread, rendering its latest frame throttled.

    ``step()`` runs one training step and returns ``False`` to pause the runner itself (divergence);
    ``snapshot()`` builds a frame from the current state (called on the trainer thread, between steps);
    ``render(frame)`` draws it (called on the render thread only; what each thread writes: the table in
    :mod:`gradwidgets.runtime`).
    """

    def __init__(
        self,
        step: Callable[[], bool],
        snapshot: Callable[[], Frame],
        render: Callable[[Frame], None],
        on_error: Callable[[BaseException], None] | None = None,
        *,
        fps: float = DEFAULT_FPS,
        max_steps_per_second: float | None = None,
        torch_threads: int | None = 1,
        name: str = "gradwidgets",
    ) -> None:
        self.fps: float = check_limit("fps", fps)
        self.max_steps_per_second = max_steps_per_second
        if torch_threads is not None:
            torch_threads = check_integer("torch_threads", torch_threads, 1, 1024)
        self._step_fn = step
        self._snapshot_fn = snapshot
        self._torch_threads = torch_threads
        self._nice = trainer_nice()
        self._priority = training_priority()
        self._counted_as_playing = False
        self._cond = threading.Condition()
        self._playing = False
        self._pending = 0
        self._busy = False
        self._dirty = False
        self._stopping = False
        self._last_snapshot = -math.inf
        self.error: BaseException | None = None
        self.steps_taken = 0
        self.frames_built = 0
        self._rate = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self._drawer: DrawThread[Frame] = DrawThread(
            render, name=f"{name}-renderer", on_error=on_error, on_draw_failure=self._render_failed
        )
        self._drawer.start()
        self._renderer = self._drawer.thread
        self._trainer = threading.Thread(target=self._train_loop, name=f"{name}-trainer", daemon=True)
        self._trainer.start()

    # ------------------------------------------------------------------ control (any thread)

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def closed(self) -> bool:
        return self._stopping

    @property
    def max_steps_per_second(self) -> float | None:
        """Training speed limit (``None``: as fast as possible). Slow motion for explaining a run."""
        return self._max_steps_per_second

    @max_steps_per_second.setter
    def max_steps_per_second(self, value: float | None) -> None:
        self._max_steps_per_second: float | None = check_limit("max_steps_per_second", value, allow_none=True)
        if hasattr(self, "_cond"):
            with self._cond:
                self._cond.notify_all()

    @property
    def frames_rendered(self) -> int:
        """Frames ``render`` drew without raising."""
        return self._drawer.frames_drawn

    @property
    def step_rate(self) -> float:
        """Measured training steps per second over the last ~second of playing."""
        return self._rate

    def play(self) -> None:
        """Train continuously. Clears a stored error (the widget shows it until the next frame)."""
        with self._cond:
            self._check_open()
            self.error = None
            self._playing = True
            self._rate_mark = (time.monotonic(), self.steps_taken)
            self._cond.notify_all()

    def pause(self) -> None:
        """Stop after the current step; returns once the trainer is idle (from any thread but the trainer)."""
        with self._cond:
            self._playing = False
            self._pending = 0
            self._cond.notify_all()
            if threading.current_thread() is not self._trainer:
                self._wait_idle()

    def step(self, n: int = 1, wait: bool = True) -> None:
        """Pause, then run exactly ``n`` steps on the trainer thread (waiting for them unless ``wait=False``)."""
        n = check_limit("n", n, limit="runner_steps")
        with self._cond:
            self._check_open()
            self.error = None
            self._playing = False
            self._pending += n
            self._cond.notify_all()
            if wait and threading.current_thread() is not self._trainer:
                self._wait_idle()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` while the trainer is idle (paused, between steps); for resets and rebuilds."""
        with self._cond:
            was_playing = self._playing
            self._playing = False
            self._pending = 0
            if threading.current_thread() is not self._trainer:
                self._wait_idle()
            try:
                return fn()
            finally:
                self._playing = was_playing and not self._stopping
                self._dirty = True
                self._cond.notify_all()

    def clear_error(self) -> None:
        """Forget a stored error (after a reset: the state that caused it is gone)."""
        with self._cond:
            self.error = None

    def request_frame(self) -> None:
        """Draw the current state soon (within one frame interval), e.g. after a toggle or while paused."""
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    def close(self, timeout: float = WAIT_TIMEOUT) -> None:
        """Stop both threads and join them. Idempotent."""
        with self._cond:
            self._stopping = True
            self._playing = False
            self._pending = 0
            self._cond.notify_all()
        if self._trainer is not threading.current_thread():
            self._trainer.join(timeout)
        self._drawer.close(timeout)

    @property
    def threads(self) -> tuple[threading.Thread, threading.Thread]:
        assert self._renderer is not None  # started in __init__
        return self._trainer, self._renderer

    def _check_open(self) -> None:
        if self._stopping:
            raise RuntimeError("this runner is closed; make a new widget to train again")

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + WAIT_TIMEOUT
        while (self._busy or self._pending) and not self._stopping and self._trainer.is_alive():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the training thread did not finish its step within {WAIT_TIMEOUT:g} s")
            self._cond.wait(remaining)

    # ------------------------------------------------------------------ trainer thread

    def _train_loop(self) -> None:
        lower_this_threads_priority(self._nice)  # first: torch's worker threads inherit it
        if self._torch_threads is not None:
            torch.set_num_threads(self._torch_threads)
        next_step_at = 0.0
        while True:
            with self._cond:
                action = self._next_action(next_step_at)
                counted = self._counted_as_playing
                if action is None or action == "idle":
                    self._counted_as_playing = False
                elif action == "step" and self._playing and not self._pending and not counted:
                    self._counted_as_playing = True
                    action = "start"
                else:
                    self._busy = True
                    if action == "step" and self._pending:
                        self._pending -= 1
            if action is None or action == "idle" or action == "start":
                # outside the lock: a write may wait for Linux's rate (up to ~1 s) and pause() must not
                if action == "start":
                    self._priority.started()
                elif counted:
                    self._priority.stopped()
                if action is None:
                    return
                continue
            try:
                if action == "step":
                    keep_playing = self._step_fn()
                    now = time.monotonic()
                    limit = self._max_steps_per_second
                    next_step_at = now + 1.0 / limit if limit else 0.0
                    with self._cond:
                        self.steps_taken += 1
                        self._dirty = True
                        if keep_playing is False:
                            self._playing = False
                            self._pending = 0
                if self._dirty and time.monotonic() - self._last_snapshot >= 1.0 / self.fps:
                    self._publish()
            except BaseException as exc:  # noqa: BLE001 - stored, reported in the widget, runner pauses
                self._fail(exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _next_action(self, next_step_at: float) -> str | None:
        """Wait (holding the condition) until there is a step to run or a frame to build; None to stop."""
        while True:
            if self._stopping:
                return None
            now = time.monotonic()
            wants_step = self._pending > 0 or (self._playing and self.error is None)
            if self._counted_as_playing and not (self._playing and self.error is None):
                return "idle"
            if wants_step and (self._pending > 0 or now >= next_step_at):
                return "step"
            frame_due = self._last_snapshot + 1.0 / self.fps
            if self._dirty and now >= frame_due:
                return "snapshot"
            timeouts = []
            if wants_step:
                timeouts.append(next_step_at - now)
            if self._dirty:
                timeouts.append(frame_due - now)
            self._cond.wait(max(min(timeouts), 0.0) if timeouts else None)

    def _publish(self) -> None:
        now = time.monotonic()
        self._update_rate(now)
        with self._cond:
            self._dirty = False
            self._last_snapshot = now
        frame = self._snapshot_fn()
        with self._cond:
            self.frames_built += 1
        self._drawer.post(frame)

    def _update_rate(self, now: float) -> None:
        start, steps = self._rate_mark
        if not self._playing:
            self._rate = 0.0
            self._rate_mark = (now, self.steps_taken)
        elif now - start >= 1.0:
            self._rate = (self.steps_taken - steps) / (now - start)
            self._rate_mark = (now, self.steps_taken)

    def _fail(self, exc: BaseException) -> None:
        logger.debug("training thread failed", exc_info=exc)
        with self._cond:
            self.error = exc
            self._playing = False
            self._pending = 0
            self._cond.notify_all()
        self._drawer.report(exc)  # on_error runs on the render thread, like render

    # ------------------------------------------------------------------ render thread

    def _render_failed(self, exc: BaseException) -> None:
        """``render`` raised: keep the error and pause (the draw thread then shows it with ``on_error``)."""
        logger.debug("rendering a frame failed", exc_info=exc)
        with self._cond:
            self.error = exc
            self._playing = False
            self._pending = 0
            self._cond.notify_all()

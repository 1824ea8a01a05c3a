"""CPU priority on a shared machine: training yields to page loads, clicks and drawing.

Two levels, because Linux schedules in two:

* **Threads within a process**: the trainer thread raises its own niceness (Linux keeps one per thread) to
  ``GRADWIDGETS_TRAINER_NICE`` (default :data:`DEFAULT_TRAINER_NICE`, 0 turns it off), so the kernel's main thread
  (control clicks) and its render thread run before its own training.
* **Sessions against each other**: with the scheduler's *autogroups* (on by default in desktop and server kernels,
  ``/proc/sys/kernel/sched_autogroup_enabled``) CPU time is first shared fairly between *sessions*, and a thread's
  niceness only counts inside its session. Jupyter starts every kernel in a session of its own, so a trainer at
  niceness 19 in one kernel still got as much CPU as a new student's whole kernel next to it: measured on this 2-core
  machine, four niceness-19 spinners and two niceness-0 ones in separate sessions got 1.33-1.39 s of CPU each in 4 s;
  in one session the niceness-0 ones got 3.9 s and the others 0.06-0.09 s. The niceness that counts between kernels is
  the session's (``/proc/<pid>/autogroup``). On a class server (the dashboard server sets :data:`SHARED_SERVER_ENV`
  for its kernels) a kernel therefore gives its *session* the niceness ``GRADWIDGETS_SESSION_NICE`` (default
  :data:`DEFAULT_SESSION_NICE`, 0 turns it off) while it trains, and takes it back when paused
  (:class:`TrainingPriority`), so a late student's kernel, which is not training yet, and the server run before
  everyone's steps (a niceness-19 session weighs 15 against a niceness-0 one's 1024: 19 training students together
  weigh less than a third of one page being opened). Any niceness from 0 to 19 may be written without privilege, up or
  down (only below 0 needs it); the kernel allows one write per 100 ms machine-wide (``EAGAIN``), so writes retry.

Nothing here may stop training: where Linux has no such notion, or refuses, it logs and carries on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = [
    "DEFAULT_SESSION_NICE",
    "DEFAULT_TRAINER_NICE",
    "SESSION_NICE_ENV",
    "SHARED_SERVER_ENV",
    "TRAINER_NICE_ENV",
    "TrainingPriority",
    "lower_this_threads_priority",
    "niceness_from_env",
    "session_nice",
    "session_nice_while_training",
    "set_session_nice",
    "trainer_nice",
    "training_priority",
    "write_session_nice",
]

logger = logging.getLogger(__name__)

TRAINER_NICE_ENV = "GRADWIDGETS_TRAINER_NICE"
DEFAULT_TRAINER_NICE = 10
"""The trainer's niceness (0-19; higher yields more): 10 lets interactive work win over training (a niceness-0
thread weighs ~9x a niceness-10 one) without starving it: on an otherwise idle machine it trains as fast."""
SESSION_NICE_ENV = "GRADWIDGETS_SESSION_NICE"
DEFAULT_SESSION_NICE = 19
"""A training kernel's session niceness on a class server: training runs on the CPU no page, click or frame wants;
on an idle machine it trains as fast as at 0."""
SHARED_SERVER_ENV = "GRADWIDGETS_SHARED_SERVER"
"""Set to ``1`` by the dashboard server for its kernels: a training kernel also lowers its session's priority."""
WRITE_INTERVAL = 0.11
"""Linux accepts one autogroup write per 100 ms machine-wide (unprivileged); a refused write waits this long."""
WRITE_ATTEMPTS = 10


def trainer_nice(environ: Mapping[str, str] | None = None) -> int:
    """The trainer thread's niceness from ``GRADWIDGETS_TRAINER_NICE`` (0-19; unset: the default; a bad value is
    logged and the default used)."""
    return niceness_from_env(TRAINER_NICE_ENV, DEFAULT_TRAINER_NICE, environ)


def session_nice_while_training(environ: Mapping[str, str] | None = None) -> int:
    """A training kernel's session niceness from ``GRADWIDGETS_SESSION_NICE`` (0-19, 0: off; unset or bad: the
    default)."""
    return niceness_from_env(SESSION_NICE_ENV, DEFAULT_SESSION_NICE, environ)


def niceness_from_env(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    """A niceness (0-19) from the environment variable ``name``; unset: ``default``; a bad value is logged."""
    raw = str((os.environ if environ is None else environ).get(name, "")).strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        logger.warning("%s should be a whole number from 0 to 19, got %r; using %d", name, raw, default)
        return default
    return value


def lower_this_threads_priority(nice: int) -> None:
    """Set the calling thread's niceness to ``nice`` unless it is already higher (Linux: per thread)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        thread = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, thread) < nice:
            os.setpriority(os.PRIO_PROCESS, thread, nice)
    except OSError as error:  # not permitted, or no such notion here: train at the normal priority
        logger.debug("could not lower the trainer thread's priority: %s", error)


def _autogroup(pid: int | None) -> Path:
    return Path("/proc", "self" if pid is None else str(int(pid)), "autogroup")


def session_nice(pid: int | None = None) -> int | None:
    """The niceness of ``pid``'s session (``None``: this process), or ``None`` where there is no such notion."""
    try:
        text = _autogroup(pid).read_text()
    except OSError:
        return None
    words = text.split()
    try:
        return int(words[words.index("nice") + 1])
    except (ValueError, IndexError):
        return None


def set_session_nice(nice: int, pid: int | None = None, *, attempts: int = WRITE_ATTEMPTS,
                     sleep: Callable[[float], object] = time.sleep) -> bool:
    """Give ``pid``'s session (``None``: this process's) the niceness ``nice`` (0-19). True if it now has it.

    Retries while Linux refuses for its machine-wide rate (``EAGAIN``); False, logged, where there is no autogroup
    file, the process is gone, or the write is not permitted. Blocks up to ``attempts`` x 0.11 s: call it where a
    wait is harmless (the trainer thread), or use :func:`write_session_nice` once from an event loop."""
    if not 0 <= nice <= 19:
        raise ValueError(f"nice must be a whole number from 0 to 19, got {nice!r}")
    for attempt in range(max(1, attempts)):
        outcome = write_session_nice(nice, pid)
        if outcome is not None:
            return outcome
        if attempt + 1 < attempts:
            sleep(WRITE_INTERVAL)
    logger.debug("session niceness %d for %s: still refused after %d attempts", nice, pid or "self", attempts)
    return False


def write_session_nice(nice: int, pid: int | None = None) -> bool | None:
    """One write of ``pid``'s session niceness: True done, False impossible (logged), None refused for the rate
    (try again in :data:`WRITE_INTERVAL`)."""
    try:
        with open(_autogroup(pid), "w") as autogroup:
            autogroup.write(str(int(nice)))
        return True
    except BlockingIOError:
        return None
    except OSError as error:  # no autogroups, process gone, not ours
        logger.debug("could not set the session niceness of %s to %d: %s", pid or "self", nice, error)
        return False


class TrainingPriority:
    """This process's session niceness while any of its trainers plays (a count: a dashboard has several).

    ``started()`` by a trainer that begins to play, ``stopped()`` when it pauses; the first start lowers the
    session to ``nice``, the last stop restores 0. Off (does nothing) unless ``enabled``."""

    def __init__(self, nice: int, enabled: bool, write: Callable[[int], bool] = set_session_nice) -> None:
        self.nice = nice
        self.enabled = enabled and nice > 0
        self._write = write
        self._playing = 0
        self._lock = threading.Lock()

    @property
    def playing(self) -> int:
        return self._playing

    def started(self) -> None:
        with self._lock:
            self._playing += 1
            if self._playing == 1 and self.enabled:
                self._write(self.nice)

    def stopped(self) -> None:
        with self._lock:
            if self._playing == 0:
                return
            self._playing -= 1
            if self._playing == 0 and self.enabled:
                self._write(0)


_process_priority: TrainingPriority | None = None
_process_lock = threading.Lock()


def training_priority(environ: Mapping[str, str] | None = None) -> TrainingPriority:
    """The process-wide :class:`TrainingPriority`, enabled on a class server (:data:`SHARED_SERVER_ENV` = 1)."""
    global _process_priority
    with _process_lock:
        if _process_priority is None:
            environ = os.environ if environ is None else environ
            _process_priority = TrainingPriority(
                session_nice_while_training(environ), str(environ.get(SHARED_SERVER_ENV, "")).strip() == "1"
            )
        return _process_priority

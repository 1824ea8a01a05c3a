"""Run a server (Voila) as a child and stop it, and everything it started, on SIGINT, SIGTERM or SIGHUP.

What goes wrong without this (measured): ``kill <pid>`` of the CLI left Voila and its kernels serving,
reparented to PID 1; a terminal Ctrl-C reached Voila directly and printed its KeyboardInterrupt traceback; a
job started in the background (SIGINT ignored, as a non-interactive shell does) could not be interrupted at
all; temporary folders stayed behind. So:

* the child runs in a session of its own: the terminal's Ctrl-C goes to us only, and we ask the child to stop
  with SIGTERM, which Voila handles cleanly (it shuts every kernel down, then removes its connection folder);
* our handlers for SIGINT, SIGTERM and SIGHUP are installed explicitly, so SIGINT works even when the shell
  started us with it ignored (a handler, unlike an ignored signal, is not inherited by the child);
* kernels run in sessions of their own too, so the process tree is recorded while the server runs (psutil)
  and whatever outlives a grace period is killed: a server that hangs cannot leave kernels behind;
* the child's ``TMPDIR`` is a folder of ours, removed at the end, so nothing it writes to temp survives;
* its log passes through us: once a stop was asked for, the one traceback ipykernel prints when it is shut
  down mid-cell (a preheated kernel still starting: the reply goes to a socket already closed, ``ZMQError``)
  is dropped, and so are two notices that are true and harmless here (:data:`HARMLESS_NOTICES`; the CLI says
  why in one line when it starts). Every other line, tracebacks included, is passed on unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

import psutil

__all__ = ["HARMLESS_NOTICES", "STOP_SIGNALS", "run_supervised", "temporary_root"]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_SECONDS = 20.0
"""How long the server may take to shut its kernels down before what is left is killed."""
POLL_SECONDS = 0.5
HARMLESS_NOTICES = (
    "is not trusted",  # Voila: the dashboard notebook has no signature; it runs only gradwidgets' own code
    "Kernel is running over TCP without encryption",  # ipykernel: kernels listen on loopback, messages signed
)
"""Log lines dropped on every start (a newcomer reads them as something gone wrong)."""


@contextlib.contextmanager
def temporary_root(prefix: str = "gradwidgets-") -> Iterator[Path]:
    """A temp folder for everything the server writes (its ``TMPDIR``), removed on the way out."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _descendants(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _end(processes: Sequence[psutil.Process], timeout: float) -> None:
    """SIGTERM, then SIGKILL what is still alive after ``timeout`` (psutil checks the PIDs were not reused)."""
    alive = [p for p in processes if p.is_running()]
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(alive, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


class ShutdownNoiseFilter:
    """Pass log lines on, except a kernel's ``Exception in message handler`` block ending in ``ZMQError`` once
    ``stopping`` is set (see the module docstring). Lines of a block are held until its last line decides."""

    START = "Exception in message handler"
    NOISE = "zmq.error.ZMQError"

    def __init__(self, write: Callable[[str], object]) -> None:
        self.write = write
        self.stopping = False
        self._held: list[str] = []

    def feed(self, line: str) -> None:
        if self._held:
            self._held.append(line)
            if line.startswith((" ", "\t", "Traceback")) or not line.strip():
                return
            held, self._held = self._held, []
            if not line.startswith(self.NOISE):
                for item in held:
                    self.write(item)
            return
        if self.stopping and self.START in line:
            self._held = [line]
            return
        self.write(line)

    def close(self) -> None:
        for item in self._held:
            self.write(item)
        self._held = []


def without_harmless_notices(write: Callable[[str], object]) -> Callable[[str], object]:
    """``write``, except for lines carrying one of :data:`HARMLESS_NOTICES`."""

    def filtered(line: str) -> object:
        if any(notice in line for notice in HARMLESS_NOTICES):
            return None
        return write(line)

    return filtered


def _pump(stream: IO[str], noise: ShutdownNoiseFilter) -> None:
    try:
        for line in stream:
            noise.feed(line)
        noise.close()
    except Exception:  # noqa: BLE001 - the log is a convenience; never let it take the supervisor down
        logger.exception("could not forward the server's log")


def _write_stderr(line: str) -> None:
    sys.stderr.write(line)
    sys.stderr.flush()


def run_supervised(command: Sequence[str], env: dict[str, str], grace: float = GRACE_SECONDS) -> int:
    """Run ``command`` until it exits or we get a stop signal; then make sure it and its descendants are gone.

    Returns the child's exit status, or 0 when a stop signal ended it (stopping on request is not an error).
    Call from the main thread (signal handlers live there).
    """
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        child = subprocess.Popen(
            list(command),
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
        noise = ShutdownNoiseFilter(without_harmless_notices(_write_stderr))
        pump = threading.Thread(target=_pump, args=(child.stdout, noise), name="gradwidgets-server-log", daemon=True)
        pump.start()
        tree: dict[int, psutil.Process] = {}
        try:
            parent = psutil.Process(child.pid)
        except psutil.Error:
            parent = None
        while child.poll() is None and not received:
            if parent is not None:
                tree.update((p.pid, p) for p in _descendants(parent))
            time.sleep(POLL_SECONDS)
        if parent is not None:
            tree.update((p.pid, p) for p in _descendants(parent))
        noise.stopping = True
        if child.poll() is None:
            logger.info("stopping the server (signal %s)", received[0] if received else "?")
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)  # Voila: stop the loop, shut the kernels down, clean up
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                logger.warning("the server did not stop within %.0f s; killing it", grace)
                child.kill()
                child.wait(timeout=10)
        _end(list(tree.values()), timeout=5)
        pump.join(5)
        return 0 if received else int(child.returncode or 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


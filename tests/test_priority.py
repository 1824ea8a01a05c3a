"""gradwidgets.runtime.priority: a training kernel's session yields to page loads and clicks on a class server.

Session niceness is written in child processes started in sessions of their own (as Jupyter starts kernels): a
write in this process would change the niceness of the shell that runs the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gradwidgets.runtime import priority
from gradwidgets.runtime.priority import (
    DEFAULT_SESSION_NICE,
    SESSION_NICE_ENV,
    SHARED_SERVER_ENV,
    WRITE_INTERVAL,
    TrainingPriority,
    set_session_nice,
    training_priority,
)
from gradwidgets.runtime.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
HAS_AUTOGROUPS = Path("/proc/self/autogroup").exists()
needs_autogroups = pytest.mark.skipif(not HAS_AUTOGROUPS, reason="this kernel has no scheduler autogroups")


def run_in_own_session(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> dict:
    """Run ``code`` in a new Python in a session of its own; it prints one JSON line, returned parsed."""
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout,
        start_new_session=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


@needs_autogroups
def test_a_session_niceness_goes_up_and_back_down_without_privilege() -> None:
    seen = run_in_own_session("""
        import json, time
        from gradwidgets.runtime.priority import session_nice, set_session_nice
        seen = [session_nice()]
        seen.append(set_session_nice(10)); seen.append(session_nice())
        seen.append(set_session_nice(0)); seen.append(session_nice())
        print(json.dumps(seen))
    """)
    assert seen == [0, True, 10, True, 0]


def test_a_write_refused_for_linuxs_rate_is_retried_and_an_impossible_one_is_not(monkeypatch) -> None:
    outcomes = [None, None, True]
    writes, sleeps = [], []

    def write(nice: int, pid: int | None = None) -> bool | None:
        writes.append((nice, pid))
        return outcomes.pop(0)

    monkeypatch.setattr(priority, "write_session_nice", write)
    assert set_session_nice(7, 1234, sleep=sleeps.append) is True
    assert writes == [(7, 1234)] * 3 and sleeps == [WRITE_INTERVAL] * 2
    writes.clear()
    sleeps.clear()
    monkeypatch.setattr(priority, "write_session_nice", lambda nice, pid=None: writes.append(nice) or False)
    assert set_session_nice(7, sleep=sleeps.append) is False
    assert writes == [7] and sleeps == []
    with pytest.raises(ValueError, match="nice must be a whole number from 0 to 19"):
        set_session_nice(-1)


def test_a_missing_process_or_autogroup_file_is_false_not_an_error() -> None:
    assert set_session_nice(5, pid=2**22 + 12345, attempts=1) is False
    assert priority.session_nice(pid=2**22 + 12345) is None


def test_the_first_trainer_to_play_lowers_the_session_and_the_last_to_pause_restores_it() -> None:
    writes: list[int] = []
    playing = TrainingPriority(10, enabled=True, write=lambda nice: writes.append(nice) or True)
    playing.started()
    playing.started()
    playing.stopped()
    assert writes == [10] and playing.playing == 1
    playing.stopped()
    playing.stopped()  # one too many: ignored
    assert writes == [10, 0] and playing.playing == 0
    for off in (TrainingPriority(10, enabled=False, write=writes.append),
                TrainingPriority(0, enabled=True, write=writes.append)):
        off.started()
        off.stopped()
    assert writes == [10, 0]


def test_only_a_class_servers_kernels_lower_their_session(monkeypatch) -> None:
    monkeypatch.setattr(priority, "_process_priority", None)
    assert not training_priority({}).enabled
    monkeypatch.setattr(priority, "_process_priority", None)
    assert training_priority({SHARED_SERVER_ENV: "1", SESSION_NICE_ENV: "12"}).enabled
    assert training_priority().nice == 12  # one per process
    monkeypatch.setattr(priority, "_process_priority", None)
    assert training_priority({SHARED_SERVER_ENV: "1"}).nice == DEFAULT_SESSION_NICE == 19
    monkeypatch.setattr(priority, "_process_priority", None)
    assert not training_priority({SHARED_SERVER_ENV: "1", SESSION_NICE_ENV: "0"}).enabled


class CountingPriority:
    def __init__(self) -> None:
        self.events: list[str] = []

    def started(self) -> None:
        self.events.append("started")

    def stopped(self) -> None:
        self.events.append("stopped")


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_runner_counts_as_playing_from_play_to_pause_error_or_close(monkeypatch) -> None:
    counted = CountingPriority()
    monkeypatch.setattr("gradwidgets.runtime.runner.training_priority", lambda: counted)
    failing = {"now": False}

    def step() -> bool:
        if failing["now"]:
            raise RuntimeError("boom")
        time.sleep(0.001)
        return True

    runner = Runner(step, lambda: None, lambda frame: None)
    try:
        runner.step(3)  # single steps are not "playing": a click, not training
        assert counted.events == []
        runner.play()
        wait_for(lambda: counted.events == ["started"])
        runner.pause()
        wait_for(lambda: counted.events == ["started", "stopped"])
        runner.play()
        wait_for(lambda: len(counted.events) == 3)
        failing["now"] = True  # an error pauses the runner: it stops counting
        wait_for(lambda: len(counted.events) == 4)
        failing["now"] = False
        runner.play()
        wait_for(lambda: len(counted.events) == 5)
    finally:
        runner.close()
    assert counted.events == ["started", "stopped"] * 2 + ["started", "stopped"]


@needs_autogroups
def test_a_class_servers_kernel_trains_at_the_trainer_niceness_and_pauses_back_to_normal() -> None:
    seen = run_in_own_session("""
        import json, time
        from gradwidgets.runtime.priority import session_nice
        from gradwidgets.runtime.runner import Runner

        def wait_for(value):
            deadline = time.monotonic() + 20
            while session_nice() != value and time.monotonic() < deadline:
                time.sleep(0.02)
            return session_nice()

        runner = Runner(lambda: time.sleep(0.001) or True, lambda: None, lambda frame: None)
        seen = [session_nice()]
        runner.play(); seen.append(wait_for(10))
        runner.pause(); seen.append(wait_for(0))
        runner.close()
        print(json.dumps(seen))
    """, env={SHARED_SERVER_ENV: "1", SESSION_NICE_ENV: "10"})
    assert seen == [0, 10, 0]

"""The trainer thread yields to the interactive ones (issue 21, fair CPU): its niceness is raised, the kernel's main
thread and the render thread keep theirs. Read from the kernel's own bookkeeping (/proc, field 19 of a task's
stat), not from our code."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gradwidgets.runtime.runner import DEFAULT_TRAINER_NICE, TRAINER_NICE_ENV, Runner, trainer_nice

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread priority is Linux's")


def niceness(native_id: int) -> int:
    stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[16])  # field 19; fields 1-2 end at the ")"


def started_runner() -> Runner:
    runner: Runner = Runner(lambda: True, lambda: 0, lambda frame: None)
    runner.step(2)  # the trainer has run its loop (and set its priority) once this returns
    return runner


def test_the_trainer_thread_yields_and_the_main_and_render_threads_do_not(monkeypatch) -> None:
    monkeypatch.delenv(TRAINER_NICE_ENV, raising=False)
    main_before = niceness(threading.get_native_id())
    runner = started_runner()
    try:
        trainer, renderer = runner.threads
        assert niceness(trainer.native_id) == max(DEFAULT_TRAINER_NICE, main_before)
        assert os.getpriority(os.PRIO_PROCESS, trainer.native_id) == niceness(trainer.native_id)
        assert niceness(threading.get_native_id()) == main_before
        assert niceness(renderer.native_id) == main_before
    finally:
        runner.close()


def test_the_setting_turns_it_off_or_changes_it(monkeypatch) -> None:
    main = niceness(threading.get_native_id())
    for value, expected in (("0", main), ("15", 15)):
        monkeypatch.setenv(TRAINER_NICE_ENV, value)
        runner = started_runner()
        try:
            assert niceness(runner.threads[0].native_id) == expected
        finally:
            runner.close()


def test_a_bad_setting_is_named_and_the_default_used(caplog) -> None:
    for raw in ("-5", "20", "high"):
        caplog.clear()
        assert trainer_nice({TRAINER_NICE_ENV: raw}) == DEFAULT_TRAINER_NICE
        assert TRAINER_NICE_ENV in caplog.text and "0 to 19" in caplog.text
    assert trainer_nice({}) == DEFAULT_TRAINER_NICE
    assert trainer_nice({TRAINER_NICE_ENV: " 7 "}) == 7


def test_a_playgrounds_training_runs_at_the_lower_priority() -> None:
    import gradwidgets as gw
    from gradwidgets.testing import recording_comm

    with recording_comm():
        pg = gw.Playground(depth=3, width=8, batch_size=16, n_samples=64)
        try:
            pg.step(1)
            trainer, renderer = pg.runner.threads
            main = niceness(threading.get_native_id())
            assert niceness(trainer.native_id) == max(DEFAULT_TRAINER_NICE, main)
            assert niceness(renderer.native_id) == main
        finally:
            pg.close()

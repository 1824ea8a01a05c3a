"""Runner: background stepping, one-slot frames throttled to fps, errors stored and reported, clean close.

Timing-dependent behaviour is asserted with generous margins (counts, never durations), waiting for events
with ``wait_until`` instead of sleeping a fixed time.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from gradwidgets.runtime.runner import MAX_FPS, Runner
from gradwidgets.testing import wait_until


class Recorder:
    """A fake training run: counts steps, snapshots, frames and reported errors."""

    def __init__(self, fail_step_at: int | None = None, fail_render: bool = False, stop_at: int | None = None):
        self.steps = 0
        self.frames: list[int] = []
        self.errors: list[BaseException] = []
        self.fail_step_at = fail_step_at
        self.fail_render = fail_render
        self.stop_at = stop_at
        self.torch_threads: list[int] = []
        self.step_threads: set[str] = set()

    def step(self) -> bool:
        self.steps += 1
        self.step_threads.add(threading.current_thread().name)
        self.torch_threads.append(torch.get_num_threads())
        if self.fail_step_at is not None and self.steps == self.fail_step_at:
            raise ValueError("boom in step")
        return self.stop_at is None or self.steps < self.stop_at

    def snapshot(self) -> int:
        return self.steps

    def render(self, frame: int) -> None:
        if self.fail_render:
            raise RuntimeError("boom in render")
        self.frames.append(frame)

    def on_error(self, error: BaseException) -> None:
        self.errors.append(error)


def make(recorder: Recorder, **kwargs) -> Runner:
    return Runner(recorder.step, recorder.snapshot, recorder.render, recorder.on_error, **kwargs)


@pytest.fixture
def runs():
    made: list[Runner] = []
    yield made
    for runner in made:
        runner.close()


def test_step_runs_exactly_n_steps_on_the_trainer_thread(runs):
    fake = Recorder()
    runner = make(fake)
    runs.append(runner)
    runner.step(3)
    assert fake.steps == 3 and runner.steps_taken == 3
    assert fake.step_threads == {"gradwidgets-trainer"}
    assert wait_until(lambda: fake.frames and fake.frames[-1] == 3)


def test_play_steps_until_pause_and_pause_stops_steps(runs):
    fake = Recorder()
    runner = make(fake)
    runs.append(runner)
    runner.play()
    assert wait_until(lambda: fake.steps > 50)
    runner.pause()
    stopped_at = fake.steps
    time.sleep(0.2)
    assert fake.steps == stopped_at
    assert not runner.playing


def test_frames_are_throttled_independently_of_the_step_rate(runs):
    fake = Recorder()
    runner = make(fake, fps=10)
    runs.append(runner)
    start = time.monotonic()
    runner.play()
    assert wait_until(lambda: fake.steps > 2000 and time.monotonic() - start > 0.5)
    runner.pause()
    elapsed = time.monotonic() - start
    time.sleep(0.3)  # the last frame after the pause
    assert len(fake.frames) <= 10 * (elapsed + 0.3) + 3
    assert fake.steps > 20 * len(fake.frames)
    assert fake.frames[-1] == fake.steps, "the final state is drawn after a pause"


def test_fps_is_capped_and_validated():
    for bad in (0, -1, MAX_FPS + 1, float("nan"), "30", True):
        with pytest.raises(ValueError, match="fps"):
            Runner(lambda: True, lambda: 0, lambda _: None, fps=bad)
    with pytest.raises(ValueError, match="torch_threads"):
        Runner(lambda: True, lambda: 0, lambda _: None, torch_threads=0)


def test_speed_limit_caps_the_step_rate(runs):
    fake = Recorder()
    runner = make(fake, max_steps_per_second=20)
    runs.append(runner)
    start = time.monotonic()
    runner.play()
    time.sleep(0.5)
    runner.pause()
    assert 1 <= fake.steps <= 20 * (time.monotonic() - start) + 3
    with pytest.raises(ValueError, match="max_steps_per_second"):
        runner.max_steps_per_second = 0


def test_error_in_step_is_stored_reported_and_pauses(runs):
    fake = Recorder(fail_step_at=5)
    runner = make(fake)
    runs.append(runner)
    runner.play()
    assert wait_until(lambda: fake.errors)
    assert isinstance(runner.error, ValueError) and fake.errors[0] is runner.error
    assert not runner.playing
    assert all(t.is_alive() for t in runner.threads), "an error pauses the runner; it does not kill it"
    runner.play()
    assert runner.error is None
    assert wait_until(lambda: fake.steps > 10)


def test_error_in_render_is_stored_and_reported(runs):
    fake = Recorder(fail_render=True)
    runner = make(fake)
    runs.append(runner)
    runner.step()
    assert wait_until(lambda: fake.errors)
    assert isinstance(runner.error, RuntimeError) and "render" in str(runner.error)


def test_step_returning_false_pauses_the_runner(runs):
    fake = Recorder(stop_at=7)
    runner = make(fake)
    runs.append(runner)
    runner.play()
    assert wait_until(lambda: not runner.playing)
    time.sleep(0.1)
    assert fake.steps == 7


def test_close_joins_both_threads_and_refuses_more_work():
    fake = Recorder()
    runner = make(fake, name="gw-close-test")
    runner.play()
    assert wait_until(lambda: fake.steps > 5)
    runner.close()
    assert not any(t.is_alive() for t in runner.threads)
    assert not [t for t in threading.enumerate() if t.name.startswith("gw-close-test")]
    with pytest.raises(RuntimeError, match="closed"):
        runner.play()
    runner.close()  # idempotent


def test_trainer_uses_its_own_torch_thread_count(runs):
    main_threads = torch.get_num_threads()
    fake = Recorder()
    runner = make(fake, torch_threads=1)
    runs.append(runner)
    runner.step(2)
    assert fake.torch_threads == [1, 1]
    assert torch.get_num_threads() == main_threads


def test_call_runs_between_steps_and_keeps_playing(runs):
    fake = Recorder()
    runner = make(fake)
    runs.append(runner)
    runner.play()
    assert wait_until(lambda: fake.steps > 10)
    seen = []
    runner.call(lambda: seen.append(fake.steps))
    assert seen and runner.playing
    assert wait_until(lambda: fake.steps > seen[0] + 10)


def test_request_frame_draws_while_paused(runs):
    fake = Recorder()
    runner = make(fake)
    runs.append(runner)
    runner.request_frame()
    assert wait_until(lambda: fake.frames == [0])

"""DrawThread: the newest frame wins, errors reach on_error on the draw thread, an idle thread ends and comes back."""

import threading
import time

from gradwidgets.runtime.draw import DrawThread
from gradwidgets.testing import wait_until


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.frames: list[int] = []
        self.threads: set[str] = set()
        self.errors: list[tuple[str, str]] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def draw(self, frame: int) -> None:
        self.entered.set()
        self.gate.wait(5)
        self.threads.add(threading.current_thread().name)
        if frame < 0:
            raise ValueError(f"bad frame {frame}")
        time.sleep(self.delay)
        self.frames.append(frame)

    def on_error(self, error: BaseException) -> None:
        self.errors.append((threading.current_thread().name, str(error)))


def test_frames_posted_while_drawing_replace_each_other_and_the_newest_is_drawn():
    seen = Recorder()
    drawer = DrawThread(seen.draw, name="test-draw", on_error=seen.on_error)
    try:
        seen.gate.clear()
        drawer.post(0)
        assert seen.entered.wait(5), "the draw thread took frame 0 and is stuck drawing it"
        for frame in range(1, 50):
            drawer.post(frame)  # never blocks, although the draw thread is stuck
        seen.gate.set()
        assert drawer.wait_until(lambda: not drawer.busy, timeout=5)
        assert seen.frames[0] == 0 and seen.frames[-1] == 49 and len(seen.frames) <= 3
        assert drawer.frames_drawn == len(seen.frames) and seen.threads == {"test-draw"}
    finally:
        drawer.close()
    assert drawer.thread is None or not drawer.thread.is_alive()


def test_errors_are_shown_on_the_draw_thread_and_it_keeps_drawing():
    seen = Recorder()
    failures: list[str] = []
    drawer = DrawThread(
        seen.draw, name="test-draw", on_error=seen.on_error, on_draw_failure=lambda exc: failures.append(str(exc))
    )
    try:
        drawer.post(-1)
        assert wait_until(lambda: len(seen.errors) == 1)
        drawer.report(RuntimeError("from the trainer"))
        assert wait_until(lambda: len(seen.errors) == 2)
        drawer.post(7)
        assert wait_until(lambda: seen.frames == [7])
        assert seen.errors == [("test-draw", "bad frame -1"), ("test-draw", "from the trainer")]
        assert failures == ["bad frame -1"], "only a drawing failure goes to on_draw_failure"
        assert drawer.frames_drawn == 1
    finally:
        drawer.close()


def test_an_error_in_on_error_is_logged_not_lost(caplog):
    def broken(error: BaseException) -> None:
        raise RuntimeError("no widget to show it")

    drawer = DrawThread(lambda frame: None, name="test-draw", on_error=broken)
    try:
        drawer.report(ValueError("original"))
        assert wait_until(lambda: "original" in caplog.text)
        drawer.post(1)
        assert wait_until(lambda: drawer.frames_drawn == 1), "the thread survived"
    finally:
        drawer.close()


def test_an_idle_thread_ends_and_the_next_post_starts_another():
    seen = Recorder()
    calls: list[float] = []
    drawer = DrawThread(seen.draw, name="test-draw", on_idle=lambda: bool(calls.append(1)), idle_exit=0.3, poll=0.05)
    try:
        drawer.post(1)
        first = drawer.thread
        assert first is not None and wait_until(lambda: seen.frames == [1])
        assert wait_until(lambda: drawer.thread is None, timeout=3) and wait_until(lambda: not first.is_alive())
        assert len(calls) >= 3, "on_idle is polled while idle"
        drawer.post(2)
        assert drawer.thread is not None and drawer.thread is not first
        assert wait_until(lambda: seen.frames == [1, 2])
    finally:
        drawer.close()


def test_on_idle_returning_true_keeps_the_thread():
    expecting = [True]
    drawer = DrawThread(lambda frame: None, name="test-draw", on_idle=lambda: expecting[0], idle_exit=0.2, poll=0.05)
    try:
        drawer.post(1)
        time.sleep(0.6)
        assert drawer.thread is not None and drawer.thread.is_alive()
        expecting[0] = False
        assert wait_until(lambda: drawer.thread is None, timeout=3)
    finally:
        drawer.close()


def test_close_joins_and_later_posts_are_ignored():
    seen = Recorder()
    drawer = DrawThread(seen.draw, name="test-draw")
    drawer.start()
    thread = drawer.thread
    drawer.close()
    assert thread is not None and not thread.is_alive()
    drawer.post(3)
    drawer.report(RuntimeError("late"))
    assert drawer.thread is None and seen.frames == [] and drawer.closed

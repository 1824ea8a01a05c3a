"""``gradwidgets watch`` for real: the command, Voila, a kernel, headless Chromium, and a script writing the run.

The bars must grow while the background script appends records (its gradients grow 25 % a record): the run's own
step in its banner advances, the numbers the bars are drawn from grow with it, and the bars grow on screen. The
status line is not used for this: it reads the file directly and advanced even when the views had stopped
following. Stopping the command the way a terminal (Ctrl-C: SIGINT to the foreground process group) or a service
manager (SIGTERM to the group) does must leave no process of its tree behind (checked with psutil on the tree
recorded while it ran).
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from _browser import Page, headless_chromium
from _servers import ARTIFACTS, ROOT, Server, free_port, server_environment

pytestmark = [pytest.mark.browser]

HERE = Path(__file__).resolve().parent


def start_writer(path: Path, interval: float = 0.3) -> subprocess.Popen[str]:
    """The writer, holding after its first record until :func:`release` (the page then sees the growth from step 2,
    however long the server took to start)."""
    writer = subprocess.Popen(
        [sys.executable, str(HERE / "_watch_writer.py"), str(path), "--interval", str(interval), "--hold"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=server_environment({"PYTHONPATH": str(ROOT)}),
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    return writer


def release(writer: subprocess.Popen[str]) -> None:
    assert writer.stdin is not None
    writer.stdin.write("go\n")
    writer.stdin.flush()


@dataclass
class Sample:
    step: int  # the step the run's banner shows (-1: none yet)
    values: list[float]  # what the bars are drawn from
    heights: list[float]  # their pixel heights
    ticks: list[str]


def sample(page: Page) -> Sample:
    found = re.search(r"\bstep (\d+)\b", page.page.locator(".gw-banner").first.inner_text())
    return Sample(int(found.group(1)) if found else -1, page.bar_values(), page.heights(), page.tick_labels())


def assert_bars_grow(samples: list[Sample]) -> None:
    """The run's step advances, the bars' numbers grow with it, and the bars grow on screen."""
    steps = [s.step for s in samples]
    assert steps == sorted(steps) and len(set(steps)) >= 6, steps  # the views follow the newest record
    peaks = [max(s.values) for s in samples]
    assert all(math.isfinite(p) for p in peaks), peaks
    assert peaks == sorted(peaks) and len(set(peaks)) >= 6, peaks  # the numbers drawn grow, record after record
    assert peaks[-1] >= 3 * peaks[0], peaks  # at 25 % a record, five records are 3x
    pairs = list(zip(samples, samples[1:], strict=False))
    taller = [b for a, b in pairs if a.ticks == b.ticks and sum(b.heights) > sum(a.heights) + 1]
    moved = [b for a, b in pairs if a.heights != b.heights or a.ticks != b.ticks]
    # On screen: bars get taller on an unchanged axis, and the picture changes (taller bars or a wider axis).
    assert taller and len(moved) >= 3, [(s.step, [round(h) for h in s.heights], s.ticks[-3:]) for s in samples]


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigterm-cli"])
def test_watch_follows_a_growing_run_then_stops_without_leftovers(how: str, tmp_path: Path) -> None:
    run = tmp_path / "live.gwrun"
    writer = start_writer(run)
    port = free_port()
    command = [sys.executable, "-m", "gradwidgets", "watch", str(run), "--no-browser", "--port", str(port)]
    server = Server(command, port, ARTIFACTS / f"watch-{how}.log",
                    env=server_environment({"PYTHONPATH": str(ROOT)}))
    processes: list[psutil.Process] = []
    try:
        server.wait_listening(timeout=90)
        with headless_chromium() as browser:
            page = Page(browser, server)
            page.wait_for_bars(count=7)
            processes = tree(server.process.pid)  # the CLI, Voila and the page's kernel
            assert any("ipykernel" in " ".join(p.cmdline()) for p in processes), [p.cmdline() for p in processes]
            samples = [sample(page)]
            release(writer)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and len({s.step for s in samples}) < 8:
                page.page.wait_for_timeout(400)
                samples.append(sample(page))
            assert_bars_grow(samples)
            follow = page.page.get_by_role("button", name=re.compile("Follow"))
            assert "mod-active" in (follow.get_attribute("class") or ""), "Follow was switched off"
            page.assert_no_errors()
            page.screenshot(f"watch-{how}")
            page.page.close()
        processes = tree(server.process.pid)
        if how == "ctrl-c":
            os.killpg(server.process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        elif how == "sigterm":
            os.killpg(server.process.pid, signal.SIGTERM)  # a service manager stopping the whole group
        else:
            os.kill(server.process.pid, signal.SIGTERM)  # `kill PID` of the gradwidgets command alone
        server.process.wait(timeout=40)
        gone, alive = psutil.wait_procs(processes, timeout=20)
        assert not alive, f"left behind after {how}: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        server.stop()
        writer.kill()
        writer.wait()
        for process in processes:  # never leave a stray process, even when the test failed
            if process.is_running():
                process.kill()

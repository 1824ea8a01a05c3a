"""``gradwidgets watch`` for real: the command, Voila, a kernel, headless Chromium, and a script writing the run.

The bars must move while the background script appends records, and stopping the command the way a terminal
(Ctrl-C: SIGINT to the foreground process group) or a service manager (SIGTERM to the group) does must leave no
process of its tree behind (checked with psutil on the tree recorded while it ran).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from _browser import Page, headless_chromium
from _servers import ARTIFACTS, ROOT, Server, chromium_path, free_port, server_environment

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium"),
]

HERE = Path(__file__).resolve().parent


def start_writer(path: Path, interval: float = 0.3) -> subprocess.Popen[str]:
    writer = subprocess.Popen(
        [sys.executable, str(HERE / "_watch_writer.py"), str(path), "--interval", str(interval)],
        stdout=subprocess.PIPE, text=True, env=server_environment({"PYTHONPATH": str(ROOT)}),
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    return writer


def shown_step(page: Page) -> int:
    found = re.search(r"step (\d+) ·", page.page.locator(".gw-dashboard").inner_text())
    return int(found.group(1)) if found else -1


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
            before = page.wait_for_bars(count=7)
            first_step = shown_step(page)
            processes = tree(server.process.pid)  # the CLI, Voila and the page's kernel
            assert any("ipykernel" in " ".join(p.cmdline()) for p in processes), [p.cmdline() for p in processes]
            steps, means = [first_step], [sum(before) / len(before)]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(set(steps)) < 6:
                page.page.wait_for_timeout(400)
                steps.append(shown_step(page))
                heights = page.heights()
                means.append(sum(heights) / len(heights))
            assert steps == sorted(steps) and len(set(steps)) >= 6, steps  # new records keep arriving on screen
            assert all(m > 0 for m in means), means  # bars drawn at every sample
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

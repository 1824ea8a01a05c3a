"""Nobody watching, nothing trains - for real: Voila and JupyterLab servers, headless Chromium, psutil.

* Voila: a page plays a depth-20 sigmoid net; the browser is SIGKILLed (no unload, no beacon): within 60 s its
  kernel's CPU is idle (the heartbeat stopped, the app paused) and soon after the kernel is gone (culled for
  want of a connection, whatever its traffic). A plain GET of ``?play=1`` (no browser at all) does not hold a
  kernel for long either. Every URL the page requested is logged: none leaves 127.0.0.1.
* JupyterLab: a notebook plays a Playground; closing the notebook's tab idles the kernel within 60 s.
* Notebook 7: the same notebook in its own browser tab; closing that tab idles the kernel within 60 s.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import nbformat
import psutil
import pytest
from _servers import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    NOTEBOOKS,
    Server,
    chromium_path,
    free_port,
    kernel_processes,
    voila_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IDLE_CPU_PERCENT = 5.0
BUSY_CPU_PERCENT = 25.0
NUMBERS: dict[str, Any] = {}
BARS_DRAWN = (
    "() => [...document.querySelectorAll('.bqplot .bargroup rect')].some(r => +r.getAttribute('height') > 1)"
)


def kernels_of(server: Server) -> dict[int, psutil.Process]:
    return {p.pid: p for p in kernel_processes(server.process.pid)}


def cpu_percent(process: psutil.Process, seconds: float = 2.0) -> float | None:
    """CPU use over ``seconds`` (None if the process is gone)."""
    try:
        process.cpu_percent(None)
        time.sleep(seconds)
        return process.cpu_percent(None)
    except psutil.Error:
        return None


def busiest_kernel(server: Server, timeout: float = 60.0) -> psutil.Process:
    """The kernel that trains (pool kernels wait idle)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kernels = list(kernels_of(server).values())
        for process in kernels:
            process.cpu_percent(None)
        time.sleep(2.0)
        usage = [(p.cpu_percent(None), p) for p in kernels if p.is_running()]
        if usage:
            best = max(usage, key=lambda pair: pair[0])
            if best[0] > BUSY_CPU_PERCENT:
                return best[1]
    raise AssertionError("no kernel is training")


def seconds_until_idle(process: psutil.Process, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        usage = cpu_percent(process)
        if usage is None or usage < IDLE_CPU_PERCENT:
            return time.monotonic() - started
    raise AssertionError(f"kernel {process.pid} still uses {usage}% CPU after {timeout:.0f}s")


def seconds_until_gone(process: psutil.Process, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
            return time.monotonic() - started
        time.sleep(1.0)
    raise AssertionError(f"kernel {process.pid} still running after {timeout:.0f}s")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A browser this test may SIGKILL: closing it afterwards must not fail the test."""
    import playwright.sync_api as playwright_api

    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            with contextlib.suppress(Exception):
                browser.close()


def kill_browsers() -> int:
    """SIGKILL every Chromium process this test process started (what a crash or a closed lid looks like)."""
    killed = 0
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "chrom" in process.name().lower():
                process.kill()
                killed += 1
    return killed


def test_voila_page_killed_while_playing_idles_then_frees_its_kernel(tmp_path: Path) -> None:
    server = voila_server(NOTEBOOKS / "dashboard.ipynb", log_name="voila-nobody-watching.log")
    requested: list[str] = []
    try:
        server.wait_listening()
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            started = time.monotonic()
            page.goto(server.url + "?activation=sigmoid&depth=20&play=1", timeout=180_000)
            page.locator(".bqplot").first.wait_for(timeout=180_000)
            page.wait_for_function(BARS_DRAWN, timeout=120_000)
            NUMBERS["voila_first_bars_s"] = round(time.monotonic() - started, 2)
            page.wait_for_timeout(8000)  # several heartbeats reach the kernel
            kernel = busiest_kernel(server)
            # A GET without any browser, asking to play at once: it must not hold a kernel for long either.
            # The pool's waiting kernel is the one the GET takes (the pool refills with a new one afterwards).
            headless = [p for pid, p in kernels_of(server).items() if pid != kernel.pid]
            assert len(headless) == 1
            with urllib.request.urlopen(server.url + "?depth=20&activation=sigmoid&play=1", timeout=180) as reply:
                assert reply.status == 200
            assert kill_browsers() >= 1
            killed_at = time.monotonic()
            idle_after = seconds_until_idle(kernel, timeout=60)
            NUMBERS["voila_browser_killed_to_idle_s"] = round(idle_after, 1)
            gone_after = seconds_until_gone(kernel, timeout=120 - (time.monotonic() - killed_at))
            NUMBERS["voila_browser_killed_to_kernel_gone_s"] = round(time.monotonic() - killed_at, 1)
            assert gone_after >= 0
            for process in headless:  # the curl's kernel (the pool hands out one, taken at GET time)
                seconds_until_gone(process, timeout=150)
            NUMBERS["voila_get_without_browser_kernel_gone_s"] = round(time.monotonic() - killed_at, 1)
        log = server.log()
        assert "no page connected" in log  # culled by the disconnected rule, not the 15-minute idle one
        foreign = sorted({u for u in requested if urlparse(u).hostname not in ("127.0.0.1", "localhost")
                          and not u.startswith(("data:", "blob:"))})
        NUMBERS["voila_requests_logged"] = len(requested)
        assert requested and not foreign, foreign
    finally:
        server.stop()
        (ARTIFACTS / "nobody-watching.json").write_text(json.dumps(NUMBERS, indent=2))
        (ARTIFACTS / "voila-requests.txt").write_text("\n".join(requested))


PLAYGROUND_NOTEBOOK = """import gradwidgets as gw
pg = gw.Playground(activation="sigmoid", depth=20, autoplay=True)
pg"""


def write_playground_notebook(folder: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(PLAYGROUND_NOTEBOOK)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(folder / "watch.ipynb"))


def notebook_frontend(app: str, root: Path, log_name: str, *options: str) -> Server:
    """``jupyter lab`` or ``jupyter notebook`` (7) over ``root`` on a free port: no token, no browser."""
    port = free_port()
    command = [
        sys.executable, "-m", "jupyter", app, "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0", "--allow-root", "--IdentityProvider.token=", "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}", *options,
    ]
    return Server(command, port, ARTIFACTS / log_name, cwd=root)


def run_first_cell(page: Any, url: str) -> None:
    """Open the notebook, wait for its kernel, run the Playground cell, wait for its chart."""
    page.goto(url, timeout=180_000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=180_000)
    page.wait_for_timeout(8000)  # the kernel starts and connects
    page.locator(".jp-Cell .cm-content").first.click()
    page.keyboard.press("Shift+Enter")
    page.locator(".jp-OutputArea .bqplot").first.wait_for(timeout=180_000)
    page.wait_for_timeout(8000)


def test_jupyterlab_tab_closed_while_playing_idles_the_kernel(tmp_path: Path) -> None:
    write_playground_notebook(tmp_path)
    server = notebook_frontend(
        "lab", tmp_path, "jupyterlab-nobody-watching.log",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    )
    try:
        server.wait_listening(timeout=90)
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            run_first_cell(page, server.url + "lab/tree/watch.ipynb")
            kernel = busiest_kernel(server)
            # Close the notebook's tab (not the browser): JupyterLab keeps the kernel running on purpose.
            page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.jp-mod-current .lm-TabBar-tabCloseIcon").click()
            dialog = page.locator(".jp-Dialog")
            with contextlib.suppress(Exception):
                dialog.wait_for(timeout=5000)
                page.locator(".jp-Dialog-button", has_text="Discard").or_(
                    page.locator(".jp-Dialog-button", has_text="Don't Save")
                ).first.click()
            page.locator(".jp-Notebook").first.wait_for(state="detached", timeout=30_000)
            closed_at = time.monotonic()
            idle_after = seconds_until_idle(kernel, timeout=60)
            NUMBERS["lab_tab_closed_to_idle_s"] = round(idle_after, 1)
            assert kernel.is_running()  # paused, not killed: the user can reopen the notebook and press Play
            assert time.monotonic() - closed_at < 65
    finally:
        server.stop()
        (ARTIFACTS / "nobody-watching-lab.json").write_text(json.dumps(NUMBERS, indent=2))


def test_notebook7_tab_closed_while_playing_idles_the_kernel(tmp_path: Path) -> None:
    pytest.importorskip("notebook", minversion="7", reason="Notebook 7 (pip install notebook>=7)")
    write_playground_notebook(tmp_path)
    server = notebook_frontend("notebook", tmp_path, "notebook7-nobody-watching.log")
    try:
        server.wait_listening(timeout=90)
        with chromium() as browser:
            tree = browser.new_page(viewport={"width": 1400, "height": 900})  # the file browser tab stays open
            tree.goto(server.url + "tree", timeout=180_000)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            run_first_cell(page, server.url + "notebooks/watch.ipynb")
            kernel = busiest_kernel(server)
            page.close()  # Notebook 7 gives each notebook a browser tab; closing it keeps the kernel running
            closed_at = time.monotonic()
            idle_after = seconds_until_idle(kernel, timeout=60)
            NUMBERS["notebook7_tab_closed_to_idle_s"] = round(idle_after, 1)
            assert kernel.is_running()  # paused, not killed: reopening the notebook finds the app paused
            assert time.monotonic() - closed_at < 65
            tree.close()
    finally:
        server.stop()
        (ARTIFACTS / "nobody-watching-notebook7.json").write_text(json.dumps(NUMBERS, indent=2))

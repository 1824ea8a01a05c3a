"""Serve a training Playground with its "distributions" section open (Voila), scroll to the section in headless
Chromium, screenshot it and check that its four charts draw finite lines.

    python benchmarks/screenshot_distributions.py --out /tmp/distributions.png [--theme dark] [--width 1280]

Exits non-zero when a check fails. Look at the PNG.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _servers import CHROMIUM_ARGS, chromium_path  # noqa: E402 - the flags the browser tests use
from screenshot_playground import free_port, notebook_with, wait_for_server  # noqa: E402

APP = (
    'app = gw.Playground(activation="sigmoid", depth=8, width=32)\n'
    "app.distributions.toggle.value = True\n"
    "app.play()\n"
    "app"
)
# Each chart's line paths: bqplot draws one <path class="line"> per layer; a NaN would print "NaN" into "d".
PATHS_JS = """
() => Array.from(document.querySelectorAll('.gw-distributions .bqplot')).map(fig => {
    const title = fig.querySelector('text.mainheading');
    const paths = Array.from(fig.querySelectorAll('path.line')).map(p => p.getAttribute('d') || '');
    return {title: title ? title.textContent : '', paths: paths.filter(d => d.length > 0).length,
            nan: paths.some(d => d.includes('NaN'))};
})
"""


def write_notebook(folder: Path) -> Path:
    return notebook_with(folder, APP, "distributions.ipynb")


def check(charts: list[dict]) -> list[str]:
    problems = []
    if len(charts) != 4:
        problems.append(f"expected 4 distribution charts, found {len(charts)}")
    for chart in charts:
        if "none yet" in chart["title"] or chart["paths"] == 0:
            problems.append(f"chart {chart['title']!r} draws no line")
        if chart["nan"]:
            problems.append(f"chart {chart['title']!r} has NaN in a line")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "gradwidgets-distributions.png"))
    parser.add_argument("--theme", choices=("light", "dark"), default="light")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the drawn charts")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    port = free_port()
    charts: list[dict] = []
    messages: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        notebook = write_notebook(Path(folder))
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        command = [sys.executable, "-m", "voila", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"]
        command += ["--show_tracebacks=True", f"--theme={args.theme}", notebook.name]
        server = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_for_server(url, server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": args.width, "height": args.height})
                    page.on("console", lambda m: messages.append(m.text) if m.type == "error" else None)
                    page.goto(url, timeout=180_000)
                    deadline = time.monotonic() + args.timeout
                    while time.monotonic() < deadline:
                        charts = page.evaluate(PATHS_JS)
                        if len(charts) == 4 and not check(charts):
                            break
                        time.sleep(1.0)
                    time.sleep(2.0)  # a few more readings: the update:data lines grow
                    charts = page.evaluate(PATHS_JS)
                    section = page.locator(".gw-distributions").first
                    section.scroll_into_view_if_needed()
                    page.evaluate("() => document.querySelector('.gw-distributions').scrollIntoView()")
                    page.screenshot(path=args.out)
                finally:
                    browser.close()
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    problems = check(charts)
    broken = [m for m in messages if "Could not create a view" in m or "Error setting state" in m]
    if broken:
        problems.append(f"{len(broken)} widget errors in the browser console, e.g. {broken[0]}")
    for chart in charts:
        print(f"{chart['title']}: {chart['paths']} lines")
    print(f"screenshot: {args.out}")
    for problem in problems:
        print("FAIL:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

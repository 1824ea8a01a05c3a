"""Serve a live Playground (or Compare / GradientMonitor) with Voila, open it in headless Chromium, screenshot it,
and check that the bars are drawn with finite heights and move.

    python benchmarks/screenshot_playground.py --out /tmp/playground.png [--app compare] [--width 1280]

Exits non-zero when a check fails. Look at the PNG: it is what a projector shows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _servers import CHROMIUM_ARGS, chromium_path  # noqa: E402 - the flags the browser tests use

APPS = {
    "playground": 'app = gw.Playground(activation="sigmoid", depth=20)\napp.play()\napp',
    "compare": (
        'app = gw.Compare([dict(activation="sigmoid", depth=12), dict(activation="relu", init="kaiming", depth=12)])\n'
        "app.play()\napp"
    ),
    "rnn": 'app = gw.Playground(kind="rnn", seq_len=30)\napp.play()\napp',
    "monitor": (
        "import threading, torch\n"
        "from torch import nn\n"
        "model = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 4)\n"
        "app = gw.GradientMonitor(model)\n"
        "def loop():\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=0.01)\n"
        "    for _ in range(3000):\n"
        "        loss = model(torch.randn(16, 8, 32)).pow(2).mean()\n"
        "        opt.zero_grad(); loss.backward(); app.update(loss); opt.step()\n"
        "threading.Thread(target=loop, daemon=True).start()\n"
        "app"
    ),
}
BAR_HEIGHTS_JS = """
() => Array.from(document.querySelectorAll('g.bargroup rect.bar')).map(r => {
    const h = r.getAttribute('height');
    return h === null ? null : parseFloat(h);
})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(folder: Path, app: str) -> Path:
    return notebook_with(folder, APPS[app], "app.ipynb")


def notebook_with(folder: Path, source: str, name: str) -> Path:
    """A notebook that imports this checkout's gradwidgets and then runs ``source`` (what Voila renders)."""
    cells = [f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport gradwidgets as gw", source]
    notebook = {
        "cells": [
            {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": cell}
            for cell in cells
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = folder / name
    path.write_text(json.dumps(notebook))
    return path


def wait_for_server(url: str, server: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"voila exited with code {server.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read(1)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"voila did not answer at {url} within {timeout:g} s")


def check_heights(first: list, second: list) -> list[str]:
    problems = []
    if not first:
        problems.append("no bars found in the page")
    bad = [h for h in first + second if h is None or not math.isfinite(h) or h < 0]
    if bad:
        problems.append(f"{len(bad)} bar heights are not finite: {bad[:5]}")
    if first and first == second:
        problems.append("bar heights did not change between two readings: the bars do not move")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", choices=sorted(APPS), default="playground")
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "gradwidgets-playground.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the first bars")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds of training before the screenshot")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        notebook = write_notebook(Path(folder), args.app)
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        command = [sys.executable, "-m", "voila", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"]
        command += ["--show_tracebacks=True", notebook.name]
        server = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_for_server(url, server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": args.width, "height": args.height})
                messages: list[str] = []
                page.on("console", lambda m: messages.append(f"{m.type}: {m.text}") if m.type == "error" else None)
                page.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))
                started = time.monotonic()
                page.goto(url, timeout=180_000)
                try:
                    page.wait_for_selector("g.bargroup rect.bar", state="attached", timeout=args.timeout * 1000)
                except Exception:
                    page.screenshot(path=args.out, full_page=True)
                    print(f"no bars after {args.timeout:g} s; screenshot of the page: {args.out}")
                    print(page.inner_text("body")[:3000])
                    raise
                print(f"first bars after {time.monotonic() - started:.1f} s")
                time.sleep(args.settle)
                first = page.evaluate(BAR_HEIGHTS_JS)
                time.sleep(1.5)
                second = page.evaluate(BAR_HEIGHTS_JS)
                page.screenshot(path=args.out, full_page=True)
                browser.close()
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    problems = check_heights(first, second)
    broken = [m for m in messages if "Could not create a view" in m or "Error setting state" in m]
    if broken:
        problems.append(f"{len(broken)} widget errors in the browser console, e.g. {broken[0]}")
    print(f"{len(first)} bars; heights {first[:6]}... then {second[:6]}...")
    print(f"screenshot: {args.out}")
    for message in messages[:10]:
        print("browser", message)
    for problem in problems:
        print("FAIL:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

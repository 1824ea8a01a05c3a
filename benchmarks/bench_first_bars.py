"""Time from navigation to the first gradient bars on screen, as a visitor of ``gradwidgets dashboard`` sees it.

A real Voila server started as the CLI starts it (preheated kernel pool of 1) and headless Chromium; each of the
5 loads is a fresh browser context (empty cache, like a new student), separated by a pause long enough for the
pool to refill (as when students arrive a few seconds apart). Two times per load: the dashboard painted (its
Play button visible) and bars with a height drawn. Every page draws the at-initialization bars without a
click; the query (default: none, the page a class link opens) may preset a scenario, e.g.
``"activation=sigmoid&depth=20&play=1"`` (a preset builds its net after the visitor arrives; ``play=1`` then
starts training at the page's first heartbeat).

With ``--busy N`` the visitor is the late student of a class: N browserless students (the capacity benchmark's
clients, ``bench_class_capacity.Student``) are already playing a depth-20 sigmoid net on the same server. Each
load then also times a control: the "skip connections" box clicked until the bars are redrawn; and the busy
students' slowest steps/s during the loads is printed. Targets (issue 21): first bars <= 3 s, a toggle redrawn
<= 0.5 s, while 19 others keep >= 10 steps/s. Numbers mean something only on a machine nobody else is using.

Run: ``flock /tmp/gw-heavy.lock python benchmarks/bench_first_bars.py [query] [loads] [--busy 19]``.
Target: median <= 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _servers import CHROMIUM_ARGS, NOTEBOOKS, chromium_path, voila_server  # noqa: E402

BARS_DRAWN = (
    "() => [...document.querySelectorAll('.bqplot .bargroup rect')].some(r => +r.getAttribute('height') > 1)"
)
REFILL_S = 15.0


class BusyClass:
    """N browserless students playing on ``url``, on an asyncio loop of their own (a background thread)."""

    def __init__(self, url: str, count: int) -> None:
        from bench_class_capacity import PRESET, Student

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="busy-class", daemon=True)
        self.thread.start()
        self.students = []
        for _ in range(count):
            student = Student(url + PRESET)
            asyncio.run_coroutine_threadsafe(student.join(), self.loop).result(timeout=600)
            self.students.append(student)
            print(f"busy student {len(self.students)}/{count} playing", flush=True)

    def slowest_rate(self, start: float, end: float) -> float:
        return min((s.rate(start, end) for s in self.students), default=float("nan"))

    def close(self) -> None:
        for student in self.students:
            self.loop.call_soon_threadsafe(student.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def toggle_latency(page: object, timeout_ms: int = 60_000) -> float:
    """Seconds from a click on "skip connections" to bars whose heights changed (the net was rebuilt)."""
    heights = "() => [...document.querySelectorAll('.bqplot .bargroup rect')].map(r => r.getAttribute('height'))"
    before = page.evaluate(heights)  # type: ignore[attr-defined]
    box = page.locator(".gw-app .widget-checkbox", has_text="skip connections").first  # type: ignore[attr-defined]
    started = time.monotonic()
    box.locator("input").click()
    page.wait_for_function(f"(before) => JSON.stringify(({heights})()) !== JSON.stringify(before)",  # type: ignore
                           arg=before, timeout=timeout_ms)
    return time.monotonic() - started


def main(query: str, loads: int, busy: int = 0) -> None:
    import playwright.sync_api as playwright_api

    server = voila_server(NOTEBOOKS / "dashboard.ipynb", log_name="bench-first-bars.log", max_kernels=busy + 4)
    painted, bars, toggles = [], [], []
    crowd: BusyClass | None = None
    try:
        server.wait_listening()
        if busy:
            crowd = BusyClass(server.url, busy)
        time.sleep(REFILL_S)
        measured_from = time.monotonic()
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            for load in range(loads):
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                page.route(r"re:^https?://(?!127\.0\.0\.1[:/])", lambda route: route.abort())
                started = time.monotonic()
                page.goto(server.url + (f"?{query}" if query else ""), wait_until="commit", timeout=180_000)
                page.get_by_role("button", name="Play").first.wait_for(timeout=180_000)
                painted.append(time.monotonic() - started)
                page.wait_for_function(BARS_DRAWN, timeout=180_000)
                bars.append(time.monotonic() - started)
                print(f"load {load + 1}: dashboard {painted[-1]:.2f} s, first bars {bars[-1]:.2f} s", flush=True)
                if busy:
                    toggles.append(toggle_latency(page))
                    print(f"  toggle redrawn {toggles[-1]:.2f} s", flush=True)
                page.goto("about:blank")  # the beacon shuts this visitor's kernel down
                context.close()
                time.sleep(REFILL_S)
            browser.close()
        if crowd is not None:
            print(f"busy students: slowest {crowd.slowest_rate(measured_from, time.monotonic()):.1f} steps/s "
                  f"during the loads (target >= 10)")
    finally:
        if crowd is not None:
            crowd.close()
        server.stop()
    print(f"\nquery {query!r}, {loads} fresh loads, preheated pool of 1, this machine ({ROOT.name}):")
    print(f"  dashboard painted: median {statistics.median(painted):.2f} s (min {min(painted):.2f}, "
          f"max {max(painted):.2f})")
    print(f"  first bars:        median {statistics.median(bars):.2f} s (min {min(bars):.2f}, max {max(bars):.2f})"
          f"   target <= 3 s")
    if toggles:
        print(f"  toggle redrawn:    median {statistics.median(toggles):.2f} s (max {max(toggles):.2f})"
              f"   target <= 0.5 s, with {busy} others playing")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("query", nargs="?", default="")
    parser.add_argument("loads", nargs="?", type=int, default=5)
    parser.add_argument("--busy", type=int, default=0, help="students already playing (browserless)")
    arguments = parser.parse_args()
    main(arguments.query, arguments.loads, arguments.busy)

"""Time from navigation to the first gradient bars on screen, as a visitor of ``gradwidgets dashboard`` sees it.

A real Voila server started as the CLI starts it (preheated kernel pool of 1) and headless Chromium; each of the
5 loads is a fresh browser context (empty cache, like a new student), separated by a pause long enough for the
pool to refill (as when students arrive a few seconds apart). Two times per load: the dashboard painted (its
Play button visible) and bars with a height drawn. Every page draws the at-initialization bars without a
click; the query (default: none, the page a class link opens) may preset a scenario, e.g.
``"activation=sigmoid&depth=20&play=1"`` (a preset builds its net after the visitor arrives; ``play=1`` then
starts training at the page's first heartbeat).

Run: ``flock /tmp/gw-heavy.lock python benchmarks/bench_first_bars.py [query] [loads]``. Target: median <= 3 s.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _servers import CHROMIUM_ARGS, NOTEBOOKS, chromium_path, voila_server  # noqa: E402

BARS_DRAWN = (
    "() => [...document.querySelectorAll('.bqplot .bargroup rect')].some(r => +r.getAttribute('height') > 1)"
)
REFILL_S = 15.0


def main(query: str, loads: int) -> None:
    import playwright.sync_api as playwright_api

    server = voila_server(NOTEBOOKS / "dashboard.ipynb", log_name="bench-first-bars.log")
    painted, bars = [], []
    try:
        server.wait_listening()
        time.sleep(REFILL_S)
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
                page.goto("about:blank")  # the beacon shuts this visitor's kernel down
                context.close()
                time.sleep(REFILL_S)
            browser.close()
    finally:
        server.stop()
    print(f"\nquery {query!r}, {loads} fresh loads, preheated pool of 1, this machine ({ROOT.name}):")
    print(f"  dashboard painted: median {statistics.median(painted):.2f} s (min {min(painted):.2f}, "
          f"max {max(painted):.2f})")
    print(f"  first bars:        median {statistics.median(bars):.2f} s (min {min(bars):.2f}, max {max(bars):.2f})"
          f"   target <= 3 s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "", int(sys.argv[2]) if len(sys.argv) > 2 else 5)

"""How many people can one 2-core machine serve? One Voila server (``gradwidgets dashboard``'s options), N
headless Chromium tabs on the dashboard, each training a depth-20 sigmoid net (``?activation=sigmoid&depth=20
&play=1``). For each N: every tab's steps/s (read from the page's own status line over a window), and each
kernel's resident memory. The table says up to which N every tab keeps >= 10 steps/s.

The browser runs on the same machine and takes its share of the two cores, so the numbers are a floor for a
classroom whose browsers run on the students' laptops.

    python benchmarks/bench_voila_users.py [--max-users 12] [--window 10]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import playwright.sync_api as playwright_api  # noqa: E402
from _servers import CHROMIUM_ARGS, NOTEBOOKS, chromium_path, voila_server  # noqa: E402

PRESET = "?activation=sigmoid&depth=20&play=1"
STEP = re.compile(r"step (\d+)")
TARGET = 10.0


def kernel_rss_mib(server_pid: int) -> list[float]:
    sizes = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent != server_pid or b"ipykernel" not in (stat.parent / "cmdline").read_bytes():
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        except (OSError, ValueError, IndexError):
            continue
    return sizes


def steps_of(page: playwright_api.Page) -> int | None:
    match = STEP.search(page.locator(".gw-app").first.inner_text())
    return int(match.group(1)) if match else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-users", type=int, default=12)
    parser.add_argument("--window", type=float, default=10.0, help="seconds over which steps/s is measured")
    parser.add_argument("--load-timeout", type=float, default=180.0, help="seconds a new page may take to load")
    args = parser.parse_args()
    server = voila_server(NOTEBOOKS / "dashboard.ipynb", log_name="voila-bench-users.log")
    rows = []
    try:
        server.wait_listening()
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            pages: list[playwright_api.Page] = []
            users = 0
            while users < args.max_users:
                users = min(args.max_users, max(1, users * 2) if users < 4 else users + 2)
                try:
                    while len(pages) < users:
                        page = browser.new_page(viewport={"width": 1280, "height": 800})
                        page.goto(server.url + PRESET, timeout=args.load_timeout * 1000)
                        page.wait_for_selector(".gw-app", timeout=args.load_timeout * 1000)
                        pages.append(page)
                except playwright_api.TimeoutError:
                    print(f"user {len(pages) + 1}: the page did not load within {args.load_timeout:g} s", flush=True)
                    break
                time.sleep(3)
                start = [steps_of(p) or 0 for p in pages]
                began = time.monotonic()
                time.sleep(args.window)
                elapsed = time.monotonic() - began
                rates = [((steps_of(p) or 0) - s) / elapsed for p, s in zip(pages, start, strict=True)]
                rss = kernel_rss_mib(server.process.pid)
                rows.append((users, min(rates), statistics.median(rates), statistics.median(rss) if rss else 0.0))
                print(f"{users} users: min {min(rates):.0f} steps/s, kernel RSS {rows[-1][3]:.0f} MiB", flush=True)
                if min(rates) < TARGET:
                    break
            browser.close()
    finally:
        server.stop()

    print(f"{'users':>5} {'min steps/s':>12} {'median steps/s':>15} {'RSS/kernel MiB':>15}  >= {TARGET:g} steps/s each")
    for users, low, median, rss in rows:
        print(f"{users:>5} {low:12.1f} {median:15.1f} {rss:15.0f}  {'yes' if low >= TARGET else 'no'}")
    sustained = [users for users, low, _, _ in rows if low >= TARGET]
    best = max(sustained) if sustained else 0
    print(f"sustained: {best} concurrent dashboard sessions at >= {TARGET:g} steps/s each")


if __name__ == "__main__":
    main()

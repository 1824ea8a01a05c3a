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
<= 0.5 s, while 19 others keep >= 10 steps/s. Then the presenter's ten links (:data:`PRESENTER_LINKS`), each
opened as soon as the last one's bars are up (target: each <= 3 s).

Everything runs once per priority setting (:data:`SETTINGS`: by default the trainer thread's niceness alone, then
the session priorities of :mod:`gradwidgets.runtime.priority`) and pool size, side by side in one run, each on a
fresh server, and one table compares them. On a shared machine the absolute numbers move with everyone else's
load; the columns, measured minutes apart, are what to compare.

Run: ``flock /tmp/gw-heavy.lock python benchmarks/bench_first_bars.py [query] [loads] [--busy 19]
[--priority thread session] [--pool 1 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _servers import CHROMIUM_ARGS, NOTEBOOKS, chromium_path, voila_server  # noqa: E402

from gradwidgets.dashboard.cli import DEFAULT_POOL_SIZE  # noqa: E402
from gradwidgets.dashboard.pool_priority import POOL_NICE_ENV  # noqa: E402
from gradwidgets.runtime.priority import SESSION_NICE_ENV, SHARED_SERVER_ENV, TRAINER_NICE_ENV  # noqa: E402

SETTINGS = {
    "none": {TRAINER_NICE_ENV: "0", SHARED_SERVER_ENV: "0", POOL_NICE_ENV: "0"},
    "thread": {SHARED_SERVER_ENV: "0", POOL_NICE_ENV: "0"},
    "session10": {SESSION_NICE_ENV: "10"},
    "session": {},
}
"""What each run of the server turns on: ``none`` no priority at all; ``thread`` the trainer thread's niceness
only (what issue 21 measured first: between kernels it does not count, each kernel being a session of its own);
``session`` the default: a training kernel's session (niceness 19; ``session10``: 10) and the waiting pool yield
too (gradwidgets.runtime.priority, gradwidgets.dashboard.pool_priority)."""

BARS_DRAWN = (
    "() => [...document.querySelectorAll('.bqplot .bargroup rect')].some(r => +r.getAttribute('height') > 1)"
)
REFILL_S = 15.0
PAGE_TIMEOUT_MS = 60_000
"""A page without bars by then counts as "> 60 s" (the table says so) and the run goes on."""


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

    def median_rate(self, start: float, end: float) -> float:
        rates = [s.rate(start, end) for s in self.students]
        return statistics.median(rates) if rates else float("nan")

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


PRESENTER_LINKS = (
    "activation=sigmoid&depth=20",
    "activation=relu&depth=20",
    "activation=relu&depth=20&init=kaiming",
    "activation=sigmoid&depth=20&norm=batch&play=1",
    "activation=relu&depth=60&norm=batch",
    "activation=relu&depth=60&norm=batch&residual=true",
    "kind=rnn&cell=lstm&activation=tanh&forget_bias=0&seq_len=50",
    "kind=rnn&cell=lstm&activation=tanh&forget_bias=3&seq_len=50",
    "activation=tanh&depth=30",
    "activation=sigmoid&depth=12",
)
"""Ten links a presenter opens one after the other (the Explain tab's script), each as soon as the last one's
bars are up: no pause for the pool to refill."""


@dataclass
class Phase:
    """What one server run measured."""

    setting: str
    pool: int
    painted: list[float] = field(default_factory=list)
    bars: list[float] = field(default_factory=list)
    toggles: list[float] = field(default_factory=list)
    presenter: list[float] = field(default_factory=list)
    slowest_rate: float = float("nan")
    median_rate: float = float("nan")


def open_page(browser: object, url: str, timeout_ms: int = PAGE_TIMEOUT_MS) -> tuple[object, object, float, float]:
    """A fresh browser context on ``url``: (context, page, seconds to the painted dashboard, to the first bars)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.route(r"re:^https?://(?!127\.0\.0\.1[:/])", lambda route: route.abort())
    started = time.monotonic()
    page.goto(url, wait_until="commit", timeout=timeout_ms)
    page.get_by_role("button", name="Play").first.wait_for(timeout=timeout_ms)
    painted = time.monotonic() - started
    page.wait_for_function(BARS_DRAWN, timeout=timeout_ms)
    return context, page, painted, time.monotonic() - started


def measure(setting: str, query: str, loads: int, busy: int, presenter: bool, pool: int) -> Phase:
    """One server with the priorities of ``setting`` (:data:`SETTINGS`) and a preheated pool of ``pool``: the late
    student's loads (with ``busy`` others playing), then the presenter's links."""
    import playwright.sync_api as playwright_api

    tag = f"{setting}, pool {pool}"
    phase = Phase(setting, pool)
    server = voila_server(NOTEBOOKS / "dashboard.ipynb", log_name=f"bench-first-bars-{setting}.log",
                          max_kernels=busy + pool + 4, env=SETTINGS[setting], pool_size=pool)
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
                try:
                    context, page, painted, bars = open_page(browser, server.url + (f"?{query}" if query else ""),
                                                             PAGE_TIMEOUT_MS)
                except playwright_api.TimeoutError:
                    phase.painted.append(math.inf)
                    phase.bars.append(math.inf)
                    print(f"[{tag}] load {load + 1}: no bars within {PAGE_TIMEOUT_MS / 1000:.0f} s", flush=True)
                    browser.contexts[-1].close()
                    time.sleep(REFILL_S)
                    continue
                phase.painted.append(painted)
                phase.bars.append(bars)
                print(f"[{tag}] load {load + 1}: dashboard {painted:.2f} s, first bars {bars:.2f} s", flush=True)
                if busy:
                    try:
                        phase.toggles.append(toggle_latency(page, PAGE_TIMEOUT_MS))
                    except playwright_api.TimeoutError:
                        phase.toggles.append(math.inf)
                    print(f"[{tag}]   toggle redrawn {phase.toggles[-1]:.2f} s", flush=True)
                page.goto("about:blank")  # type: ignore[attr-defined]  # the beacon shuts this kernel down
                context.close()  # type: ignore[attr-defined]
                time.sleep(REFILL_S)
            if crowd is not None:
                phase.slowest_rate = crowd.slowest_rate(measured_from, time.monotonic())
                phase.median_rate = crowd.median_rate(measured_from, time.monotonic())
            if presenter:
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                page.route(r"re:^https?://(?!127\.0\.0\.1[:/])", lambda route: route.abort())
                for number, link in enumerate(PRESENTER_LINKS, 1):
                    started = time.monotonic()
                    try:
                        page.goto(f"{server.url}?{link}", wait_until="commit", timeout=PAGE_TIMEOUT_MS)
                        page.wait_for_function(BARS_DRAWN, timeout=PAGE_TIMEOUT_MS)
                        phase.presenter.append(time.monotonic() - started)
                    except playwright_api.TimeoutError:
                        phase.presenter.append(math.inf)
                    print(f"[{tag}] presenter link {number}: first bars {phase.presenter[-1]:.2f} s", flush=True)
                context.close()
            browser.close()
    finally:
        if crowd is not None:
            crowd.close()
        server.stop()
    return phase


def _seconds(value: float) -> str:
    return f"> {PAGE_TIMEOUT_MS / 1000:.0f}" if math.isinf(value) else f"{value:.2f}"


def _summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{_seconds(statistics.median(values))} (max {_seconds(max(values))})"


def report(phases: list[Phase], query: str, loads: int, busy: int) -> str:
    rows = [
        ("late student: first bars, s", [_summary(p.bars) for p in phases], "<= 3"),
        ("late student: dashboard painted, s", [_summary(p.painted) for p in phases], ""),
        ("late student: toggle redrawn, s", [_summary(p.toggles) for p in phases], "<= 0.5"),
        ("busy students: slowest steps/s", [f"{p.slowest_rate:.1f}" for p in phases], ">= 10"),
        ("busy students: median steps/s", [f"{p.median_rate:.1f}" for p in phases], ""),
        ("presenter: 10 links, first bars, s", [_summary(p.presenter) for p in phases], "each <= 3"),
    ]
    names = [f"{p.setting} priority, pool {p.pool}" for p in phases]
    lines = [f"query {query!r}, {loads} late-student loads, {busy} students playing, "
             f"this machine ({ROOT.name}; load average {os.getloadavg()[0]:.1f} at the end)",
             f"| measure (median, max) | {' | '.join(names)} | target |",
             f"|---|{'---|' * len(phases)}---|"]
    lines += [f"| {label} | {' | '.join(values)} | {target} |" for label, values, target in rows]
    return "\n".join(lines)


def main(query: str, loads: int, busy: int = 0, settings: tuple[str, ...] = ("thread", "session"),
         presenter: bool = True, pools: tuple[int, ...] = (DEFAULT_POOL_SIZE,)) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a kill still stops the servers (finally blocks)
    phases = [measure(setting, query, loads, busy, presenter, pool) for setting in settings for pool in pools]
    print("\n" + report(phases, query, loads, busy))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("query", nargs="?", default="")
    parser.add_argument("loads", nargs="?", type=int, default=5)
    parser.add_argument("--busy", type=int, default=0, help="students already playing (browserless)")
    parser.add_argument("--priority", nargs="+", choices=sorted(SETTINGS), default=["thread", "session"],
                        help="the priorities of each run, side by side (default: thread, then session)")
    parser.add_argument("--pool", type=int, nargs="+", default=[DEFAULT_POOL_SIZE],
                        help="preheated pool sizes to run with each priority setting")
    parser.add_argument("--no-presenter", action="store_true", help="skip the presenter's ten links")
    arguments = parser.parse_args()
    main(arguments.query, arguments.loads, arguments.busy, tuple(arguments.priority), not arguments.no_presenter,
         tuple(arguments.pool))

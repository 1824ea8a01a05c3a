"""The dashboard in a real browser: one Chromium tab on a Voila page, recording page and console errors.

Shared by the browser tests (``test_dashboard_browser``, ``test_many_users``).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Iterator
from typing import Any

from _servers import CHROMIUM_ARGS, SCREENSHOTS, chromium_path

LOCAL_ONLY = re.compile(r"^https?://(?!127\.0\.0\.1[:/])")
"""Everything not served by our Voila (CDN fonts etc.) is refused: the test needs no network, like a classroom."""
BARS_AXIS = "(input → output)"  # "layer (...)", or "block (...)" for bars grouped by block
PAINT_TIMEOUT_MS = 120_000
KERNEL_ERROR = "[data-mime-type='application/vnd.jupyter.stderr'], .jp-OutputArea-output[data-mime-type*='error']"


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """Debian's Chromium driven by playwright (which never downloads a browser here)."""
    import playwright.sync_api as playwright_api

    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """One browser tab on the dashboard, recording page errors and console errors."""

    def __init__(
        self,
        browser: Any,
        server: Any,
        query: str = "",
        path: str = "",
        viewport: dict[str, int] | None = None,
        wait_for_bars: bool = True,
    ) -> None:
        self.page = browser.new_page(viewport=viewport or {"width": 1600, "height": 1000})
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("console", self._console)
        self.page.route(LOCAL_ONLY, lambda route: route.abort())
        started = time.monotonic()
        self.page.goto(server.url + (path or (f"?{query}" if query else "")), timeout=PAINT_TIMEOUT_MS)
        # Either the app paints, or the notebook failed in the kernel: fail fast with the server's log then.
        self.page.wait_for_selector(f".gw-dashboard, {KERNEL_ERROR}", timeout=PAINT_TIMEOUT_MS)
        if self.page.locator(KERNEL_ERROR).count():
            raise AssertionError(f"the dashboard notebook failed in the kernel:\n{server.log()[-6000:]}")
        if wait_for_bars:
            self.bars_figure().wait_for(timeout=PAINT_TIMEOUT_MS)
        self.first_paint = time.monotonic() - started

    def _console(self, message: Any) -> None:
        # Benign: requests we refused on purpose (CDN fonts) log "Failed to load resource", and a chart laid out
        # inside a hidden tab has zero size, so bqplot computes negative widths until the tab is shown. Anything
        # else (a NaN in an SVG attribute, a widget that failed to render) is a bug. One known bqplot 0.13 race:
        # a Bars state update that reaches the view before its OrdinalScale view has built the d3 band scale logs
        # "e.scale.bandwidth is not a function" (seen once in about ten runs, three dashboards loading at once on
        # two cores); the next frame draws, and every test that sees it checks the bars afterwards.
        benign = ("Failed to load resource", "A negative value is not valid", "e.scale.bandwidth is not a function")
        if message.type == "error" and not any(text in message.text for text in benign):
            self.console_errors.append(message.text[:500])

    def bars_figure(self, index: int = 0) -> Any:
        # The per-layer bar charts of the visible tab (hidden tabs hold charts too); titles vary, the x axis does not.
        axis = self.page.locator("text", has_text=BARS_AXIS)
        return self.page.locator(".bqplot:visible", has=axis).nth(index)

    def heights(self, index: int = 0) -> list[float]:
        """Pixel heights of the gradient bars of one chart (NaN stays NaN: the test wants to see it)."""
        texts = self.bars_figure(index).locator(".bargroup rect").evaluate_all(
            "rects => rects.map(r => r.getAttribute('height'))"
        )
        return [float(t) if t not in (None, "") else math.nan for t in texts]

    def bar_values(self, index: int = 0) -> list[float]:
        """The numbers the gradient bars of one chart stand for, as drawn: the data d3 bound to each bar (bqplot's
        Bars view binds one datum per bar, its ``y`` being the value sent by the kernel)."""
        values = self.bars_figure(index).locator(".bargroup rect.bar").evaluate_all(
            "rects => rects.map(r => (r.__data__ && typeof r.__data__.y === 'number') ? r.__data__.y : null)"
        )
        return [float(v) if v is not None else math.nan for v in values]

    def tick_labels(self, index: int = 0) -> list[str]:
        """The axis tick labels of one bars chart (the layer numbers, then the log axis's powers of ten)."""
        return self.bars_figure(index).locator(".tick text").all_text_contents()

    def wait_for_bars(self, index: int = 0, count: int | None = None, timeout: float = 60.0) -> list[float]:
        """Wait until the chart shows ``count`` (or any) bars, all finite, some taller than 1 px."""
        deadline = time.monotonic() + timeout
        heights: list[float] = []
        while time.monotonic() < deadline:
            heights = self.heights(index)
            ready = heights and (count is None or len(heights) == count)
            if ready and all(math.isfinite(h) and h >= 0 for h in heights) and max(heights) > 1:
                return heights
            self.page.wait_for_timeout(200)
        raise AssertionError(f"bars never became finite and visible: {heights}")

    def wait_for_change(self, before: list[float], index: int = 0, timeout: float = 30.0) -> list[float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.heights(index)
            if len(now) != len(before) or max(abs(a - b) for a, b in zip(now, before, strict=True)) > 0.5:
                return now
            self.page.wait_for_timeout(200)
        raise AssertionError("bars did not move")

    def control(self, kind: str, label: str) -> Any:
        """A Playground control by its label (``kind``: dropdown, slider)."""
        label_locator = self.page.locator(".widget-label", has_text=re.compile(f"^{label}$"))
        return self.page.locator(f".gw-app .widget-{kind}", has=label_locator).first

    def button(self, name: str) -> Any:
        """A visible button whose label contains ``name`` as a word (icons and glyphs around it vary)."""
        return self.page.get_by_role("button", name=re.compile(rf"(^|\W){re.escape(name)}(\W|$)")).first

    def text(self) -> str:
        return self.page.locator(".gw-dashboard").inner_text()

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def assert_no_errors(self) -> None:
        assert not self.page_errors, f"page errors: {self.page_errors[:5]}"
        assert not self.console_errors, f"console errors: {self.console_errors[:5]}"

    def close(self) -> None:
        """Leave the page as a person does: its ``beforeunload`` beacon asks Voila to shut this tab's kernel down
        (``page.close()`` alone tears the page down before the beacon goes out, and an active request route
        would hold the beacon back)."""
        try:
            self.page.unroute_all()
            self.page.goto("about:blank", timeout=10_000)
        finally:
            self.page.close()

"""The blocks-first view of a 12-block GPT in ``gradwidgets watch``, light and dark, at 1280x720 (issue 23).

    python benchmarks/screenshot_blocks.py [--out docs]   # docs/blocks-{light,dark}.png, blocks-heatmap-*.png

Trains a 12-block GPT (tests/_models.TinyGPT, tied head) for a few steps with a GradientLogger, serves the run file
with ``gradwidgets watch --theme light|dark`` and screenshots it in headless Chromium. Checks (exit code 1 when one
fails): one bar per block with finite heights, the block names ``h.0`` ... ``h.11`` on the bars' axis and on the
heatmap's rows. Every server is stopped by its process group id, also on failure. Look at the PNGs.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from _browser import headless_chromium  # noqa: E402
from _watch_shots import shoot_themes, watch_server  # noqa: E402

BLOCKS = ["embeddings", *(f"h.{i}" for i in range(12)), "final norm"]


def write_run(path: Path, steps: int = 40) -> None:
    import torch
    from _models import TinyGPT
    from torch import nn

    import gradwidgets as gw

    torch.manual_seed(0)
    vocab, context = 64, 16
    model = TinyGPT(vocab=vocab, width=64, heads=4, context=context, depth=12)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with gw.GradientLogger(model, path, every=1) as logger:
        for _ in range(steps):
            ids = torch.randint(0, vocab, (8, context))
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(ids)[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))
            loss.backward()
            logger.log(loss)
            optimizer.step()


def shoot(run: Path, theme: str, out: Path, logs: Path) -> list[str]:
    with watch_server(run, theme, logs) as server, headless_chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(server.url, timeout=180_000)
        page.wait_for_selector("g.bargroup rect.bar", state="attached", timeout=180_000)
        page.wait_for_timeout(3000)  # the heatmap and the loss follow the bars
        heights = page.eval_on_selector_all(
            "g.bargroup rect.bar", "rects => rects.map(r => parseFloat(r.getAttribute('height')))"
        )
        texts = page.eval_on_selector_all("svg text", "nodes => nodes.map(n => n.textContent)")
        bars = page.locator(".bqplot", has=page.locator("text", has_text="block (input → output)")).first
        bars.scroll_into_view_if_needed()
        page.evaluate("window.scrollBy(0, -40)")
        page.wait_for_timeout(500)
        page.screenshot(path=str(out))
        heatmap = page.locator(".bqplot", has=page.locator("text", has_text="over recent records")).first
        heatmap.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.screenshot(path=str(out.with_name(out.name.replace("blocks-", "blocks-heatmap-"))))
        page.close()
    problems: list[str] = []
    if len(heights) != len(BLOCKS) or not all(math.isfinite(h) and h >= 0 for h in heights):
        problems.append(f"{theme}: expected {len(BLOCKS)} finite bars, got {heights}")
    for name in BLOCKS:
        if texts.count(name) < 2:  # the bars' axis and the heatmap's rows
            problems.append(f"{theme}: {name!r} shows {texts.count(name)} time(s), expected on both charts")
    return problems


if __name__ == "__main__":
    sys.exit(shoot_themes(__doc__.splitlines()[0], "blocks", write_run, shoot))

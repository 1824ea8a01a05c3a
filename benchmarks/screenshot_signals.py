"""The instability panel of ``gradwidgets watch`` on a run that goes over the edge of stability, light and dark, at
1280x720 (issue 23).

    python benchmarks/screenshot_signals.py [--out docs]   # docs/signals-{light,dark}.png

Trains the instability benchmark's 6-block GPT with qk-layernorm warmed up to lr 1 over 300 steps (run.py's
"logit divergence lr 1": the edge rule warns at step 60, the loss spikes at 107) with a ``GradientLogger`` given the
optimizer and the warm-up scheduler, serves the run file with ``gradwidgets watch --theme light|dark`` and
screenshots the signals panel in headless Chromium. Checks (exit code 1 when one fails): the panel says "Unstable"
and names the edge of stability, the gradient-momentum chart draws one line per block with finite points. Every
server is stopped by its process group id, also on failure. Look at the PNGs.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks" / "instability"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from _browser import headless_chromium  # noqa: E402
from _watch_shots import shoot_themes, watch_server  # noqa: E402

STEPS = 120


def write_run(path: Path) -> None:
    import torch
    from run import RUNS, setup, train_steps

    import gradwidgets as gw

    torch.set_num_threads(1)
    spec = next(spec for spec in RUNS if spec.name == "logit divergence lr 1")
    run = setup(spec, seed=0)
    model, optimizer, scheduler = run
    with gw.GradientLogger(model, path, every=5, optimizer=optimizer, scheduler=scheduler) as logger:
        train_steps(spec, 0, STEPS, run, after_step=lambda step, loss: logger.log(loss))


def shoot(run: Path, theme: str, out: Path, logs: Path) -> list[str]:
    with watch_server(run, theme, logs) as server, headless_chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(server.url, timeout=180_000)
        chart = page.locator(".bqplot", has=page.locator("text", has_text="Gradient vs momentum")).first
        chart.wait_for(state="attached", timeout=180_000)
        page.wait_for_timeout(3000)  # every chart of the panel has drawn
        note = page.locator("text=Unstable at step").first
        note.scroll_into_view_if_needed()
        page.evaluate("window.scrollBy(0, -60)")
        page.wait_for_timeout(500)
        page.screenshot(path=str(out))
        message = note.evaluate("n => n.parentElement.textContent")
        lines = chart.evaluate(
            "fig => Array.from(fig.querySelectorAll('path.line')).map(p => p.getAttribute('d') || '')"
        )
        page.close()
    problems: list[str] = []
    if "edge of stability" not in message:
        problems.append(f"{theme}: the panel's warning does not name the edge of stability: {message[:200]!r}")
    drawn = [d for d in lines if d and "NaN" not in d and d.count("L") >= 5]
    if len(drawn) < 6:
        problems.append(f"{theme}: expected a finite cosine line per block (6), got {len(drawn)} of {len(lines)}")
    return problems


if __name__ == "__main__":
    sys.exit(shoot_themes(__doc__.splitlines()[0], "signals", write_run, shoot))

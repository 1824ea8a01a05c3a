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

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks" / "instability"))
sys.path.insert(0, str(ROOT))

from _browser import headless_chromium  # noqa: E402
from _servers import Server, free_port, server_environment  # noqa: E402

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
    port = free_port()
    command = [sys.executable, "-m", "gradwidgets", "watch", str(run), "--no-browser", "--port", str(port)]
    command += ["--theme", theme]
    server = Server(command, port, logs / f"watch-{theme}.log", env=server_environment({"PYTHONPATH": str(ROOT)}))
    problems: list[str] = []
    try:
        server.wait_listening(timeout=120)
        with headless_chromium() as browser:
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
        if "edge of stability" not in message:
            problems.append(f"{theme}: the panel's warning does not name the edge of stability: {message[:200]!r}")
        drawn = [d for d in lines if d and "NaN" not in d and d.count("L") >= 5]
        if len(drawn) < 6:
            problems.append(f"{theme}: expected a finite cosine line per block (6), got {len(drawn)} of {len(lines)}")
    finally:
        server.stop()
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for signals-light.png and signals-dark.png")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "edge.gwrun"
        write_run(run)
        for theme in ("light", "dark"):
            problems += shoot(run, theme, out / f"signals-{theme}.png", Path(folder))
            print(f"screenshot: {out / f'signals-{theme}.png'}")
    for problem in problems:
        print("FAIL:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

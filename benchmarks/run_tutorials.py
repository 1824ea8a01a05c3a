"""Execute every tutorial (``notebooks/0*.ipynb``) in a real kernel and keep the executed copies, so a reader on
GitHub sees every number without running anything; print each tutorial's wall time.

    PYTHONPATH=$PWD python3 benchmarks/run_tutorials.py            # all tutorials -> notebooks/executed/
    PYTHONPATH=$PWD python3 benchmarks/run_tutorials.py 01 04      # only those whose name starts with 01 or 04

Per tutorial: the wall time (what issue 5's 60 s limit is about) and the kernel's CPU time (user + system, with
the processes it waited for), which other load on the machine inflates much less.

The copies keep every printed number, table and static image; the widgets' live state is dropped (it would make
the files large, and GitHub cannot run a kernel to draw them), so a widget's cell shows a line naming it.
``tests/test_executed_copies.py`` fails when a copy's code differs from its tutorial: run this again after
editing a tutorial. Exits non-zero when a tutorial raises.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = NOTEBOOKS / "executed"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT_S = 600
TIME_LIMIT_S = 60.0
"""What each tutorial promises on 2 cores (issue 22)."""


def tutorials(prefixes: list[str]) -> list[Path]:
    found = sorted(NOTEBOOKS.glob("0*.ipynb"))
    if prefixes:
        found = [path for path in found if any(path.name.startswith(prefix) for prefix in prefixes)]
    return found


def drop_widget_state(notebook: Any) -> None:
    """Drop the live widget views and the saved widget state (large, and GitHub cannot draw them): a widget's
    output becomes one line naming it, instead of its unreadable ``repr``."""
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            data = output.get("data")
            if data is not None and WIDGET_VIEW in data:
                name = str(data.get("text/plain", "widget")).split("(", 1)[0] or "widget"
                output["data"] = {"text/plain": f"[{name}: a live widget, drawn when the notebook runs in Jupyter]"}


def kernel_cpu_seconds(client: NotebookClient) -> float:
    """CPU seconds the kernel (and the processes it waited for) used so far; NaN if it cannot be read.

    Why beside the wall time: on a shared machine the wall time grows with everyone else's load, the CPU time
    much less, so the two together say what an idle 2-core machine would take."""
    try:
        import psutil

        pid = client.km.provisioner.pid  # type: ignore[union-attr]
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)
    except Exception:  # noqa: BLE001 - a missing number, not a failed run
        return math.nan


def execute(path: Path) -> tuple[Any, float, float, str]:
    """Run one tutorial top to bottom from its own folder; returns the notebook, its wall time, the kernel's CPU
    time and an error line."""
    notebook = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
        store_widget_state=False,
    )
    cpu = [math.nan]

    def after_cell(**_: Any) -> None:
        cpu[0] = kernel_cpu_seconds(client)

    client.on_cell_executed = after_cell
    error = ""
    started = time.monotonic()
    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1][:200]
    elapsed = time.monotonic() - started
    drop_widget_state(notebook)
    return notebook, elapsed, cpu[0], error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefixes", nargs="*", help="run only tutorials whose file name starts with one of these")
    args = parser.parse_args()
    paths = tutorials(args.prefixes)
    if not paths:
        print(f"no tutorial matches {args.prefixes}", file=sys.stderr)
        return 2
    EXECUTED.mkdir(exist_ok=True)
    print(f"{'tutorial':<32} {'wall s':>7} {'CPU s':>7}  {'<= 60 s':<7}  result", flush=True)
    failed = slow = 0
    total = 0.0
    for path in paths:
        notebook, elapsed, cpu, error = execute(path)
        total += elapsed
        within = elapsed <= TIME_LIMIT_S
        slow += not within
        failed += bool(error)
        if not error:
            nbformat.write(notebook, str(EXECUTED / path.name))
        result = f"FAILED: {error}" if error else f"written to notebooks/executed/{path.name}"
        print(f"{path.stem:<32} {elapsed:7.1f} {cpu:7.1f}  {'yes' if within else 'NO':<7}  {result}", flush=True)
    cores = os.cpu_count()
    load = os.getloadavg()[0]  # other work on the machine slows every tutorial: say how busy it was
    print(
        f"{len(paths)} tutorials in {total:.0f} s on {cores} cores (load average {load:.1f}); "
        f"{slow} over {TIME_LIMIT_S:.0f} s, {failed} failed",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
